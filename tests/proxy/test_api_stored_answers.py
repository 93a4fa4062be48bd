"""A decision is written whole: the state it changes, its audit record (and webhook item) and the answer stored under
the request's idempotency key are one store transaction (`Store.apply_audited` with `CompleteIdempotent`); an
owner's approval is one transaction with its ``approval.approved`` record.

Before, the stored answer was a write of its own after the rest. When it failed: an escalation had created its
approval, and the retry under the same key created a second one; a denial stayed counted while its key was left in
progress (409 on every retry for 15 minutes). An approval was marked approved before its record was written, so a
refused record left an ``approval.reopened`` record behind with no ``approval.approved`` before it.

The failures are real ones of the SQLite store, inside its own transactions (`api_harness.unstorable_answers`,
`api_harness.refused_records`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from parent_proxy.sign_parts import message_hash
from policies.orders import approval_document
from policies.signing import sign_document
from tests.proxy.api_harness import (
    Harness,
    LoopThread,
    build_harness,
    new_session_key,
    provision,
    refused_records,
    stand_in_refusal,
    start_enclave,
    start_stand_in_enclave,
    stop_enclave,
    unstorable_answers,
)
from tests.proxy.harness_calls import ESCALATING
from tests.support.policies import BLOCKED, MERCHANT


@dataclass
class Running:
    h: Harness
    loop: LoopThread
    server: asyncio.Server


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    loop = LoopThread()
    harness = build_harness(tmp_path, loop)
    run = Running(harness, loop, start_enclave(loop, harness.socket))
    try:
        with harness.client:
            provision(harness)
            yield run
    finally:
        run.server.close()
        loop.stop()


@pytest.fixture
def h(running: Running) -> Harness:
    return running.h


def counted(h: Harness) -> tuple[int, int]:
    return len(h.store.recent_requests(h.wallet_id, 0.0)), len(h.store.recent_denials(h.wallet_id, 0.0))


def assert_store_unavailable(response: object) -> None:
    status, body = response.status_code, response.json()  # type: ignore[attr-defined]
    assert status == 503 and body["error"]["code"] == "store_unavailable", body


def test_an_escalation_whose_answer_cannot_be_stored_creates_nothing(h: Harness) -> None:
    tx = h.transfer(ESCALATING, MERCHANT)
    before = (counted(h), [*h.audit_events(), "transaction.failed"])  # the failure itself is recorded
    with unstorable_answers(h):
        assert_store_unavailable(h.sign(tx, key="escalate"))
    assert h.store.pending_approvals(h.wallet_id) == [] and (counted(h), h.audit_events()) == before
    retried = h.sign(tx, key="escalate")  # the key was freed: the retry is evaluated, once
    assert retried.status_code == 202, retried.text
    assert [a.approval_id for a in h.store.pending_approvals(h.wallet_id)] == [retried.json()["approval_id"]]
    assert h.sign(tx, key="escalate").json() == retried.json()  # and replayed from then on


def test_a_denial_whose_answer_cannot_be_stored_counts_nothing_and_frees_the_key(h: Harness) -> None:
    tx = h.transfer(1000, BLOCKED)
    before = (counted(h), [*h.audit_events(), "transaction.failed"])
    with unstorable_answers(h):
        assert_store_unavailable(h.sign(tx, key="denied"))
    assert (counted(h), h.audit_events()) == before
    retried = h.sign(tx, key="denied")
    assert retried.status_code == 403 and retried.json()["error"]["code"] == "policy_denied", retried.text
    requests, denials = before[0]
    assert counted(h) == (requests + 1, denials + 1) and h.audit_events()[-1] == "transaction.denied"
    assert h.sign(tx, key="denied").json() == retried.json()


def test_a_frozen_wallet_refusal_whose_answer_cannot_be_stored_writes_no_record(h: Harness) -> None:
    h.store.set_frozen(h.wallet_id, True, "test freeze")
    tx = h.transfer(1000, MERCHANT)
    before = [*h.audit_events(), "transaction.failed"]
    with unstorable_answers(h):
        assert_store_unavailable(h.sign(tx, key="frozen"))
    assert h.audit_events() == before
    retried = h.sign(tx, key="frozen")
    assert retried.status_code == 403 and retried.json()["error"]["code"] == "wallet_frozen", retried.text
    assert h.audit_events() == [*before, "transaction.refused"]


def test_an_enclave_refusal_whose_answer_cannot_be_stored_counts_nothing(running: Running) -> None:
    h = running.h
    stop_enclave(h, running.loop, running.server)  # an enclave that refuses every signing request
    session = new_session_key()
    running.server = start_stand_in_enclave(running.loop, h.socket, session, stand_in_refusal(session, h.wallet_id))
    h.services.relay._loaded[h.wallet_id] = 1  # the refusal answers the signing request itself
    tx = h.transfer(1000, MERCHANT)
    with unstorable_answers(h):
        assert_store_unavailable(h.sign(tx, key="refused"))
    denials = counted(h)[1]
    assert "transaction.refused" not in h.audit_events() and h.spent() == 0
    retried = h.sign(tx, key="refused")
    assert retried.status_code == 403 and retried.json()["error"]["code"] == "enclave_refused", retried.text
    assert counted(h)[1] == denials + 1 and h.audit_events()[-1] == "transaction.refused"
    assert h.sign(tx, key="refused").json() == retried.json()


def test_an_approval_whose_record_is_refused_stays_pending_and_unchanged(h: Harness) -> None:
    tx = h.transfer(ESCALATING, MERCHANT)
    escalated = h.sign(tx)
    assert escalated.status_code == 202, escalated.text
    approval_id = escalated.json()["approval_id"]
    document = approval_document(h.wallet_id, message_hash(tx), int(time.time()) + 600)
    body = {"envelope": sign_document("approval", document, h.owner)}
    path = f"/v1/wallets/{h.wallet_id}/approvals/{approval_id}/approve"
    before = h.audit_events()
    with refused_records(h, "approval.approved"):
        refused = h.owner_call("POST", path, body)
    assert refused.status_code >= 400 and "signed_transaction" not in refused.text
    approval = h.store.get_approval(approval_id)
    assert (approval.status, approval.decision, approval.decided_at) == ("pending", None, None)
    assert h.audit_events() == before and h.spent() == 0  # no approval.approved, no approval.reopened
    signed = h.owner_call("POST", path, body)
    assert signed.status_code == 200 and signed.json()["transaction"]["status"] == "signed", signed.text
    assert h.audit_events()[len(before)] == "approval.approved"
