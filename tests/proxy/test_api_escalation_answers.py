"""The agent learns the owner's decision on its escalated request from its own idempotency key: the transaction that
writes the decision replaces the 202 stored under the key (`parent_proxy.escalation_answers`), so the agent's retry
with the same key and body answers the signed transaction (200, with the broadcast's outcome for ``submit``), the
enclave's refusal of the approved request, or 403 ``rejected_by_owner``. Only that very 202 is replaced: a key that
holds anything else (taken again after its day, another request) is never touched.

Before (the agent-side review of the twentieth session, r2_idempotency.py (e)), the retry replayed the 202 for 24
hours whatever the owner decided, and no agent route told the outcome or handed out the signed transaction.
Real proxy, store (SQLite, and DynamoDB on moto for the two decisions) and enclave.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from solders.message import Message
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from parent_proxy.services import canonical
from parent_proxy.sign_parts import message_hash
from parent_proxy.submission import UNRECORDED
from policies.orders import approval_document
from policies.signing import sign_document
from tests.proxy.api_harness import (
    Harness,
    LoopThread,
    build_harness,
    new_session_key,
    provision,
    running_harness,
    stand_in_refusal,
    start_enclave,
    start_stand_in_enclave,
    stop_enclave,
    svm,
)
from tests.proxy.conftest import provisioned_on_store
from tests.proxy.harness_calls import ESCALATING
from tests.support.policies import MERCHANT

DAY = 86_400


@pytest.fixture(params=["sqlite", "dynamodb"])
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    yield from provisioned_on_store(request, tmp_path)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Harness, LoopThread, list[Any]]]:
    """A SQLite harness whose enclave a test may stop and replace (the list holds the running server)."""
    loop = LoopThread()
    harness = build_harness(tmp_path, loop)
    servers = [start_enclave(loop, harness.socket)]
    try:
        with harness.client:
            provision(harness)
            yield harness, loop, servers
    finally:
        for server in servers:
            server.close()
        loop.stop()


def escalated(h: Harness, key: str, tx: bytes | None = None, **extra: Any) -> tuple[bytes, dict[str, Any]]:
    """Send ``tx`` (by default a transfer the proxy escalates) under ``key``: the transaction and its 202 body."""
    tx = h.transfer(ESCALATING, MERCHANT) if tx is None else tx
    answer = h.sign(tx, key=key, **extra)
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return tx, body


def approve(h: Harness, approval_id: str, tx: bytes) -> Any:
    document = approval_document(h.wallet_id, message_hash(tx), int(time.time()) + 600)
    path = f"/v1/wallets/{h.wallet_id}/approvals/{approval_id}/approve"
    return h.owner_call("POST", path, {"envelope": sign_document("approval", document, h.owner)})


def reject(h: Harness, approval_id: str) -> Any:
    return h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/approvals/{approval_id}/reject")


def replayed(h: Harness, tx: bytes, key: str, **extra: Any) -> Any:
    """The agent's retry: asserted to be a replay of the stored answer (nothing evaluated again)."""
    answer = h.sign(tx, key=key, **extra)
    assert answer.headers.get("Idempotent-Replayed") == "true", answer.text
    return answer


def test_an_approved_request_replays_as_the_signed_transaction(h: Harness) -> None:
    tx, pending = escalated(h, "k")
    assert replayed(h, tx, "k").json() == pending  # while the owner decides: the 202
    approved = approve(h, pending["approval_id"], tx)
    assert approved.status_code == 200, approved.text
    signed = approved.json()["transaction"]
    for _ in range(2):
        again = replayed(h, tx, "k")
        assert (again.status_code, again.json()) == (200, signed)
    assert signed["status"] == "signed" and signed["submission"] is None
    assert h.audit_events().count("transaction.signed") == 1  # a replay, never a second signing
    other = h.sign(h.transfer(ESCALATING + 1, MERCHANT), key="k")  # another request under the key: as before
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"


def test_a_rejected_request_replays_as_403_rejected_by_owner(h: Harness) -> None:
    tx, pending = escalated(h, "k")
    rejected = reject(h, pending["approval_id"])
    assert rejected.status_code == 200, rejected.text
    again = replayed(h, tx, "k")
    assert again.status_code == 403, again.text
    error = again.json()["error"]
    assert error["code"] == "rejected_by_owner"
    assert error["message"] == f"the owner rejected approval {pending['approval_id']}; nothing was signed"
    assert h.audit_events()[-1] == "approval.rejected"  # the replacement wrote no record of its own
    assert reject(h, pending["approval_id"]).status_code == 409  # decided once
    assert replayed(h, tx, "k").json() == again.json()


def test_a_submitted_approval_replays_the_broadcasts_outcome(tmp_path: Path) -> None:
    for h in running_harness(tmp_path):
        provision(h)
        svm(h).airdrop(h.agent, 5 * 10**9)
        ix = transfer(TransferParams(from_pubkey=h.agent, to_pubkey=MERCHANT, lamports=ESCALATING))
        tx = bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], h.agent, svm(h).latest_blockhash())))
        _, pending = escalated(h, "k", tx, submit=True)
        approved = approve(h, pending["approval_id"], tx)
        assert approved.status_code == 200, approved.text
        signed = approved.json()["transaction"]
        assert signed["submission"]["submitted"] is True, signed
        again = replayed(h, tx, "k", submit=True)
        assert (again.status_code, again.json()) == (200, signed)  # the outcome, not `UNRECORDED`
        assert h.audit_events().count("transaction.submitted") == 1


def test_a_lost_broadcast_outcome_replays_the_signature(tmp_path: Path) -> None:
    """The broadcast's outcome cannot be stored: the agent's key keeps the signed answer stored with the signature
    (`UNRECORDED`), as for a direct signature: never the 202 again, never a second signing."""
    for h in running_harness(tmp_path):
        provision(h)
        tx, pending = escalated(h, "k", submit=True)
        h.store.failing = {"replace_idempotent"}
        approved = approve(h, pending["approval_id"], tx)
        h.store.failing = set()
        assert approved.status_code == 200, approved.text
        again = replayed(h, tx, "k", submit=True)
        assert again.json() == {**approved.json()["transaction"], "submission": UNRECORDED}


def test_an_enclave_refusal_of_the_approved_request_is_the_agents_answer(
    live: tuple[Harness, LoopThread, list[Any]],
) -> None:
    h, loop, servers = live
    tx, pending = escalated(h, "k")
    stop_enclave(h, loop, servers[0])
    session = new_session_key()
    servers.append(start_stand_in_enclave(loop, h.socket, session, stand_in_refusal(session, h.wallet_id)))
    h.services.relay._loaded[h.wallet_id] = 1  # the refusal answers the signing request itself
    refused = approve(h, pending["approval_id"], tx)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "enclave_refused", refused.text
    again = replayed(h, tx, "k")
    assert (again.status_code, again.json()) == (403, refused.json())


def test_a_failed_signing_keeps_the_202_until_the_owner_approves_again(
    live: tuple[Harness, LoopThread, list[Any]],
) -> None:
    """The enclave is down: the approval is pending again (nothing decided), and so is the agent's answer."""
    h, loop, servers = live
    tx, pending = escalated(h, "k")
    stop_enclave(h, loop, servers[0])
    failed = approve(h, pending["approval_id"], tx)
    assert failed.status_code == 503, failed.text
    assert h.audit_events()[-1] == "approval.reopened"
    assert replayed(h, tx, "k").json() == pending
    servers.append(start_enclave(loop, h.socket))
    h.services.relay.forget()
    approved = approve(h, pending["approval_id"], tx)
    assert approved.status_code == 200, approved.text
    assert replayed(h, tx, "k").json() == approved.json()["transaction"]


def expire(h: Harness, key: str) -> None:
    """Make the agent key ``key``'s record two days old: expired, as after its day (SQLite)."""
    conn = h.store.inner._conn()
    conn.execute("UPDATE idempotency SET created_at = created_at - ? WHERE key = ?", (2 * DAY, f"agent:{key}"))


def test_a_key_taken_again_after_its_day_is_never_overwritten(tmp_path: Path) -> None:
    for h in running_harness(tmp_path):
        provision(h)
        # Another request under the key after its day: its own answer stays, whatever the owner decides.
        tx, first = escalated(h, "k")
        expire(h, "k")
        small = h.transfer(1000, MERCHANT)
        own = h.sign(small, key="k")
        assert own.status_code == 200, own.text
        assert approve(h, first["approval_id"], tx).status_code == 200
        assert replayed(h, small, "k").json() == own.json()
        assert h.sign(tx, key="k").status_code == 409  # the key is the other request's

        # The same request under the key after its day, its approval still open: it joins that approval (the same
        # 202, `sign_outcomes.join`), which the approval's decision replaces.
        tx, first = escalated(h, "again")
        expire(h, "again")
        _, second = escalated(h, "again", tx)
        assert second == first
        assert reject(h, first["approval_id"]).status_code == 200
        assert replayed(h, tx, "again").json()["error"]["code"] == "rejected_by_owner"


def test_an_approval_whose_stored_request_names_no_digest_keeps_the_202(tmp_path: Path) -> None:
    """An approval whose stored request does not name the agent's digest (none the proxy writes: the stored request
    has held ``request_sha256`` and the agent's ``request`` since the first version) is decided as before and its
    agent's 202 stays; an approval that names it, decided alongside, replaces its agent's."""
    for h in running_harness(tmp_path):
        provision(h)
        tx_a, bare = escalated(h, "bare")
        tx_b, named = escalated(h, "named", h.transfer(ESCALATING + 1, MERCHANT))
        conn = h.store.inner._conn()
        (payload,) = conn.execute("SELECT request_payload FROM approvals WHERE approval_id = ?",
                                  (bare["approval_id"],)).fetchone()  # fmt: skip
        stored = json.loads(payload)
        del stored["request_sha256"]
        conn.execute("UPDATE approvals SET request_payload = ? WHERE approval_id = ?",
                     (canonical(stored), bare["approval_id"]))  # fmt: skip
        assert approve(h, bare["approval_id"], tx_a).status_code == 200
        assert approve(h, named["approval_id"], tx_b).status_code == 200
        assert replayed(h, tx_a, "bare").json() == bare
        assert replayed(h, tx_b, "named").json()["status"] == "signed"
