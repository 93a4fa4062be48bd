"""What the approval-message contract tests share (`test_store_approval_message_contract`,
`test_store_approval_stale_mark_contract`): approvals of a message, and the store writes of an escalation as the sign
flow makes them, accepted or refused with nothing written."""

from __future__ import annotations

import hashlib

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import ApprovalPending
from parent_proxy.store.model import Approval, ApprovalStatus
from parent_proxy.store.protocol import Store
from parent_proxy.store.state_changes import CreateApproval, RecordEvent
from tests.proxy.conftest import FakeClock

T0 = 1_700_000_000.0
M1 = hashlib.sha256(b"message one").digest()
M2 = hashlib.sha256(b"message two").digest()


def approval(approval_id: str, message: bytes | None = M1, wallet_id: str = "w1") -> Approval:
    return Approval(approval_id, wallet_id, b'{"request":1}', ApprovalStatus.PENDING, T0, message_hash=message)


def escalate(s: Store, clock: FakeClock, a: Approval, bound: int | None = 100) -> None:
    """What the sign flow writes for an escalation: the request's time, the approval, the record."""
    changes = [RecordEvent(a.wallet_id, "request", T0), CreateApproval(a, bound)]
    s.apply_audited(changes, AuditLog(s, clock).sealer("transaction.escalated", {}, wallet_id=a.wallet_id))


def refused(s: Store, clock: FakeClock, a: Approval, open_id: str, bound: int | None = 100) -> None:
    before = (s.pending_approvals(a.wallet_id), s.recent_requests(a.wallet_id, 0.0), s.audit_head())
    with pytest.raises(ApprovalPending, match=f"approval {open_id} of the same message is still open") as pending:
        escalate(s, clock, a, bound)
    assert (pending.value.wallet_id, pending.value.approval_id) == (a.wallet_id, open_id)
    assert (s.pending_approvals(a.wallet_id), s.recent_requests(a.wallet_id, 0.0), s.audit_head()) == before
