"""The enclave's authoritative check escalates a request the proxy's own check allowed: the escalation it is.

This happens when the enclave's per-boot counters are above the proxy's store: here the store forgets what was
signed (the spend rows of a self-host restore of an older state backup), while the real enclave's ledger
remembers. The request then waits for the owner exactly as one the proxy escalates itself: the reservation is
released, a pending approval is created with its ``transaction.escalated`` record (holding the enclave's receipt)
and ``approval.pending`` webhook, the answer is 202 with the enclave's decision, and no denial is counted (the
enclave counts none either). The owner's approval then has the enclave sign it. With the owner's queue full: 429
``rate_limited``, as for the proxy's own escalation. An enclave DENY still counts a denial (403 ``enclave_refused``).

Before: every unsigned enclave answer was a refusal: 403 ``enclave_refused``, a denial counted (bringing the
denial-burst freeze closer), and nothing for the owner to approve.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parent_proxy import sign_outcomes
from parent_proxy.audit_receipts import verify_audit_receipts
from parent_proxy.sign_parts import message_hash
from policies.orders import approval_document
from policies.signing import sign_document
from tests.proxy.api_harness import (
    LAMPORTS_PER_SOL,
    Harness,
    pending_approval_ids,
    provision,
    running_harness,
    spy_calls,
)
from tests.proxy.harness_calls import pending_reservations, records
from tests.support.policies import MERCHANT

HALF_SOL = LAMPORTS_PER_SOL // 2
"""Within every automatic threshold of the proxy's (forgetful) store; above the enclave's daily 5 SOL."""


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    for harness in running_harness(tmp_path):
        provision(harness)
        secret = base64.b64encode(b"s" * 32).decode()
        url = {"url": "https://owner.example/hook", "secret": secret}
        configured = harness.owner_call("PUT", f"/v1/wallets/{harness.wallet_id}/webhook", url)
        assert configured.status_code == 204, configured.text
        yield harness


def forget(h: Harness, *tables: str) -> None:
    """The store loses these rows (a restored older backup); the enclave's per-boot ledger keeps its own."""
    conn = h.store.inner._conn()
    for table in tables:
        assert table in ("spend", "reservations", "wallet_events")
        conn.execute(f"DELETE FROM {table}")  # noqa: S608 - a fixed table name
    conn.commit()


def enclave_ahead(h: Harness) -> None:
    """The daily automatic 5 SOL signed by the enclave, then forgotten by the store."""
    for i in range(5):
        signed = h.sign(h.transfer(LAMPORTS_PER_SOL - i, MERCHANT))
        assert signed.status_code == 200, signed.text
    forget(h, "spend", "reservations")
    assert h.spent() == 0


def denials(h: Harness) -> int:
    count: int = h.store.count_denials(h.wallet_id, 0.0)
    return count


def queued(h: Harness, event_type: str) -> list[dict[str, Any]]:
    rows = h.store.inner._conn().execute("SELECT event_type, body FROM outbox ORDER BY created_at").fetchall()
    return [json.loads(body)["data"] for kind, body in rows if kind == event_type]


def approve(h: Harness, approval_id: str, tx: bytes) -> Any:
    document = approval_document(h.wallet_id, message_hash(tx), int(time.time()) + 600)
    path = f"/v1/wallets/{h.wallet_id}/approvals/{approval_id}/approve"
    return h.owner_call("POST", path, {"envelope": sign_document("approval", document, h.owner)})


def test_an_enclave_escalation_waits_for_the_owner_and_is_no_denial(h: Harness) -> None:
    enclave_ahead(h)
    requests = h.store.count_requests(h.wallet_id, 0.0)
    tx = h.transfer(HALF_SOL, MERCHANT)
    escalated = h.sign(tx, key="half")
    assert escalated.status_code == 202, escalated.text
    body = escalated.json()
    assert body["status"] == "pending_approval" and body["request_id"]
    decision = body["decision"]  # the enclave's, with its reasons
    assert decision["verdict"] == "escalate"
    assert [(r["verdict"], r["rule"]) for r in decision["reasons"]] == [("escalate", "limits.sol.sol-daily")]
    approval_id = body["approval_id"]

    # Listed for the owner with the request and the enclave's decision; nothing held, no denial, one request.
    assert pending_approval_ids(h) == [approval_id]
    (listed,) = h.owner_call("GET", f"/v1/wallets/{h.wallet_id}/approvals").json()
    stored = listed["request"]
    assert stored["decision"] == decision and stored["request_id"] == body["request_id"]
    assert base64.b64decode(stored["request"]["transaction"]) == tx
    assert denials(h) == 0 and h.store.count_requests(h.wallet_id, 0.0) == requests + 1
    assert h.spent() == 0 and pending_reservations(h) == []
    assert not h.owner_call("GET", f"/v1/wallets/{h.wallet_id}").json().get("frozen")

    # Audited with the enclave's receipt (the auditor agrees), and notified.
    record = records(h)[-1]
    assert record.event_type == "transaction.escalated" and record.receipt is not None
    payload = json.loads(record.payload)
    assert payload["approval_id"] == approval_id and payload["decision"] == decision
    assert payload["message_sha256"] == message_hash(tx).hex() and payload["request_id"] == body["request_id"]
    assert "transaction.refused" not in h.audit_events()
    assert verify_audit_receipts(records(h)).receipts == 6  # five signed, one escalated
    (notified,) = queued(h, "approval.pending")
    assert notified["approval_id"] == approval_id and notified["decision"] == decision
    assert queued(h, "transaction.denied") == []

    # The answer is stored under the key: a replay neither asks the enclave again nor queues another approval.
    replayed = h.sign(tx, key="half")
    assert (replayed.status_code, replayed.json()) == (202, body)
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert pending_approval_ids(h) == [approval_id] and verify_audit_receipts(records(h)).receipts == 6

    # The owner approves: the enclave signs it with the owner's approval (approval ceilings).
    approved = approve(h, approval_id, tx)
    assert approved.status_code == 200, approved.text
    signed = approved.json()["transaction"]
    assert approved.json()["status"] == "signed" and signed["status"] == "signed" and signed["signature"]
    assert signed["decision"]["verdict"] == "escalate"
    assert pending_approval_ids(h) == [] and h.spent() == HALF_SOL
    assert h.audit_events()[-2:] == ["approval.approved", "transaction.signed"]
    assert verify_audit_receipts(records(h)).receipts == 7
    assert denials(h) == 0


def test_a_request_to_submit_is_submitted_only_once_the_owner_approves(h: Harness) -> None:
    enclave_ahead(h)
    sent = spy_calls(h.services.chain, "submit")
    tx = h.transfer(HALF_SOL, MERCHANT)
    escalated = h.sign(tx, key="submit", submit=True)
    assert escalated.status_code == 202, escalated.text
    assert escalated.json()["status"] == "pending_approval" and sent == []
    assert "transaction.submitted" not in h.audit_events()
    approved = approve(h, escalated.json()["approval_id"], tx)
    assert approved.status_code == 200, approved.text
    assert len(sent) == 1 and approved.json()["transaction"]["submission"] is not None


def test_with_the_owners_queue_full_an_enclave_escalation_is_refused_429_and_no_denial(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sign_outcomes, "MAX_PENDING_APPROVALS", 2)
    enclave_ahead(h)
    waiting = [h.sign(h.transfer(2 * LAMPORTS_PER_SOL + i, MERCHANT)) for i in range(2)]  # the proxy escalates
    assert [r.status_code for r in waiting] == [202, 202]
    ids = [r.json()["approval_id"] for r in waiting]
    assert pending_approval_ids(h) == ids

    tx = h.transfer(HALF_SOL, MERCHANT)
    refused = h.sign(tx, key="over")
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and "2 approvals of this wallet are waiting" in error["message"]
    assert pending_approval_ids(h) == ids and denials(h) == 0
    assert h.spent() == 0 and pending_reservations(h) == []
    record = records(h)[-1]
    assert record.event_type == "transaction.refused" and record.receipt is not None
    payload = json.loads(record.payload)
    assert payload["reason"] == "2 approvals pending (at most 2)" and payload["decision"]["verdict"] == "escalate"
    assert verify_audit_receipts(records(h)).receipts == 6
    assert len(queued(h, "approval.pending")) == 2
    # Not stored under the key (freed, as for a 503): the same request retried under it once the owner decided one
    # is relayed again, and the enclave's escalation waits now.
    rejected = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/approvals/{ids[0]}/reject")
    assert rejected.status_code == 200, rejected.text
    again = h.sign(tx, key="over")
    assert again.status_code == 202 and "Idempotent-Replayed" not in again.headers, again.text
    assert again.json()["decision"]["verdict"] == "escalate" and denials(h) == 0
    assert pending_approval_ids(h) == [ids[1], again.json()["approval_id"]]


def test_an_enclave_escalation_whose_record_cannot_be_written_is_503_and_given_back(h: Harness) -> None:
    enclave_ahead(h)
    tx = h.transfer(HALF_SOL, MERCHANT)
    h.store.failing.add("apply_audited")  # the store transaction of the approval, its record and the answer
    failed = h.sign(tx, key="k")
    h.store.failing.clear()
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "store_unavailable", failed.text
    assert pending_approval_ids(h) == [] and denials(h) == 0
    assert h.spent() == 0 and pending_reservations(h) == []
    assert queued(h, "approval.pending") == [] and "transaction.escalated" not in h.audit_events()
    retried = h.sign(tx, key="k")  # the key was freed: the enclave is asked again and escalates again
    assert retried.status_code == 202, retried.text
    assert pending_approval_ids(h) == [retried.json()["approval_id"]] and denials(h) == 0


def test_an_enclave_denial_is_still_a_denial(h: Harness) -> None:
    """The store forgets the requests (rate rule: 3 a minute); the enclave remembers them and denies the fourth."""
    policy = h.policy(2, rate={"max_requests": 3, "window_seconds": 60})
    installed = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": policy})
    assert installed.status_code == 200, installed.text
    for i in range(3):
        assert h.sign(h.transfer(1000 + i, MERCHANT)).status_code == 200
    forget(h, "wallet_events")
    refused = h.sign(h.transfer(2000, MERCHANT), key="fourth")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "enclave_refused", refused.text
    assert [(r["verdict"], r["rule"]) for r in refused.json()["error"]["reasons"]] == [("deny", "rate")]
    assert denials(h) == 1 and pending_approval_ids(h) == []
    record = records(h)[-1]
    assert record.event_type == "transaction.refused" and record.receipt is not None
    assert "transaction.escalated" not in h.audit_events()
    assert len(queued(h, "transaction.denied")) == 1 and queued(h, "approval.pending") == []
    assert h.spent() == 3000 + 3 and pending_reservations(h) == []
