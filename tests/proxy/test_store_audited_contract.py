"""Contract tests for `Store.apply_audited` on every adapter: state changes (freeze, request/denial timestamps, a new
approval, an approval decision or its reopening, a stored idempotent answer), the audit record that describes them
and its webhook item are written together or not at all, including when the audit part is refused or fails.

Before, each change was its own write ahead of `AuditLog.append`: a failing audit write left the change behind,
unaudited and unnotified (tests/proxy/test_api_audited_changes.py shows it through the API).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from parent_proxy.audit import AuditLog, iter_audit_records, verify_audit_chain
from parent_proxy.errors import (
    AlreadyDecided,
    Conflict,
    IdempotencyInProgress,
    InvalidInput,
    NotFound,
    StoreUnavailable,
)
from parent_proxy.store.model import (
    Approval,
    ApprovalStatus,
    AuditRecord,
    IdempotencyStatus,
    IdempotentAnswer,
    OutboxItem,
    OutboxStatus,
)
from parent_proxy.store.protocol import AuditSealer, Store
from parent_proxy.store.state_changes import (
    ApprovalStillOpen,
    CompleteIdempotent,
    CreateApproval,
    CreateWallet,
    DecideApproval,
    FinishApproval,
    InstallPolicy,
    RecordEvent,
    ReopenApproval,
    RevokeToken,
    SetFrozen,
    StateChange,
    StillUnfrozen,
    StoreToken,
)
from tests.proxy.conftest import FakeClock, make_wallet, moto_dynamo_store
from tests.proxy.hooked_client import Hooked

T0 = 1_700_000_000.0
DIGEST = b"\x07" * 32
ANSWER = IdempotentAnswer("w1", "k1", DIGEST, b'{"status_code":202}')


def pending(approval_id: str = "a1", wallet_id: str = "w1") -> Approval:
    return Approval(approval_id, wallet_id, b'{"request":1}', ApprovalStatus.PENDING, T0)


def item(event_id: str = "e1", wallet_id: str = "w1") -> OutboxItem:
    return OutboxItem(event_id, wallet_id, "wallet.frozen", b"{}", created_at=T0, next_attempt_at=T0)


def set_up(s: Store) -> None:
    """What `EVERY_CHANGE` changes: a pending approval a1, an approval a3 approved by b"yes" for the signing s3, a
    claimed key k1."""
    s.create_approval(pending("a1"))
    s.create_approval(pending("a3"))
    s.decide_approval("a3", ApprovalStatus.APPROVED, b"yes", T0, "s3")
    assert s.begin_idempotent("w1", "k1", DIGEST, T0) is None


def state(s: Store) -> tuple[Any, ...]:
    """Everything `apply_audited` may change, for before/after comparisons."""
    wallet = s.get_wallet("w1")
    return (
        wallet.frozen,
        wallet.frozen_reason,
        s.recent_requests("w1", 0.0),
        s.recent_denials("w1", 0.0),
        [a.approval_id for a in s.pending_approvals("w1")],
        [(a.status, a.decision, a.decided_at) for a in (s.get_approval(i) for i in ("a1", "a3"))],
        stored_answer(s),
        s.audit_head(),
    )


def stored_answer(s: Store) -> object:
    """What key k1 holds: the stored answer, or the refusal saying its request is still in progress."""
    try:
        return s.lookup_idempotent("w1", "k1", DIGEST, T0)
    except IdempotencyInProgress as exc:
        return type(exc).__name__


EVERY_CHANGE: list[StateChange] = [
    RecordEvent("w1", "request", T0),
    RecordEvent("w1", "denial", T0 + 1),
    SetFrozen("w1", True, "policy freeze trigger: freeze.denials"),
    CreateApproval(pending("a2")),
    DecideApproval("a1", ApprovalStatus.REJECTED, None, T0 + 2),
    ReopenApproval("a3", b"yes", "s3"),
    CompleteIdempotent(ANSWER),
]


def test_apply_audited_writes_the_changes_the_record_and_the_webhook(wallet_store: Store, clock: FakeClock) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    set_up(s)
    log.append("before", {}, wallet_id=None)
    record = s.apply_audited(EVERY_CHANGE, log.sealer("transaction.frozen", {"n": 1}, wallet_id="w1"), item())
    assert (record.seq, record.event_type, record.wallet_id) == (2, "transaction.frozen", "w1")
    assert s.audit_head() == record
    verify_audit_chain(iter_audit_records(s))
    wallet = s.get_wallet("w1")
    assert wallet.frozen and wallet.frozen_reason == "policy freeze trigger: freeze.denials"
    assert (s.recent_requests("w1", 0.0), s.recent_denials("w1", 0.0)) == ([T0], [T0 + 1])
    assert s.get_approval("a1").status == ApprovalStatus.REJECTED and s.get_approval("a1").decided_at == T0 + 2
    assert [a.approval_id for a in s.pending_approvals("w1")] == ["a2", "a3"]
    reopened = s.get_approval("a3")
    assert (reopened.status, reopened.decision, reopened.decided_at) == (ApprovalStatus.PENDING, None, None)
    stored = s.lookup_idempotent("w1", "k1", DIGEST, T0)
    assert stored is not None and (stored.status, stored.response) == (IdempotencyStatus.COMPLETED, ANSWER.response)
    assert s.get_outbox_item("e1").status == OutboxStatus.PENDING
    # An unfreeze; no changes at all is a plain append; no webhook is no item.
    s.apply_audited([SetFrozen("w1", False, None)], log.sealer("wallet.unfrozen", {}, wallet_id="w1"))
    assert not s.get_wallet("w1").frozen and s.get_wallet("w1").frozen_reason is None
    assert s.apply_audited([], log.sealer("bare", {}, wallet_id=None)).seq == 4


@pytest.mark.parametrize(
    ("refused", "error", "match"),
    [
        (DecideApproval("a1", ApprovalStatus.REJECTED, None, T0), AlreadyDecided, "approval a1 is already rejected"),
        (DecideApproval("a9", ApprovalStatus.REJECTED, None, T0), NotFound, "approval a9 not found"),
        (CreateApproval(pending("a1")), Conflict, "approval a1 already exists"),
        (CreateApproval(pending("a3", "w9")), NotFound, "wallet w9 not found"),
        (SetFrozen("w9", True, "r"), NotFound, "wallet w9 not found"),
        (RecordEvent("w9", "denial", T0), NotFound, "wallet w9 not found"),
        (ReopenApproval("a1", b"yes", "s3"), AlreadyDecided, "approval a1 is rejected, not approved by this decision"),
        (ReopenApproval("a3", b"no", "s3"), AlreadyDecided, "approval a3 is approved, not approved by this decision"),
        (ReopenApproval("a3", b"yes", "s1"), AlreadyDecided, "approval a3 is approved, not approved by this decision"),
        (ReopenApproval("a9", b"yes", "s3"), NotFound, "approval a9 not found"),
        (CompleteIdempotent(IdempotentAnswer("w1", "k2", DIGEST, b"{}")), NotFound, "idempotency key 'k2' not found"),
        (CompleteIdempotent(IdempotentAnswer("w1", "k1", b"\x08" * 32, b"{}")), Conflict, "not in progress"),
    ],
    ids=["decided", "no-approval", "approval-exists", "approval-wallet", "freeze-wallet", "event-wallet",
         "reopen-rejected", "reopen-other-decision", "reopen-other-signing", "reopen-no-approval", "answer-no-claim",
         "answer-other-request"],
)  # fmt: skip
def test_a_refused_change_writes_nothing(
    wallet_store: Store, clock: FakeClock, refused: StateChange, error: type[Exception], match: str
) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    set_up(s)
    s.decide_approval("a1", ApprovalStatus.REJECTED, None, T0)
    before = state(s)
    changes: list[StateChange] = [RecordEvent("w1", "denial", T0), SetFrozen("w1", True, "r"), refused]
    with pytest.raises(error, match=match):
        s.apply_audited(changes, log.sealer("t", {}, wallet_id="w1"), item())
    assert state(s) == before
    with pytest.raises(NotFound, match="outbox item e1 not found"):
        s.get_outbox_item("e1")


def _raising(_head: AuditRecord | None) -> AuditRecord:
    raise StoreUnavailable("the clock could not be read")


def _stale(_head: AuditRecord | None) -> AuditRecord:
    return AuditRecord(7, T0, "w1", "t", b"{}", None, b"\x01" * 32, b"\x02" * 32)


def _not_a_record(_head: AuditRecord | None) -> AuditRecord:
    return "record"  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("sealer", "error", "match"),
    [
        (_raising, StoreUnavailable, "clock"),
        (_stale, Conflict, "does not extend the head"),
        (_not_a_record, InvalidInput, "must build an AuditRecord"),
    ],
    ids=["sealer-fails", "stale-record", "not-a-record"],
)
def test_a_refused_or_failing_audit_record_writes_no_change(
    wallet_store: Store, sealer: AuditSealer, error: type[Exception], match: str
) -> None:
    s = wallet_store
    set_up(s)
    before = state(s)
    with pytest.raises(error, match=match):
        s.apply_audited(EVERY_CHANGE, sealer, item())
    assert state(s) == before and s.get_approval("a1").status == ApprovalStatus.PENDING
    with pytest.raises(NotFound, match="outbox item e1 not found"):
        s.get_outbox_item("e1")


def test_a_refused_webhook_item_writes_no_change_and_no_record(wallet_store: Store, clock: FakeClock) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    set_up(s)
    log.append("first", {}, wallet_id="w1", webhook=item("e1"))
    before = state(s)
    with pytest.raises(Conflict, match="outbox item e1 already exists"):
        s.apply_audited(EVERY_CHANGE, log.sealer("t", {}, wallet_id="w1"), item("e1"))
    assert state(s) == before
    with pytest.raises(NotFound, match="wallet w9 not found"):
        s.apply_audited([], log.sealer("t", {}, wallet_id="w9"), item("e2", "w9"))
    assert state(s) == before


def test_a_change_that_is_not_one_is_refused_before_anything_is_written(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    set_up(s)
    before = state(s)
    bad: list[Any] = [SetFrozen("w1", True, "r"), ("freeze", "w1")]
    with pytest.raises(InvalidInput, match="tuple is not a state change"):
        s.apply_audited(bad, AuditLog(s, clock).sealer("t", {}, wallet_id="w1"))
    with pytest.raises(InvalidInput, match="frozen_reason"):
        s.apply_audited([SetFrozen("w1", True, None)], AuditLog(s, clock).sealer("t", {}, wallet_id="w1"))
    with pytest.raises(InvalidInput, match="kind"):
        s.apply_audited([RecordEvent("w1", "other", T0)], AuditLog(s, clock).sealer("t", {}, wallet_id="w1"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="decision"):
        s.apply_audited([ReopenApproval("a3", "yes", "s3")], AuditLog(s, clock).sealer("t", {}, wallet_id="w1"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="answer"):
        s.apply_audited([CompleteIdempotent(b"{}")], AuditLog(s, clock).sealer("t", {}, wallet_id="w1"))  # type: ignore[arg-type]
    assert state(s) == before


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({SetFrozen("w1", True, "r")}, "changes: must be a sequence of state changes"),  # a set: no order
        ((c for c in [SetFrozen("w1", True, "r")]), "changes: must be a sequence of state changes"),
        (SetFrozen("w1", True, "r"), "changes: must be a sequence of state changes"),
        ([CreateWallet(make_wallet("w3", sealed_key=b""))], "sealed_key: must not be empty"),
        ([CreateWallet(make_wallet("bad id"))], "wallet_id: must be"),
        ([InstallPolicy("bad id", b"{}", 1)], "wallet_id"),
        ([InstallPolicy("w1", "{}", 1)], "document: must be bytes"),  # type: ignore[arg-type]
        ([InstallPolicy("w1", b"{}", 0)], "sequence: must be an integer in \\[1,"),
        ([StoreToken("bad id", "w1", DIGEST, T0)], "token_id"),
        ([StoreToken("t1", "bad id", DIGEST, T0)], "wallet_id"),
        ([RevokeToken("bad id", "w1", T0)], "token_id"),
        ([RevokeToken("t1", "bad id", T0)], "wallet_id"),
        ([SetFrozen("bad id", True, "r")], "wallet_id"),
        ([RecordEvent("bad id", "request", T0)], "wallet_id"),
        ([DecideApproval("bad id", ApprovalStatus.REJECTED, None, T0)], "approval_id"),
        ([DecideApproval("a1", ApprovalStatus.PENDING, None, T0)], "status: must be approved, rejected or expired"),
        ([DecideApproval("a1", ApprovalStatus.REJECTED, None, T0, "s1")], "signing: only an approval"),
        ([DecideApproval("a1", ApprovalStatus.APPROVED, None, -1.0, "s1")], "now"),
        ([DecideApproval("a1", ApprovalStatus.APPROVED, b"yes", T0)], "signing: an approval names the signing"),
        ([ReopenApproval("a3", b"yes", None)], "signing: must be"),  # type: ignore[arg-type]
        ([FinishApproval("bad id", "s1")], "approval_id"),
        ([FinishApproval("a3", "bad id")], "signing"),
        ([ApprovalStillOpen("bad id", "a1")], "wallet_id"),
        ([ApprovalStillOpen("w1", "bad id")], "approval_id"),
        ([StillUnfrozen("bad id", 0)], "wallet_id"),
    ],
)
def test_changes_that_do_not_check_are_refused_before_anything_is_written(
    wallet_store: Store, clock: FakeClock, changes: Any, match: str
) -> None:
    s = wallet_store
    set_up(s)
    before = (state(s), s.get_wallet("w1").policy_sequence)
    with pytest.raises(InvalidInput, match=match):
        s.apply_audited(changes, AuditLog(s, clock).sealer("t", {}, wallet_id="w1"))
    assert (state(s), s.get_wallet("w1").policy_sequence) == before
    with pytest.raises(NotFound, match="wallet w3 not found"):
        s.get_wallet("w3")


def test_dynamodb_builds_the_record_again_when_another_appender_moved_the_head(aws_env: None) -> None:
    """(SQLite builds the record under the write lock: the head cannot move.) The first transaction fails only on
    the head's conditions; the second extends the new head, with the changes written once."""
    clock = FakeClock()
    with moto_dynamo_store(Hooked) as (s, client):
        s.create_wallet(make_wallet("w1"))
        log = AuditLog(s, clock)
        calls: list[int] = []

        def race(real: Callable[..., Any], **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                log.append("concurrent", {}, wallet_id=None)  # nested call: calls == [1, 1]
            return real(**kwargs)

        client.hooks["transact_write_items"] = race
        changes = [RecordEvent("w1", "denial", T0), SetFrozen("w1", True, "r")]
        record = s.apply_audited(changes, log.sealer("transaction.frozen", {}, wallet_id="w1"), item())
        assert len(calls) == 3 and record.seq == 2
        assert [r.event_type for r in iter_audit_records(s)] == ["concurrent", "transaction.frozen"]
        verify_audit_chain(iter_audit_records(s))
        assert s.recent_denials("w1", 0.0) == [T0] and s.get_wallet("w1").frozen
