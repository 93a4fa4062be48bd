"""The owner's approval queue is bounded: with `sign_outcomes.MAX_PENDING_APPROVALS` escalations of a wallet waiting, a
request that escalates is refused (429 ``rate_limited``, audited, not stored under its idempotency key: the key is
free again) and nothing is queued; once the owner decides one, the next escalation waits again, the refused request
retried under its key too. Real proxy, store and enclave. The bound is a condition of the approval's own write
(tests/proxy/test_store_approval_bound_contract.py: exact under concurrency).

Before (the agent-side review of the twentieth session, r2_idempotency.py (d)), the 429 was stored under the key:
the agent's retry with the same key, its normal reaction to a 429, replayed it for 24 hours although the queue had
room again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from parent_proxy import sign_outcomes
from tests.proxy.api_harness import LAMPORTS_PER_SOL, Harness, pending_approval_ids, provision, running_harness
from tests.support.policies import MERCHANT

CAP = 3


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setattr(sign_outcomes, "MAX_PENDING_APPROVALS", CAP)
    for harness in running_harness(tmp_path):
        provision(harness)
        yield harness


def escalating(h: Harness, lamports: int) -> bytes:
    return h.transfer(2 * LAMPORTS_PER_SOL + lamports, MERCHANT)  # above the automatic 1 SOL, below the ceiling


def test_a_full_queue_refuses_the_next_escalation_until_the_owner_decides(h: Harness) -> None:
    waiting = [h.sign(escalating(h, i), key=f"e{i}") for i in range(CAP)]
    assert [r.status_code for r in waiting] == [202] * CAP
    ids = [r.json()["approval_id"] for r in waiting]
    assert pending_approval_ids(h) == ids

    over = escalating(h, CAP)
    refused = h.sign(over, key="over")
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and f"{CAP} approvals of this wallet are waiting" in error["message"]
    assert pending_approval_ids(h) == ids  # nothing queued
    record = h.store.audit_records(0, 10_000)[-1]
    assert record.event_type == "transaction.refused"
    assert f"{CAP} approvals pending (at most {CAP})" in record.payload.decode()
    # The refusal is not the key's answer: the same request under it is evaluated again (the queue still full: 429
    # again, audited again, no replay), and queues nothing.
    again = h.sign(over, key="over")
    assert (again.status_code, again.json()) == (429, refused.json())
    assert "Idempotent-Replayed" not in again.headers
    assert h.audit_events()[-2:] == ["transaction.refused", "transaction.refused"]
    assert pending_approval_ids(h) == ids
    # Requests the policy allows outright are not affected.
    assert h.sign(h.transfer(LAMPORTS_PER_SOL // 10, MERCHANT), key="small").status_code == 200

    # The owner decides one: the refused request, retried under its key, waits now.
    rejected = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/approvals/{ids[0]}/reject")
    assert rejected.status_code == 200, rejected.text
    queued = h.sign(over, key="over")
    assert queued.status_code == 202, queued.text
    assert pending_approval_ids(h) == [*ids[1:], queued.json()["approval_id"]]
    assert h.sign(over, key="over").json() == queued.json()  # and that is the key's answer
    assert h.sign(escalating(h, CAP + 1), key="after").status_code == 429  # full again


def test_the_refusal_does_not_count_as_a_denial(h: Harness) -> None:
    """Denials feed the denial-burst freeze trigger; a busy agent filling the owner's queue is not an attack."""
    for i in range(CAP):
        assert h.sign(escalating(h, i), key=f"e{i}").status_code == 202
    requests = h.store.count_requests(h.wallet_id, 0.0)
    for i in range(5):
        assert h.sign(escalating(h, 10 + i), key=f"over{i}").status_code == 429
    assert h.store.count_denials(h.wallet_id, 0.0) == 0
    assert h.store.count_requests(h.wallet_id, 0.0) == requests + 5  # the rate rule still sees them
    assert not h.owner_call("GET", f"/v1/wallets/{h.wallet_id}").json().get("frozen")


def test_a_store_failure_writing_the_escalation_is_503_and_frees_the_key(h: Harness) -> None:
    """The queue is counted by the approval's own write: a store failure there queues nothing and frees the key."""
    tx = escalating(h, 0)
    h.store.failing.add("apply_audited")
    failed = h.sign(tx, key="k")
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "store_unavailable"
    h.store.failing.clear()
    assert pending_approval_ids(h) == [] and "transaction.escalated" not in h.audit_events()
    retried = h.sign(tx, key="k")  # the key was not left claimed
    assert retried.status_code == 202, retried.text
