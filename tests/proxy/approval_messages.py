"""What the approval-message contract tests share (`test_store_approval_message_contract`,
`test_store_approval_stale_mark_contract`, `test_store_approval_signed_contract`,
`test_store_approval_open_bound_contract`): approvals of a message, the store writes of an escalation as the sign
flow makes them, accepted or refused with nothing written, and a decision as a previous build wrote it."""

from __future__ import annotations

import hashlib

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import ApprovalPending
from parent_proxy.store import dynamodb_attributes as attr
from parent_proxy.store.model import Approval, ApprovalStatus
from parent_proxy.store.protocol import Store
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.store.state_changes import CreateApproval, RecordEvent, StateChange
from tests.proxy.conftest import FakeClock

T0 = 1_700_000_000.0
M1 = hashlib.sha256(b"message one").digest()
M2 = hashlib.sha256(b"message two").digest()


def approval(approval_id: str, message: bytes | None = M1, wallet_id: str = "w1") -> Approval:
    return Approval(approval_id, wallet_id, b'{"request":1}', ApprovalStatus.PENDING, T0, message_hash=message)


def escalate(s: Store, clock: FakeClock, a: Approval, bound: int | None = 100) -> None:
    """What the sign flow writes for an escalation: the request's time, the approval, the record."""
    changes: list[StateChange] = [RecordEvent(a.wallet_id, "request", T0), CreateApproval(a, bound)]
    s.apply_audited(changes, AuditLog(s, clock).sealer("transaction.escalated", {}, wallet_id=a.wallet_id))


def refused(s: Store, clock: FakeClock, a: Approval, open_id: str, bound: int | None = 100) -> None:
    before = (s.pending_approvals(a.wallet_id), s.recent_requests(a.wallet_id, 0.0), s.audit_head())
    with pytest.raises(ApprovalPending, match=f"approval {open_id} of the same message is still open") as pending:
        escalate(s, clock, a, bound)
    assert (pending.value.wallet_id, pending.value.approval_id) == (a.wallet_id, open_id)
    assert (s.pending_approvals(a.wallet_id), s.recent_requests(a.wallet_id, 0.0), s.audit_head()) == before


def previous_build_decides(
    store: Store, approval_id: str, status: ApprovalStatus, signing: str | None = None, wallet_id: str = "w1"
) -> None:
    """The decision as a build before the message marks and the kept places wrote it: the approval (no
    ``counted_signing``) and, on DynamoDB, the pending count one lower (it counted pending approvals only); no mark."""
    decision = None if status is ApprovalStatus.REJECTED else b"yes"
    if isinstance(store, SqliteStore):
        with store._write() as conn:
            conn.execute(
                "UPDATE approvals SET status = ?, decision = ?, decided_at = ?, signing = ? WHERE approval_id = ?",
                (status.value, decision, T0 + 1, signing, approval_id),
            )
        return
    values = {":s": attr.s(status), ":t": attr.n(T0 + 1), ":p": attr.s(ApprovalStatus.PENDING)}
    update = "SET #st = :s, decided_at = :t"
    if decision is not None:
        update, values[":d"] = update + ", decision = :d", attr.b(decision)
    if signing is not None:
        update, values[":g"] = update + ", signing = :g", attr.s(signing)
    key = {"pk": attr.s(f"W#{wallet_id}"), "sk": attr.s(f"AP#{approval_id}")}
    decide = {
        "TableName": store._table,  # type: ignore[attr-defined]
        "Key": key,
        "UpdateExpression": update,
        "ConditionExpression": "#st = :p",
        "ExpressionAttributeNames": {"#st": "status"},
        "ExpressionAttributeValues": values,
    }
    store._transact([{"Update": decide}, store._pending_count_action(wallet_id, -1)])  # type: ignore[attr-defined]
