"""Contract tests for `ApprovalStillOpen` on every adapter: the condition of a joined escalation's transaction
(`sign_outcomes.join`) that the approval it names is still open, as `CreateApproval` counts it (pending, or approved
with its signing under way); else `ApprovalClosed` and nothing of the transaction is written (DynamoDB: a
``ConditionCheck`` of the approval item in the same ``TransactWriteItems``).

Before (review s21): a join stored its 202 whatever the owner had decided since the store named the approval, so an
agent's key could hold, and replay for its day, a 202 naming a rejected or already signed approval.
"""

from __future__ import annotations

import hashlib

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import ApprovalClosed, IdempotencyInProgress, InvalidInput, NotFound
from parent_proxy.store.model import Approval, ApprovalStatus, AuditRecord, IdempotentAnswer
from parent_proxy.store.protocol import Store
from parent_proxy.store.state_changes import (
    ApprovalStillOpen,
    CompleteIdempotent,
    DecideApproval,
    FinishApproval,
    RecordEvent,
    StateChange,
)
from tests.proxy.approval_messages import previous_build_decides
from tests.proxy.conftest import FakeClock

T0 = 1_700_000_000.0
H1 = hashlib.sha256(b"request one").digest()
M1 = hashlib.sha256(b"message one").digest()
JOINED = b'{"status_code":202}'


def pending(s: Store, approval_id: str = "a1", wallet_id: str = "w1") -> None:
    s.create_approval(Approval(approval_id, wallet_id, b"{}", ApprovalStatus.PENDING, T0, message_hash=M1))


def join(s: Store, clock: FakeClock, approval_id: str = "a1", wallet_id: str = "w1") -> AuditRecord:
    """What `sign_outcomes.join` writes under the claimed key ``k1``: the request's time, the condition, the 202."""
    changes: list[StateChange] = [
        RecordEvent("w1", "request", T0),
        ApprovalStillOpen(wallet_id, approval_id),
        CompleteIdempotent(IdempotentAnswer("w1", "k1", H1, JOINED)),
    ]
    return s.apply_audited(changes, AuditLog(s, clock).sealer("transaction.escalated", {}, wallet_id="w1"))


def refused_whole(s: Store, clock: FakeClock, error: type[Exception], match: str, **kw: str) -> None:
    before = (s.audit_head(), s.recent_requests("w1", 0.0))
    with pytest.raises(error, match=match):
        join(s, clock, **kw)
    assert (s.audit_head(), s.recent_requests("w1", 0.0)) == before
    with pytest.raises(IdempotencyInProgress):  # the key is still only claimed: no answer stored
        s.lookup_idempotent("w1", "k1", H1, T0)


@pytest.fixture
def claimed(wallet_store: Store) -> Store:
    assert wallet_store.begin_idempotent("w1", "k1", H1, T0) is None
    return wallet_store


def test_a_pending_approval_is_joined(claimed: Store, clock: FakeClock) -> None:
    pending(claimed)
    assert join(claimed, clock).event_type == "transaction.escalated"
    stored = claimed.lookup_idempotent("w1", "k1", H1, T0)
    assert stored is not None and stored.response == JOINED
    assert claimed.get_approval("a1").status is ApprovalStatus.PENDING  # a condition: nothing of it written


def test_an_approval_being_signed_is_still_open(claimed: Store, clock: FakeClock) -> None:
    pending(claimed)
    claimed.decide_approval("a1", ApprovalStatus.APPROVED, b"envelope", T0, signing="r1")
    join(claimed, clock)
    stored = claimed.lookup_idempotent("w1", "k1", H1, T0)
    assert stored is not None and stored.response == JOINED


@pytest.mark.parametrize("decided", ["rejected", "expired", "signed", "approved-without-signing"])
def test_a_decided_approval_refuses_the_join_whole(claimed: Store, clock: FakeClock, decided: str) -> None:
    pending(claimed)
    if decided in ("rejected", "expired"):
        claimed.decide_approval("a1", ApprovalStatus(decided), None, T0)
    elif decided == "signed":
        claimed.decide_approval("a1", ApprovalStatus.APPROVED, b"envelope", T0, signing="r1")
        claimed.apply_audited([FinishApproval("a1", "r1")], AuditLog(claimed, clock).sealer("x.signed", {}))
    else:  # by a build before signings were named
        previous_build_decides(claimed, "a1", ApprovalStatus.APPROVED)
    refused_whole(claimed, clock, ApprovalClosed, "wallet w1: approval a1 is no longer open")


def test_a_reopened_approval_is_open_again(claimed: Store, clock: FakeClock) -> None:
    pending(claimed)
    claimed.decide_approval("a1", ApprovalStatus.APPROVED, b"envelope", T0, signing="r1")
    claimed.reopen_approval("a1", b"envelope", "r1")
    join(claimed, clock)
    assert claimed.lookup_idempotent("w1", "k1", H1, T0) is not None


def test_an_unknown_approval_or_another_wallets_is_not_found(claimed: Store, clock: FakeClock) -> None:
    pending(claimed, "b1", wallet_id="w2")
    refused_whole(claimed, clock, NotFound, "approval b1 not found", approval_id="b1")
    refused_whole(claimed, clock, NotFound, "approval zz not found", approval_id="zz")


def test_no_other_change_of_that_approval_with_it(claimed: Store, clock: FakeClock) -> None:
    pending(claimed)
    changes: list[StateChange] = [
        ApprovalStillOpen("w1", "a1"),
        DecideApproval("a1", ApprovalStatus.REJECTED, None, T0),
    ]
    with pytest.raises(InvalidInput, match="approval a1: a condition on it is its only change"):
        claimed.apply_audited(changes, AuditLog(claimed, clock).sealer("approval.rejected", {}, wallet_id="w1"))
    assert claimed.get_approval("a1").status is ApprovalStatus.PENDING
    with pytest.raises(InvalidInput, match="approval_id"):
        claimed.apply_audited([ApprovalStillOpen("w1", "")], AuditLog(claimed, clock).sealer("x", {}))
