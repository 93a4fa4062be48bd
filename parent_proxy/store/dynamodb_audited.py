"""Audited writes of `DynamoStore`: state changes, an audit record and its webhook item in one
``TransactWriteItems`` (`apply_audited`; `DynamoStore.finish_signing` uses the same loop).

The record's seq and hash depend on the audit head at write time, so the transaction carries the head's conditional
move (`DynamoOutboxAudit._audit_actions`): when another appender moved the head in between, only those conditions
fail, and the record is built again from the new head. A failed condition of any other action is that action's
refusal (each part names the error it means), and nothing was written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from parent_proxy.errors import (
    ApprovalClosed,
    Conflict,
    FrozenMeanwhile,
    InvalidInput,
    NotFound,
    StaleOrderSequence,
    StoreUnavailable,
)
from parent_proxy.store import validation as v
from parent_proxy.store.dynamodb_attributes import n, opt_s, order_attributes, order_sequence_of, s
from parent_proxy.store.dynamodb_base import CONDITION_FAILED, ConditionFailed
from parent_proxy.store.dynamodb_idempotency import DynamoIdempotency
from parent_proxy.store.dynamodb_message_marks import mark_attempts
from parent_proxy.store.model import ApprovalStatus, AuditRecord, OutboxItem, OwnerOrder
from parent_proxy.store.protocol import AuditSealer
from parent_proxy.store.state_changes import (
    ApprovalStillOpen,
    CompleteIdempotent,
    CreateApproval,
    DecideApproval,
    FinishApproval,
    RecordEvent,
    ReopenApproval,
    ReplaceAnswer,
    SetFrozen,
    StateChange,
    StillUnfrozen,
)
from parent_proxy.store.validation_changes import check_changes
from parent_proxy.store.validation_outbox import check_outbox_item

MAX_AUDIT_ATTEMPTS = 20
"""An audited write re-reads the audit head this often when concurrent appenders move it."""

Part = tuple[list[Any], Callable[[], Exception]]
"""Transaction actions, and the refusal to raise when one of their conditions fails."""


def _never_refused() -> Exception:
    return StoreUnavailable("dynamodb store unavailable: an unconditional write was refused")


class DynamoAudited(DynamoIdempotency):
    """`apply_audited` and the sealed-transaction loop it shares with `finish_signing`."""

    def apply_audited(
        self, changes: Sequence[StateChange], audit: AuditSealer, webhook: OutboxItem | None = None
    ) -> AuditRecord:
        checked = check_changes(changes)
        item = None if webhook is None else check_outbox_item(webhook)
        result: AuditRecord = mark_attempts(lambda replacing: self._apply_checked(checked, audit, item, replacing))
        return result

    def _apply_checked(
        self,
        checked: Sequence[StateChange],
        audit: AuditSealer,
        item: OutboxItem | None,
        replacing: dict[str, str | None],
    ) -> AuditRecord:
        """One attempt of `apply_audited` (`mark_attempts`: a stale message mark read makes another)."""
        replaced = [self._replace_answer_part(c) for c in checked if isinstance(c, ReplaceAnswer)]
        parts = [
            part
            for c in checked
            if not isinstance(c, ReplaceAnswer)
            for part in (self._create_parts(c, replacing) if isinstance(c, CreateApproval) else self._change_parts(c))
        ]
        parts.extend(self._pending_count_parts(checked))
        if item is not None:
            parts.append(self._enqueue_part(item))
        return self._transact_sealed(parts, audit, optional=replaced)

    def _create_parts(self, change: CreateApproval, replacing: dict[str, str | None]) -> list[Part]:
        """A new approval's parts, its message's mark first (`ApprovalPending` before the rest), replacing a stale
        mark the previous attempt read (``replacing``)."""
        self._require_wallet(change.approval.wallet_id)
        return self._approval_parts(change.approval, replacing.get(change.approval.approval_id))

    def _change_parts(self, change: StateChange) -> list[Part]:
        """The parts that write ``change`` (`DynamoAgentKeys` adds the agent-key changes, several parts each)."""
        if isinstance(change, CreateApproval):
            return self._create_parts(change, {})
        return [self._change_part(change)]

    def _change_part(self, change: StateChange) -> Part:
        match change:
            case SetFrozen():
                return [self._set_frozen_action(change)], lambda: self._frozen_refusal(change)
            case RecordEvent(wallet_id=wallet_id, kind=kind, at=at):
                self._require_wallet(wallet_id)  # wallets are never deleted, so a prior read suffices
                return [self._event_action(kind, wallet_id, at)], _never_refused
            case DecideApproval():
                return self._decide_part(change)
            case ReopenApproval():
                return self._reopen_part(change)
            case FinishApproval():
                return self._finish_part(change)
            case StillUnfrozen():
                return self._still_unfrozen_part(change)
            case ApprovalStillOpen():
                return self._still_open_part(change)
            case CompleteIdempotent(answer=answer):
                return self._complete_part(answer)
        raise InvalidInput("changes", f"{type(change).__name__} is not a state change")

    def _set_frozen_action(self, f: SetFrozen) -> Any:
        """The wallet item's update; an owner order's sequence must be above the item's ``order_sequence`` (absent
        on items written before it existed: no order accepted yet), which it replaces, and its envelope replaces
        the last order's (`order_attributes`)."""
        update: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"pk": s(f"W#{f.wallet_id}"), "sk": s("WALLET")},
            "UpdateExpression": "SET frozen = :f, frozen_reason = :r",
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeValues": {":f": {"BOOL": f.frozen}, ":r": opt_s(f.reason)},
        }
        if f.order_sequence is not None:
            update["UpdateExpression"] += ", order_sequence = :q, order_envelope = :e, order_freeze = :z"
            update["ConditionExpression"] += " AND (attribute_not_exists(order_sequence) OR order_sequence < :q)"
            kept = order_attributes(None if f.order is None else OwnerOrder(f.frozen, f.order))
            update["ExpressionAttributeValues"].update(
                {":q": n(f.order_sequence), ":e": kept["order_envelope"], ":z": kept["order_freeze"]}
            )
        return {"Update": update}

    def _still_unfrozen_part(self, u: StillUnfrozen) -> Part:
        """A ``ConditionCheck`` of the wallet item: not frozen, and its ``order_sequence`` the one read (absent on
        items written before it was kept: 0). In the transaction that records a signature, it orders that record
        after or before any freeze of the wallet, on any host: a freeze written first refuses it. No read first (a
        signed request's path stays one transaction): the wallet was read by the request, and wallets are never
        deleted."""
        same = "order_sequence = :q"
        if u.order_sequence == 0:
            same = f"(attribute_not_exists(order_sequence) OR {same})"
        check = {
            "ConditionCheck": {
                "TableName": self._table,
                "Key": {"pk": s(f"W#{u.wallet_id}"), "sk": s("WALLET")},
                "ConditionExpression": f"frozen = :no AND {same}",
                "ExpressionAttributeValues": {":no": {"BOOL": False}, ":q": n(u.order_sequence)},
            }
        }
        return [check], lambda: FrozenMeanwhile(u.wallet_id)

    def _still_open_part(self, c: ApprovalStillOpen) -> Part:
        """A ``ConditionCheck`` of the approval item: pending, or approved with its signing under way (the open
        approval its message's mark names, `dynamodb_approvals`); the refusal reads it: `NotFound` if the wallet has
        no such approval, else `ApprovalClosed`."""
        key = {"pk": s(f"W#{c.wallet_id}"), "sk": s(f"AP#{c.approval_id}")}
        check = {
            "ConditionCheck": {
                "TableName": self._table,
                "Key": key,
                "ConditionExpression": "#st = :p OR (#st = :a AND attribute_exists(signing))",
                "ExpressionAttributeNames": {"#st": "status"},
                "ExpressionAttributeValues": {":p": s(ApprovalStatus.PENDING), ":a": s(ApprovalStatus.APPROVED)},
            }
        }

        def refusal() -> Exception:
            if self._get(f"W#{c.wallet_id}", f"AP#{c.approval_id}") is None:
                return NotFound(f"approval {c.approval_id} not found")
            return ApprovalClosed(c.wallet_id, c.approval_id)

        return [check], refusal

    def _frozen_refusal(self, f: SetFrozen) -> Exception:
        wallet = self._get(f"W#{f.wallet_id}", "WALLET")
        if wallet is None or f.order_sequence is None:
            return NotFound(f"wallet {f.wallet_id} not found")
        return StaleOrderSequence(f.wallet_id, f.order_sequence, order_sequence_of(wallet))

    def _enqueue_part(self, item: OutboxItem) -> Part:
        self._require_wallet(item.wallet_id)  # wallets are never deleted, so a prior read suffices
        return self._enqueue_actions(item), lambda: Conflict(f"outbox item {item.event_id} already exists")

    def _transact_sealed(self, parts: Sequence[Part], audit: AuditSealer, optional: Sequence[Part] = ()) -> AuditRecord:
        """One transaction of every part's actions and the record ``audit`` builds from the head read just before;
        the first refused part's error is raised; a moved head builds the record again. An ``optional`` part (a
        `ReplaceAnswer`) whose condition fails is no refusal: it is dropped and the rest sent again (its condition
        never holds again once it failed: an escalation's 202 is written once, before its approval exists)."""
        actions = [action for part_actions, _ in parts for action in part_actions]
        refusals = [refusal for part_actions, refusal in parts for _ in part_actions]
        kept = list(optional)
        for _ in range(MAX_AUDIT_ATTEMPTS):
            owners = [part for part in kept for _ in part[0]]
            head = self.audit_head()
            record = audit(head)
            if not isinstance(record, AuditRecord):
                raise InvalidInput("audit", "must build an AuditRecord")
            v.check_extends(record, None if head is None else (head.seq, head.hash))  # as SQLite: no retry for it
            try:
                self._transact_recorded([*actions, *(a for part_actions, _ in kept for a in part_actions)], record)
            except ConditionFailed as exc:
                failed = [i for i, reason in enumerate(exc.reasons) if reason == CONDITION_FAILED]
                refused = [refusals[i] for i in failed if i < len(actions)]
                if refused:
                    raise refused[0]() from exc
                dropped = [owners[i - len(actions)] for i in failed if 0 <= i - len(actions) < len(owners)]
                kept = [part for part in kept if not any(part is d for d in dropped)]
                continue  # an optional part left out, or the audit head's conditions: another appender moved it
            return record
        raise StoreUnavailable(f"audit append lost the race for the head {MAX_AUDIT_ATTEMPTS} times")
