"""Contract tests: an approval decided by a build before the message marks (a rolling update, or a rollback) does not
hold its message for ever.

Review s21 (stale_message_mark.py): DynamoDB holds a wallet's open approval of a message with an item
``W#<wallet>/AM#<hash>`` that the writes ending the approval delete. A host on the previous build decided the approval
without deleting it, and every later escalation of that message joined the dead approval (`ApprovalPending` naming
it). Now a mark naming an approval that is no longer open is replaced, conditionally, in the new approval's own
transaction. SQLite looks the open approval up by the approvals table's own status, so it had nothing to leave
behind; the same contract holds on both.
"""

from __future__ import annotations

from typing import Any

import pytest

from parent_proxy.errors import ApprovalPending
from parent_proxy.store import dynamodb_attributes as attr
from parent_proxy.store.model import ApprovalStatus
from parent_proxy.store.protocol import Store
from parent_proxy.store.sqlite import SqliteStore
from tests.proxy.approval_messages import T0, approval, escalate, previous_build_decides, refused
from tests.proxy.conftest import FakeClock


def previous_build_reopens(s: Any, approval_id: str, wallet_id: str = "w1") -> None:
    """A DynamoDB reopening as a build before the twenty-fourth session wrote it for an approval approved without a
    signing: pending again, its message mark put back (`held`), one more in the wallet's pending count."""
    update = {
        "TableName": s._table,
        "Key": {"pk": attr.s(f"W#{wallet_id}"), "sk": attr.s(f"AP#{approval_id}")},
        "UpdateExpression": "SET #st = :p REMOVE decision, decided_at, signing, counted_signing",
        "ConditionExpression": "#st = :a AND attribute_not_exists(signing)",
        "ExpressionAttributeNames": {"#st": "status"},
        "ExpressionAttributeValues": {":p": attr.s(ApprovalStatus.PENDING), ":a": attr.s(ApprovalStatus.APPROVED)},
    }
    mark = s._message_mark_action(approval_id, held=True)
    s._transact([{"Update": update}, *mark, s._pending_count_action(wallet_id, 1)])


@pytest.mark.parametrize("status", [ApprovalStatus.REJECTED, ApprovalStatus.APPROVED])
def test_a_decision_that_left_the_mark_behind_frees_the_message(
    wallet_store: Store, clock: FakeClock, status: ApprovalStatus
) -> None:
    s = wallet_store
    escalate(s, clock, approval("a1"))
    previous_build_decides(s, "a1", status)  # approved: without a signing named, so not under way either

    escalate(s, clock, approval("a2"))

    assert [a.approval_id for a in s.pending_approvals("w1")] == ["a2"]
    refused(s, clock, approval("a3"), "a2")  # the message's one open approval is now a2
    with pytest.raises(ApprovalPending, match="approval a2"):
        s.create_approval(approval("a4"))  # the store's own call, outside an audited write, as well


def test_a_plain_creation_replaces_a_stale_mark(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    escalate(s, clock, approval("a1"))
    previous_build_decides(s, "a1", ApprovalStatus.REJECTED)
    s.create_approval(approval("a2"))
    refused(s, clock, approval("a3"), "a2")


def test_an_approval_the_previous_build_left_being_signed_still_holds_it(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    escalate(s, clock, approval("a1"))
    previous_build_decides(s, "a1", ApprovalStatus.APPROVED, signing="r1")  # its signing under way: still open
    refused(s, clock, approval("a2"), "a1")


def test_a_reopening_between_the_stale_read_and_the_replacement_wins(wallet_store: Store, clock: FakeClock) -> None:
    """DynamoDB: a1 (approved without a signing by the previous build) is reopened by a host of that build (a
    rolling update; this build reopens only an approval that names its signing) after a2's first attempt read the
    mark as stale: the replacement's condition on a1 fails, and a2 is told a1 is open again, nothing of it written."""
    s = wallet_store
    if isinstance(s, SqliteStore):
        pytest.skip("SQLite reads the open approval under its write lock: no seam between a read and the write")
    escalate(s, clock, approval("a1"))
    previous_build_decides(s, "a1", ApprovalStatus.APPROVED)
    stale_read = s._mark_holder  # type: ignore[attr-defined]
    reads: list[str] = []

    def then_reopened(*args: object) -> Exception:
        verdict: Exception = stale_read(*args)
        reads.append(type(verdict).__name__)
        if len(reads) == 1:
            previous_build_reopens(s, "a1")  # a1 pending again, its mark put back
        return verdict

    s._mark_holder = then_reopened  # type: ignore[attr-defined]
    head = s.audit_head()
    with pytest.raises(ApprovalPending, match="approval a1"):
        escalate(s, clock, approval("a2"))
    assert reads == ["StaleMark", "ApprovalPending"]  # the replacement was tried, and refused
    assert [a.approval_id for a in s.pending_approvals("w1")] == ["a1"]
    assert s.audit_head() == head


def test_another_replacement_between_the_stale_read_and_this_one_wins(wallet_store: Store, clock: FakeClock) -> None:
    """DynamoDB: a3 replaces a1's stale mark after a2's first attempt read it as stale; a2's replacement is
    conditional on the mark still naming a1, so a2 is told a3 holds the message and nothing of a2 is written."""
    s = wallet_store
    if isinstance(s, SqliteStore):
        pytest.skip("SQLite reads the open approval under its write lock: no seam between a read and the write")
    escalate(s, clock, approval("a1"))
    previous_build_decides(s, "a1", ApprovalStatus.REJECTED)
    stale_read = s._mark_holder  # type: ignore[attr-defined]
    reads: list[str] = []

    def then_replaced(*args: object) -> Exception:
        verdict: Exception = stale_read(*args)
        reads.append(type(verdict).__name__)
        if len(reads) == 1:
            escalate(s, clock, approval("a3"))  # its own first attempt reads the stale mark too (reads[1])
        return verdict

    s._mark_holder = then_replaced  # type: ignore[attr-defined]
    with pytest.raises(ApprovalPending, match="approval a3"):
        escalate(s, clock, approval("a2"))
    assert reads == ["StaleMark", "StaleMark", "ApprovalPending"]
    assert [a.approval_id for a in s.pending_approvals("w1")] == ["a3"]


def test_a_holder_ended_between_the_refusal_and_its_read_frees_the_message(
    wallet_store: Store, clock: FakeClock
) -> None:
    """DynamoDB: a2's put of the mark is refused (a1 holds it), then a1 is rejected, deleting the mark, before a2
    reads who holds it: no holder, so a2 is sent again and holds the message."""
    s = wallet_store
    if isinstance(s, SqliteStore):
        pytest.skip("SQLite reads the open approval under its write lock: no seam between a read and the write")
    escalate(s, clock, approval("a1"))
    holder_read = s._mark_holder  # type: ignore[attr-defined]
    reads: list[str] = []

    def after_a_rejection(*args: object) -> Exception:
        if not reads:
            s.decide_approval("a1", ApprovalStatus.REJECTED, None, T0)
        verdict: Exception = holder_read(*args)
        reads.append(f"{type(verdict).__name__} {getattr(verdict, 'holder', '')}")
        return verdict

    s._mark_holder = after_a_rejection  # type: ignore[attr-defined]
    escalate(s, clock, approval("a2"))
    assert reads == ["StaleMark None"]
    assert [a.approval_id for a in s.pending_approvals("w1")] == ["a2"]
    refused(s, clock, approval("a3"), "a2")
