"""A request that named ``lookup_tables`` replays its stored answer without reading the chain.

Before, `api_agent.sign_transaction` read the tables from the chain before `SignFlow.prepare` looked the idempotency
key up, so while the RPC failed (or once a table was closed) a completed request could not be replayed: the retry
got 503 ``chain_unavailable`` instead of its stored answer. Likewise an owner retrying an approval that went through
got 503 instead of the 409 of a decided approval (`parent_proxy.approvals`, step 0).

The tables are real accounts of the harness's LiteSVM chain, read by the real adapter; the RPC failure is a double at
the chain seam (`Chain.lookup_tables` raising `ChainError`, as `RpcChain` does on a transport error).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey

from parent_proxy.chain import ChainError
from parent_proxy.sign_parts import message_hash
from policies.orders import approval_document
from policies.signing import sign_document
from tests.proxy.api_harness import LAMPORTS_PER_SOL, Harness, pending_approval_ids, provision, running_harness, svm
from tests.support.chain import install_lookup_table
from tests.support.policies import MERCHANT


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from running_harness(tmp_path, attestation="none")


def table_wallet(h: Harness) -> str:
    """A wallet whose policy pins a lookup table that exists on the chain; its address."""
    table = Pubkey.new_unique()
    install_lookup_table(svm(h), table, [MERCHANT])
    provision(h, h.policy(1, lookup_tables=[{"address": str(table), "addresses": [str(MERCHANT)]}]))
    return str(table)


def rpc_down(h: Harness, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """From now on every lookup-table read fails as an unreachable RPC does; the reads attempted."""
    calls: list[Any] = []

    async def down(addresses: Any) -> Any:
        calls.append(addresses)
        raise ChainError("rpc unavailable")

    monkeypatch.setattr(h.services.chain, "lookup_tables", down)
    return calls


def code(response: Any) -> str:
    return str(response.json()["error"]["code"])


def test_a_completed_request_replays_while_the_chain_is_down(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    table = table_wallet(h)
    tx = h.transfer(1000, MERCHANT)
    first = h.sign(tx, key="k-1", lookup_tables=[table])
    assert first.status_code == 200, first.text
    reads = rpc_down(h, monkeypatch)

    replay = h.sign(tx, key="k-1", lookup_tables=[table])
    assert replay.status_code == 200 and replay.headers.get("Idempotent-Replayed") == "true", replay.text
    assert replay.json() == first.json() and reads == []  # the stored answer, without a chain read

    other = h.sign(h.transfer(2000, MERCHANT), key="k-1", lookup_tables=[table])  # another request, same key
    assert other.status_code == 409 and code(other) == "idempotency_key_reused"
    no_tables = h.sign(tx, key="k-1")  # the table addresses are part of the request's digest
    assert no_tables.status_code == 409 and code(no_tables) == "idempotency_key_reused"
    assert reads == []

    fresh = h.sign(tx, key="k-2", lookup_tables=[table])  # a new key still needs the tables
    assert fresh.status_code == 503 and code(fresh) == "chain_unavailable" and len(reads) == 1
    assert "Idempotent-Replayed" not in fresh.headers
    assert h.audit_events().count("transaction.signed") == 1


def test_a_denial_replays_while_the_chain_is_down(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    table = table_wallet(h)
    tx = h.transfer(1000, Pubkey.new_unique())  # not an allowed destination
    first = h.sign(tx, key="d-1", lookup_tables=[table])
    assert first.status_code == 403, first.text
    reads = rpc_down(h, monkeypatch)
    replay = h.sign(tx, key="d-1", lookup_tables=[table])
    assert replay.status_code == 403 and replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json() == first.json() and reads == []


def test_a_decided_approval_is_409_while_the_chain_is_down(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    table = table_wallet(h)
    tx = h.transfer(2 * LAMPORTS_PER_SOL, MERCHANT)  # above the example's automatic 1 SOL: escalated
    escalated = h.sign(tx, lookup_tables=[table])
    assert escalated.status_code == 202, escalated.text
    approval_id = escalated.json()["approval_id"]
    document = approval_document(h.wallet_id, message_hash(tx), int(time.time()) + 600)
    path = f"/v1/wallets/{h.wallet_id}/approvals/{approval_id}/approve"

    def approve() -> Any:
        return h.owner_call("POST", path, {"envelope": sign_document("approval", document, h.owner)})

    reads = rpc_down(h, monkeypatch)
    down = approve()  # pending, the chain down: 503, and the approval stays pending
    assert down.status_code == 503 and code(down) == "chain_unavailable" and len(reads) == 1
    assert pending_approval_ids(h) == [approval_id]
    monkeypatch.undo()
    approved = approve()
    assert approved.status_code == 200 and approved.json()["status"] == "signed", approved.text
    reads = rpc_down(h, monkeypatch)
    again = approve()  # decided: 409 before any chain read, as when the chain is up
    assert again.status_code == 409 and code(again) == "conflict" and reads == []
