"""The same transaction sent again after its approval was approved and signed is answered with that signature, on both
stores (`sign_outcomes.join_signed`): 200, the answer the approval's own key replays, stored under the new key and
audited as a join of that approval; no second approval, nothing sent to the enclave, nothing counted again. Also when
the owner's signing finishes between the store naming the open approval and the join's write. A store failure
writing that join writes nothing of it and frees the key.

Before (s21, "Left"): such a request made a new approval, which the owner could approve too, counting the amounts
twice (one signature lands).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parent_proxy.store.validation import IDEMPOTENCY_RETENTION_SECONDS
from tests.proxy.api_harness import Harness, pending_approval_ids, spy_calls
from tests.proxy.conftest import provisioned_on_store
from tests.proxy.escalation_calls import approve, decide_during_joins, escalations
from tests.proxy.harness_calls import ESCALATING, configure_webhook, queued
from tests.support.policies import MERCHANT


@pytest.fixture(params=["sqlite", "dynamodb"])
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """A provisioned wallet on each store, with two store threads: the owner decides while a request is held in
    the store."""
    yield from provisioned_on_store(request, tmp_path, store_threads=2)


def signed_once(h: Harness, tx: bytes) -> tuple[str, dict[str, Any]]:
    """Escalate ``tx`` under key k-a and have the owner approve it: the approval id and the signed answer the
    approval's own key replays."""
    approval_id = h.sign(tx, key="k-a").json()["approval_id"]
    signed = approve(h, approval_id, tx)
    assert signed.status_code == 200, signed.text
    replay = h.sign(tx, key="k-a")
    assert replay.headers.get("Idempotent-Replayed") == "true" and replay.json()["status"] == "signed"
    return approval_id, replay.json()


def test_a_transaction_sent_again_after_its_signing_is_answered_with_that_signature(h: Harness) -> None:
    sqlite = not hasattr(h.store.inner, "_table")
    if sqlite:
        configure_webhook(h)
    tx = h.transfer(ESCALATING, MERCHANT)
    approval_id, answer = signed_once(h, tx)
    relayed = spy_calls(h.services.relay, "sign_transaction")
    requests = h.store.count_requests(h.wallet_id, 0.0)

    again = h.sign(tx, key="k-b")

    assert again.status_code == 200, again.text
    assert again.headers.get("Idempotent-Replayed") is None
    assert again.json() == answer  # the same signature, signed transaction, receipt and request id
    assert relayed == [] and pending_approval_ids(h) == []  # nothing sent to the enclave, no second approval
    assert h.spent() == ESCALATING and h.audit_events().count("transaction.signed") == 1  # counted once
    assert h.store.count_requests(h.wallet_id, 0.0) == requests + 1  # the request counts for the rate rule
    joined = escalations(h)[-1]
    assert {k: joined[k] for k in ("approval_id", "joined", "signed", "signing_request_id")} == {
        "approval_id": approval_id, "joined": True, "signed": True, "signing_request_id": answer["request_id"],
    }  # fmt: skip
    assert joined["request_id"] != answer["request_id"] and "signature" not in joined
    if sqlite:
        assert queued(h).count("approval.pending") == 1  # the owner is not asked again
    replay = h.sign(tx, key="k-b")  # the key's answer now
    assert replay.headers.get("Idempotent-Replayed") == "true" and replay.json() == answer

    h.clock.offset = IDEMPOTENCY_RETENTION_SECONDS + 60  # a day later: the approval's own key has expired too
    later = h.sign(tx, key="k-a")
    assert later.status_code == 200 and later.headers.get("Idempotent-Replayed") is None
    assert later.json() == answer and relayed == [] and h.audit_events().count("transaction.signed") == 1


def test_the_signing_finishing_before_the_join_is_written_answers_with_its_signature(h: Harness) -> None:
    """The owner's approval signs between the store naming the open approval and the join's write: the join is
    refused (`ApprovalClosed`), the request tries again and finds the approval signed."""
    tx = h.transfer(ESCALATING, MERCHANT)
    first = h.sign(tx, key="k-a").json()["approval_id"]
    decided = decide_during_joins(h, tx, "approve", times=1)

    second = h.sign(tx, key="k-b")

    assert decided == [first]
    assert second.status_code == 200, second.text  # before: a new approval (202), the owner asked again
    assert second.json() == h.sign(tx, key="k-a").json()
    assert pending_approval_ids(h) == []
    assert [(e["approval_id"], e.get("joined"), e.get("signed")) for e in escalations(h)] == [
        (first, None, None),
        (first, True, True),
    ]
    assert h.spent() == ESCALATING and h.audit_events().count("transaction.signed") == 1


def test_a_store_failure_writing_the_join_writes_nothing_and_frees_the_key(h: Harness) -> None:
    tx = h.transfer(ESCALATING, MERCHANT)
    _approval_id, answer = signed_once(h, tx)
    requests, events = h.store.count_requests(h.wallet_id, 0.0), h.audit_events()

    def then_unreachable() -> None:  # `join_signed` reads the approval, then writes: the write fails
        h.store.before.pop("get_approval")
        h.store.failing.add("apply_audited")

    h.store.before["get_approval"] = then_unreachable
    failed = h.sign(tx, key="k-b")
    h.store.failing.clear()

    assert failed.status_code == 503 and failed.json()["error"]["code"] == "store_unavailable", failed.text
    assert h.audit_events() == [*events, "transaction.failed"]  # no join recorded (the failure is)
    assert h.store.count_requests(h.wallet_id, 0.0) == requests  # nor its request's time
    assert pending_approval_ids(h) == []
    retried = h.sign(tx, key="k-b")  # the key was given back
    assert retried.status_code == 200 and retried.headers.get("Idempotent-Replayed") is None
    assert retried.json() == answer


def lose_signed_answer(h: Harness, approval_id: str) -> None:
    """The approval's kept answer gone from the store (a restored older backup, say), behind the proxy's back."""
    inner = h.store.inner
    if not hasattr(inner, "_table"):
        with inner._write() as conn:
            conn.execute("UPDATE approvals SET signed_answer = NULL WHERE approval_id = ?", (approval_id,))
        return
    key = {"pk": {"S": f"W#{h.wallet_id}"}, "sk": {"S": f"AP#{approval_id}"}}
    inner._transact([{"Update": {"TableName": inner._table, "Key": key, "UpdateExpression": "REMOVE signed_answer"}}])


def test_a_signed_approval_that_no_longer_reads_so_is_503_and_writes_nothing(h: Harness) -> None:
    """Named as signed by the approval's write, the approval must read so when its answer is taken: else nothing is
    written, 503, the key given back (never an answer made up, never a second approval)."""
    tx = h.transfer(ESCALATING, MERCHANT)
    approval_id, _answer = signed_once(h, tx)
    events = h.audit_events()

    def lost_meanwhile() -> None:
        h.store.before.pop("get_approval")
        lose_signed_answer(h, approval_id)

    h.store.before["get_approval"] = lost_meanwhile
    failed = h.sign(tx, key="k-b")

    assert failed.status_code == 503 and failed.json()["error"]["code"] == "store_unavailable", failed.text
    assert h.audit_events() == [*events, "transaction.failed"]
    assert pending_approval_ids(h) == [] and h.audit_events().count("transaction.signed") == 1
