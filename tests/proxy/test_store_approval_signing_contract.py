"""Contract tests (SQLite and DynamoDB) for an approved approval's signing (`DecideApproval.signing`): listed by
`Store.stalled_approvals` until `FinishApproval` (in `finish_signing` or `apply_audited`) or a reopening for that
very signing ends it; the two exclude each other, and a signing whose approval was reopened (and approved again, for
a new signing) can never finish: nothing of its transaction is written.

Before, an approval approved by a process that died before its signing finished stayed approved for ever: nothing
named the signing, nothing could tell it from a finished one (`parent_proxy.stalled_approvals`).
"""

from __future__ import annotations

from typing import Any

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import AlreadyDecided, InvalidInput
from parent_proxy.store.model import Approval, ApprovalStatus, OutboxItem, ReservationStatus
from parent_proxy.store.protocol import Store
from parent_proxy.store.state_changes import DecideApproval, FinishApproval, ReopenApproval
from tests.proxy.approval_messages import previous_build_decides
from tests.proxy.conftest import FakeClock

T0 = 1_700_000_000.0


def pending(approval_id: str) -> Approval:
    return Approval(approval_id, "w1", b'{"request":1}', ApprovalStatus.PENDING, T0 - 10)


def approve(s: Store, log: AuditLog, approval_id: str, signing: str, at: float = T0) -> None:
    decided = DecideApproval(approval_id, ApprovalStatus.APPROVED, b"yes", at, signing)
    s.apply_audited([decided], log.sealer("approval.approved", {}, wallet_id="w1"))


def stalled(s: Store, before: float, limit: int = 10) -> list[tuple[str, str | None]]:
    return [(a.approval_id, a.signing) for a in s.stalled_approvals(before, limit)]


def test_a_signing_is_listed_until_it_finishes(wallet_store: Store, clock: FakeClock) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    s.create_approval(pending("a1"))
    approve(s, log, "a1", "s1")
    assert s.get_approval("a1").signing == "s1"
    assert stalled(s, T0) == [] and stalled(s, T0 + 1) == [("a1", "s1")]  # decided strictly before
    reservation = s.reserve("w1", "s1", {"SOL": 5}, {}, T0)
    record = s.finish_signing(
        reservation, log.sealer("transaction.signed", {}, wallet_id="w1"), None, None, FinishApproval("a1", "s1")
    )
    assert s.audit_head() == record and s.reservation_status("w1", "s1") == ReservationStatus.COMMITTED
    finished = s.get_approval("a1")
    assert (finished.status, finished.decision, finished.signing) == (ApprovalStatus.APPROVED, b"yes", None)
    assert stalled(s, T0 + 10_000) == []
    with pytest.raises(AlreadyDecided, match="approval a1 is approved, not approved by this decision for this"):
        s.reopen_approval("a1", b"yes", "s1")  # a finished signing is never reopened
    with pytest.raises(AlreadyDecided, match="approval a1 is approved, not approved for this signing"):
        s.apply_audited([FinishApproval("a1", "s1")], log.sealer("t", {}, wallet_id="w1"))  # nor finished twice


def test_a_refusal_ends_the_signing_in_its_record(wallet_store: Store, clock: FakeClock) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    s.create_approval(pending("a1"))
    approve(s, log, "a1", "s1")
    s.apply_audited([FinishApproval("a1", "s1")], log.sealer("transaction.refused", {}, wallet_id="w1"))
    assert s.get_approval("a1").status == ApprovalStatus.APPROVED and stalled(s, T0 + 1) == []


def state(s: Store) -> tuple[Any, ...]:
    return (s.audit_head(), s.reservation_status("w1", "s1"), s.get_approval("a1"), stalled(s, T0 + 10_000))


def test_a_reopened_signing_never_finishes(wallet_store: Store, clock: FakeClock) -> None:
    """The race of a slow signing s1 with the reopening of its approval (and a new approval for s2): s1's finish
    is refused whole (no record, no commit, no webhook, no stored change), s2's goes through once."""
    s, log = wallet_store, AuditLog(wallet_store, clock)
    s.create_approval(pending("a1"))
    approve(s, log, "a1", "s1")
    first = s.reserve("w1", "s1", {"SOL": 5}, {}, T0)
    reopen = ReopenApproval("a1", b"yes", "s1")
    s.apply_audited([reopen], log.sealer("approval.reopened", {}, wallet_id="w1"))
    assert s.get_approval("a1").status == ApprovalStatus.PENDING and stalled(s, T0 + 10_000) == []
    assert [a.approval_id for a in s.pending_approvals("w1")] == ["a1"]
    with pytest.raises(AlreadyDecided, match="approval a1 is pending, not approved for this signing"):
        s.finish_signing(first, log.sealer("transaction.signed", {}, wallet_id="w1"), None, None,
                         FinishApproval("a1", "s1"))  # fmt: skip
    approve(s, log, "a1", "s2", at=T0 + 5)  # the owner approves again: a new signing
    before = state(s)
    webhook = OutboxItem("e1", "w1", "transaction.signed", b"{}", created_at=T0, next_attempt_at=T0)
    with pytest.raises(AlreadyDecided, match="approval a1 is approved, not approved for this signing"):
        s.finish_signing(first, log.sealer("transaction.signed", {}, wallet_id="w1"), webhook, None,
                         FinishApproval("a1", "s1"))  # fmt: skip
    with pytest.raises(AlreadyDecided, match="approval a1 is approved, not approved by this decision for this"):
        s.apply_audited([reopen], log.sealer("approval.reopened", {}, wallet_id="w1"))  # s1's reopening: once
    assert state(s) == before and before[1] == ReservationStatus.PENDING
    s.enqueue_webhook(webhook)  # no Conflict: its event id was never enqueued
    second = s.reserve("w1", "s2", {"SOL": 5}, {}, T0 + 5)
    s.finish_signing(second, log.sealer("transaction.signed", {}, wallet_id="w1"), None, None,
                     FinishApproval("a1", "s2"))  # fmt: skip
    assert s.get_approval("a1").signing is None and stalled(s, T0 + 10_000) == []


def test_stalled_signings_oldest_first_up_to_the_limit(wallet_store: Store, clock: FakeClock) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    for i, approval_id in enumerate(("a3", "a1", "a2", "a4")):
        s.create_approval(pending(approval_id))
        if approval_id != "a4":
            approve(s, log, approval_id, f"s-{approval_id}", at=T0 + i)
    previous_build_decides(s, "a4", ApprovalStatus.APPROVED)  # none named (all before version 11): never listed
    assert stalled(s, T0 + 100, 2) == [("a3", "s-a3"), ("a1", "s-a1")]
    assert stalled(s, T0 + 100) == [("a3", "s-a3"), ("a1", "s-a1"), ("a2", "s-a2")]
    assert stalled(s, T0 + 1) == [("a3", "s-a3")]
    with pytest.raises(AlreadyDecided):
        s.reopen_approval("a4", b"yes", "s-a3")  # nor reopened: whether it was signed cannot be told
    with pytest.raises(AlreadyDecided):
        s.reopen_approval("a3", b"yes", "s-a1")  # one with a signing only for that signing
    assert s.get_approval("a4").status is ApprovalStatus.APPROVED


def test_a_signing_begun_during_the_listing_is_not_stalled(wallet_store: Store, clock: FakeClock) -> None:
    """Between the listing's read of its marks and of the approval (DynamoDB reads them apart), another host's sweep
    reopens the stalled signing and the owner approves again: the new signing is not listed (the listing judges
    the approval as it reads it, as SQLite's one query does). Nineteenth-session review: before, DynamoDB listed
    it, and the sweep reopened a live signing."""
    s, log = wallet_store, AuditLog(wallet_store, clock)
    s.create_approval(pending("a1"))
    approve(s, log, "a1", "s1")
    now = T0 + 1000

    def meanwhile() -> None:
        s.apply_audited([ReopenApproval("a1", b"yes", "s1")], log.sealer("approval.reopened", {}, wallet_id="w1"))
        approve(s, log, "a1", "s2", at=now)

    query = getattr(s, "_query", None)
    if query is not None:  # DynamoDB: the interleaving falls between the marks' query and the approval's read

        def racing(*args: Any, **kwargs: Any) -> Any:
            result = query(*args, **kwargs)
            meanwhile()
            s._query = query  # type: ignore[attr-defined]
            return result

        s._query = racing  # type: ignore[attr-defined]
    else:
        meanwhile()
    assert stalled(s, now - 100) == []
    assert stalled(s, now + 1) == [("a1", "s2")]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s.decide_approval("a1", ApprovalStatus.REJECTED, None, T0, "s1"), "only an approval is followed"),
        (lambda s: s.decide_approval("a1", ApprovalStatus.APPROVED, b"yes", T0, "bad id"), "signing"),
        (lambda s: s.reopen_approval("a1", b"yes", ""), "signing"),
        (lambda s: s.stalled_approvals(T0, 0), "limit"),
        (lambda s: s.stalled_approvals(-1.0, 10), "decided_before"),
        (lambda s: s.apply_audited([FinishApproval("a1", "")], lambda _: None), "signing"),
    ],
)
def test_bad_signing_arguments_are_refused(wallet_store: Store, call: Any, match: str) -> None:
    wallet_store.create_approval(pending("a1"))
    with pytest.raises(InvalidInput, match=match):
        call(wallet_store)
    assert wallet_store.get_approval("a1").status == ApprovalStatus.PENDING
