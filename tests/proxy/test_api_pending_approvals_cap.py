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
from typing import Any

import pytest

from parent_proxy import sign_outcomes
from tests.proxy.api_harness import LAMPORTS_PER_SOL, Harness, pending_approval_ids, provision, running_harness
from tests.proxy.escalation_calls import approve
from tests.support.policies import MERCHANT

CAP = 3


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setattr(sign_outcomes, "MAX_PENDING_APPROVALS", CAP)
    for harness in running_harness(tmp_path, store_threads=2):  # two: an agent escalates during the owner's signing
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


def test_an_approval_being_signed_keeps_its_place_so_its_give_back_never_overfills_the_queue(h: Harness) -> None:
    """While the owner's approval of one of a full queue is being signed, a new escalation is refused: the approval
    may return to pending (here its signing's record cannot be written: given back), and then the queue holds the
    bound, not one more. Before, the new escalation took the approval's place (202) and the give-back made four
    waiting with a bound of three."""
    txs = [escalating(h, i) for i in range(CAP)]
    ids = [h.sign(tx, key=f"e{i}").json()["approval_id"] for i, tx in enumerate(txs)]
    during: list[Any] = []

    def an_agent_escalates_meanwhile() -> None:  # after the approval's decision, before its signing's record
        h.store.before.pop("reserve")
        during.append(h.sign(escalating(h, CAP), key="over"))
        h.store.failing.add("finish_signing")

    h.store.before["reserve"] = an_agent_escalates_meanwhile
    failed = approve(h, ids[0], txs[0])
    h.store.failing.clear()

    assert failed.status_code == 503, failed.text
    assert during[0].status_code == 429, during[0].text
    assert pending_approval_ids(h) == ids  # given back: the bound, never more
    assert h.audit_events().count("approval.reopened") == 1
    signed = approve(h, ids[0], txs[0])  # approved again, and signed this time: its place is free
    assert signed.status_code == 200, signed.text
    assert h.sign(escalating(h, CAP), key="over").status_code == 202
