"""A sign request naming a lookup table the wallet's policy does not pin is denied without reading the chain.

Before, `api_agent.sign_transaction` read every named table from the chain right after authentication, before any
policy check, although the policy denies a table it does not pin whatever the chain holds: an agent could make the
proxy download up to 32 accounts of its choice (10 MiB each) per request. Now such a request gets the policy's
denial as before (403 ``policy_denied``, rule ``decode``, counted, audited, stored under its key) and the chain is
not asked; a pinned table is still read (with a ``dataSlice``) and resolves end to end.

Nor is a pinned table read for a wallet the checks refuse before any decision: before, a frozen wallet's agent made
the proxy read the tables its policy pins (``getMultipleAccounts``, up to 32 accounts) at every request with a fresh
key, only to be refused 403 ``wallet_frozen``; now the same refusal, record and stored answer come without the read.

The proxy runs with its real RPC adapter (`RpcChain`) in front of a Solana node stand-in over the harness's LiteSVM
(`tests.proxy.rpc_node`), which records every request it gets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from solders.account import Account
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer

from parent_proxy import api_agent
from parent_proxy.chain import ADDRESS_LOOKUP_TABLE_PROGRAM, LOOKUP_TABLE_SLICE_BYTES, RpcChain
from parent_proxy.sign_flow import SignFlow, SignRequest
from tests.proxy.api_harness import Harness, provision, running_harness, svm
from tests.proxy.harness_calls import freeze_order
from tests.proxy.rpc_node import node
from tests.support.builders import unsigned_tx
from tests.support.chain import install_lookup_table
from tests.support.policies import MERCHANT


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from running_harness(tmp_path, attestation="none")


def on_rpc(h: Harness) -> list[dict[str, Any]]:
    """From now on the proxy reads the chain through `RpcChain` from a node stand-in over the harness's chain; the
    request bodies that node gets."""
    seen: list[dict[str, Any]] = []
    h.services.chain = RpcChain(node(svm(h), seen), "http://rpc.invalid/")
    return seen


def table_on_chain(h: Harness, addresses: list[Pubkey]) -> Pubkey:
    table = Pubkey.new_unique()
    install_lookup_table(svm(h), table, addresses)
    return table


def v0_transfer(h: Harness, lamports: int, table: Pubkey) -> bytes:
    """An unsigned v0 transfer to the merchant, whose address is loaded through ``table`` (holding the merchant)."""
    ixs = [
        set_compute_unit_price(1_000),
        set_compute_unit_limit(50_000),
        transfer(TransferParams(from_pubkey=h.agent, to_pubkey=MERCHANT, lamports=lamports)),
    ]
    message = MessageV0.try_compile(h.agent, ixs, [AddressLookupTableAccount(table, [MERCHANT])], Hash.new_unique())
    assert len(message.address_table_lookups) == 1
    return unsigned_tx(message)


def pinned(*tables: Pubkey) -> list[dict[str, Any]]:
    return [{"address": str(t), "addresses": [str(MERCHANT)]} for t in tables]


def not_pinned(table: Pubkey) -> dict[str, Any]:
    return {"verdict": "deny", "rule": "decode", "message": f"lookup table {table} is not pinned by the owner's policy"}


def test_an_unpinned_table_is_denied_without_a_chain_read(h: Harness) -> None:
    """A real lookup table (and a 10 MiB account, as an agent may name any): denied as the policy's cross-check
    denies an unpinned table, counted and audited, and the RPC never asked; the denial replays."""
    provision(h)  # the example policy pins no lookup table
    table = table_on_chain(h, [MERCHANT])
    huge = Pubkey.new_unique()
    svm(h).set_account(huge, Account(10**9, bytes(10 * 1024 * 1024), ADDRESS_LOOKUP_TABLE_PROGRAM, False, 0))
    seen = on_rpc(h)
    tx = v0_transfer(h, 1000, table)

    denied = h.sign(tx, key="u-1", lookup_tables=[str(table), str(huge)])
    assert denied.status_code == 403, denied.text
    assert denied.json()["error"]["code"] == "policy_denied"
    assert denied.json()["error"]["reasons"] == [not_pinned(table)]
    assert seen == []
    assert h.audit_events().count("transaction.denied") == 1
    assert h.services.store.count_denials(h.wallet_id, 0) == 1

    replay = h.sign(tx, key="u-1", lookup_tables=[str(table), str(huge)])
    assert replay.status_code == 403 and replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json() == denied.json() and seen == []


def test_one_unpinned_table_among_pinned_ones_is_denied_without_a_chain_read(h: Harness) -> None:
    table, stranger = table_on_chain(h, [MERCHANT]), table_on_chain(h, [MERCHANT])
    provision(h, h.policy(1, lookup_tables=pinned(table)))
    seen = on_rpc(h)
    denied = h.sign(h.transfer(1000, MERCHANT), lookup_tables=[str(table), str(stranger)])
    assert denied.status_code == 403 and denied.json()["error"]["reasons"] == [not_pinned(stranger)], denied.text
    assert seen == []


def test_without_a_policy_nothing_is_read(h: Harness) -> None:
    """No policy pins anything: refused as a wallet without a policy is (403 ``no_policy``), the chain not read."""
    created = h.owner_call("POST", "/v1/wallets", {"wallet_id": h.wallet_id, "owner_public_key": str(h.owner_pub)})
    h.agent = Pubkey.from_string(created.json()["agent_public_key"])
    issued = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/tokens")
    h.token, h.token_id = issued.json()["token"], issued.json()["token_id"]
    seen = on_rpc(h)
    refused = h.sign(h.transfer(1000, MERCHANT), lookup_tables=[str(Pubkey.new_unique())])
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "no_policy", refused.text
    assert seen == []


def test_a_pinned_table_is_read_with_a_slice_and_resolves_end_to_end(h: Harness) -> None:
    """A v0 transfer to the merchant through a pinned table: read from the RPC (one sliced getMultipleAccounts),
    cross-checked, signed by the enclave."""
    table = table_on_chain(h, [MERCHANT])
    provision(h, h.policy(1, lookup_tables=pinned(table)))
    seen = on_rpc(h)
    signed = h.sign(v0_transfer(h, 1000, table), lookup_tables=[str(table)])
    assert signed.status_code == 200 and signed.json()["status"] == "signed", signed.text
    assert [body["method"] for body in seen] == ["getMultipleAccounts"]
    assert seen[0]["params"][0] == [str(table)]
    assert seen[0]["params"][1]["dataSlice"] == {"offset": 0, "length": LOOKUP_TABLE_SLICE_BYTES}


def test_a_pinned_table_the_chain_lacks_is_still_503(h: Harness) -> None:
    """Pinned, so read: the chain has no such account, and that is 503 ``chain_unavailable`` as before."""
    missing = Pubkey.new_unique()
    provision(h, h.policy(1, lookup_tables=pinned(missing)))
    seen = on_rpc(h)
    response = h.sign(h.transfer(1000, MERCHANT), lookup_tables=[str(missing)])
    assert response.status_code == 503 and response.json()["error"]["code"] == "chain_unavailable", response.text
    assert len(seen) == 1


def refusal_record(h: Harness) -> dict[str, Any]:
    record = h.store.audit_records(0, 10_000)[-1]
    assert record.event_type == "transaction.refused"
    payload: dict[str, Any] = json.loads(record.payload)
    return payload


def test_a_frozen_wallet_reads_no_pinned_table(h: Harness) -> None:
    """Frozen by its owner: refused as a frozen wallet is without tables (403 ``wallet_frozen``, the same record,
    no denial counted, the answer stored under the key and replayed), and the RPC is never asked."""
    table = table_on_chain(h, [MERCHANT])
    provision(h, h.policy(1, lookup_tables=pinned(table)))
    assert h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/freeze", freeze_order(h, 1)).status_code == 200
    seen = on_rpc(h)
    without = h.sign(h.transfer(1000, MERCHANT), key="f-0")  # no tables: straight to the checks, as before
    assert without.status_code == 403 and without.json()["error"]["code"] == "wallet_frozen", without.text
    expected = refusal_record(h)

    txs = [v0_transfer(h, 1000 + i, table) for i in range(3)]
    for i, tx in enumerate(txs):
        refused = h.sign(tx, key=f"f-{i + 1}", lookup_tables=[str(table)])
        assert (refused.status_code, refused.json()) == (without.status_code, without.json()), refused.text
        got = refusal_record(h)
        assert {k: v for k, v in got.items() if k not in ("request_id", "request_sha256")} == {
            k: v for k, v in expected.items() if k not in ("request_id", "request_sha256")
        }
    assert seen == []
    assert h.services.store.count_denials(h.wallet_id, 0) == 0
    replay = h.sign(txs[1], key="f-2", lookup_tables=[str(table)])
    assert replay.headers.get("Idempotent-Replayed") == "true" and replay.json() == without.json()
    assert seen == []


def test_a_wallet_unfrozen_before_the_checks_has_its_tables_read_and_is_signed(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frozen when the request comes, unfrozen before the checks run: the checks stop before writing anything, the
    pinned table is read then, and the request is decided with it (signed), once, under its key."""
    table = table_on_chain(h, [MERCHANT])
    provision(h, h.policy(1, lookup_tables=pinned(table)))
    h.store.set_frozen(h.wallet_id, True, "test")
    seen = on_rpc(h)
    real = api_agent.before_chain_read
    plans: list[api_agent.ChainReadPlan] = []

    def then_unfrozen(flow: SignFlow, wallet_id: str, request: SignRequest) -> api_agent.ChainReadPlan:
        plans.append(real(flow, wallet_id, request))
        h.store.set_frozen(wallet_id, False, None)  # the owner's unfreeze lands in between
        return plans[-1]

    monkeypatch.setattr(api_agent, "before_chain_read", then_unfrozen)
    before = h.audit_events()
    tx = v0_transfer(h, 1000, table)
    signed = h.sign(tx, key="u-1", lookup_tables=[str(table)])
    assert signed.status_code == 200 and signed.json()["status"] == "signed", signed.text
    assert [p.refused for p in plans] == [True, False]
    assert [body["method"] for body in seen] == ["getMultipleAccounts"]
    assert "transaction.refused" not in h.audit_events()[len(before) :]
    replay = h.sign(tx, key="u-1", lookup_tables=[str(table)])
    assert replay.headers.get("Idempotent-Replayed") == "true" and replay.json() == signed.json()
