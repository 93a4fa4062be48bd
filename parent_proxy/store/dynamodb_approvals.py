"""The pending-approval part of `DynamoStore`: an approval lives under its wallet (``W#<wallet>/AP#<id>``) with a
pointer item ``A#<id>/APPROVAL`` naming the wallet, written together in one transaction. ``W#<wallet>/APPROVALS``
counts the wallet's pending approvals (``pending``): every write that makes an approval pending or ends its waiting
changes it in the same transaction, so a bound on the queue (`CreateApproval.max_pending`) is a condition on it.

An approval approved for a signing carries it (``signing``) until that signing finishes or the approval is reopened,
and ``SIGNING/<approval>`` (``wallet_id``, ``decided_at``) marks it meanwhile, written and deleted in the same
transactions, so that `stalled_approvals` reads one small partition (the approvals whose signing is under way or
whose process died) instead of scanning the table. Every condition is on the approval item itself; the marker is
only a way to find it.

The pending count is, precisely, the count of the wallet's *open* approvals: pending, or approved with a signing
under way (which may return to pending). An approval approved for a signing by this build carries that signing's id in
``counted_signing`` too: it keeps its place in the count until the signing finishes (-1) or it is reopened (0). One
approved by a build before (no ``counted_signing`` for its signing) left the count when it was approved, and is
counted again when it is reopened (+1), as that build did. So the bound a creation checks holds at all times
(`CreateApproval`), and a return to pending never exceeds it. (A host of the previous build, during a rolling update,
that finishes or reopens an approval this build approved leaves the count one too high: the queue refuses sooner,
never later.)

An approval with a message hash holds its message with a mark (`parent_proxy.store.dynamodb_message_marks`) while it
is open, and for good once it is signed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from parent_proxy.errors import AlreadyDecided, ApprovalQueueFull, Conflict, NotFound, StoreUnavailable
from parent_proxy.store import validation as v
from parent_proxy.store.dynamodb_attributes import b, get_b, get_f, get_opt_b, get_opt_f, get_opt_s, get_s, n, opt_b, s
from parent_proxy.store.dynamodb_base import CONDITION_FAILED, WRITE_ID, ConditionFailed, Item, new_write_id
from parent_proxy.store.dynamodb_message_marks import DynamoMessageMarks, mark_attempts
from parent_proxy.store.model import Approval, ApprovalStatus
from parent_proxy.store.state_changes import (
    CreateApproval,
    DecideApproval,
    FinishApproval,
    ReopenApproval,
    StateChange,
    pending_bounds,
)

_DECIDED = "is already {status}"
_NOT_APPROVED_BY = "is {status}, not approved by this decision for this signing"
_NOT_SIGNING = "is {status}, not approved for this signing"
SIGNING_MARKS = "SIGNING"
"""The partition of the marks of approvals whose signing is under way (see the module docstring)."""

Part = tuple[list[Any], Callable[[], Exception]]


def _queue_full(wallet_id: str, bound: int | None) -> Exception:
    if bound is None:
        return StoreUnavailable("dynamodb store unavailable: an unconditional count update was refused")
    return ApprovalQueueFull(wallet_id, bound)


def _decision(d: DecideApproval) -> dict[str, Any]:
    """The update of `decide_approval`: only a pending approval (``#st`` its status, ``#w``/``:w`` its write id);
    approved for a signing, that signing keeps the approval's place in the count (``counted_signing``)."""
    values = {":s": s(d.status), ":d": opt_b(d.decision), ":t": n(d.now), ":p": s(ApprovalStatus.PENDING)}
    update = "SET #st = :s, decision = :d, decided_at = :t, #w = :w"
    if d.signing is not None:
        update, values[":g"] = update + ", signing = :g, counted_signing = :g", s(d.signing)
    return {"update": update, "condition": "#st = :p", "values": values}


def _counted_condition(condition: str, counted: bool) -> str:
    """``condition`` and that the approval's place is (``counted``) or is not kept for the signing ``:g``, as read
    before the write (`DynamoApprovals._counted`): the count's change follows from it."""
    if counted:
        return condition + " AND counted_signing = :g"
    return condition + " AND (attribute_not_exists(counted_signing) OR counted_signing <> :g)"


def _reopening(r: ReopenApproval, counted: bool) -> dict[str, Any]:
    """The update of `reopen_approval`: only an approval approved by this decision for this signing (a finished
    signing, signed or refused by the enclave, left none; names as `_decision`), its place kept or not as read
    (``counted``)."""
    return {
        "update": "SET #st = :p, #w = :w REMOVE decision, decided_at, signing, counted_signing",
        "condition": _counted_condition("#st = :a AND decision = :d AND signing = :g", counted),
        "values": {
            ":p": s(ApprovalStatus.PENDING),
            ":a": s(ApprovalStatus.APPROVED),
            ":d": b(r.decision),
            ":g": s(r.signing),
        },
    }


def _finishing(f: FinishApproval, counted: bool) -> dict[str, Any]:
    """The update of a `FinishApproval`: only an approval approved for this signing, its place kept or not as read
    (``counted``); with a signed answer, kept (``signed_answer``). Names as `_decision`."""
    values = {":a": s(ApprovalStatus.APPROVED), ":g": s(f.signing)}
    update = "SET #w = :w"
    if f.answer is not None:
        update, values[":ans"] = update + ", signed_answer = :ans", b(f.answer)
    return {
        "update": update + " REMOVE signing, counted_signing",
        "condition": _counted_condition("#st = :a AND signing = :g", counted),
        "values": values,
    }


class DynamoApprovals(DynamoMessageMarks):
    """Escalated requests waiting for the owner."""

    # -- pending approvals ----------------------------------------------------------------------------------
    def create_approval(self, approval: Approval) -> None:
        a = v.check_approval(approval)
        mark_attempts(lambda replacing: self._create_approval(a, replacing.get(a.approval_id)))

    def _create_approval(self, a: Approval, replacing: str | None) -> None:
        self._require_wallet(a.wallet_id)
        parts = self._approval_parts(a, replacing)
        refusals = [refusal for actions, refusal in parts for _ in actions]
        try:
            self._transact([*(x for actions, _ in parts for x in actions), self._pending_count_action(a.wallet_id, +1)])
        except ConditionFailed as exc:
            failed = [i for i, reason in enumerate(exc.reasons) if reason == CONDITION_FAILED and i < len(refusals)]
            raise (refusals[failed[0]]() if failed else Conflict(f"approval {a.approval_id} refused")) from exc

    def _approval_parts(self, a: Approval, replacing: str | None = None) -> list[Part]:
        """The writes of a new approval, each with its refusal: its message's mark (with a message hash: only if no
        approval holds that message, else `ApprovalSigned` or `ApprovalPending`, `_mark_holder`; with ``replacing``,
        over the stale mark naming that approval, `_new_mark`), then the pointer and the approval, both only if new
        (`Conflict`; its count: `_pending_count_parts`)."""
        full = {
            "pk": s(f"W#{a.wallet_id}"),
            "sk": s(f"AP#{a.approval_id}"),
            "request_payload": b(a.request_payload),
            "status": s(ApprovalStatus.PENDING),
            "created_at": n(a.created_at),
        }
        pointer = {"pk": s(f"A#{a.approval_id}"), "sk": s("APPROVAL"), "wallet_id": s(a.wallet_id)}
        new = "attribute_not_exists(pk)"
        parts: list[Part] = []
        if a.message_hash is not None:
            full["message_hash"] = pointer["message_hash"] = b(a.message_hash)
            mark = {**self._message_mark_key(a.wallet_id, a.message_hash), "approval_id": s(a.approval_id)}
            refusal = partial(self._mark_holder, a.approval_id, a.wallet_id, a.message_hash)
            parts.append((self._new_mark(a.wallet_id, mark, replacing), refusal))
        approval = [
            {"Put": {"TableName": self._table, "Item": pointer, "ConditionExpression": new}},
            {"Put": {"TableName": self._table, "Item": full, "ConditionExpression": new}},
        ]
        parts.append((approval, lambda: Conflict(f"approval {a.approval_id} already exists")))
        return parts

    def _pending_count_action(self, wallet_id: str, delta: int, at_most: int | None = None) -> Any:
        """Add ``delta`` to the wallet's count of pending approvals; with ``at_most``, only if the count is at most
        that before (an absent count is zero, which `_pending_count_parts` checks)."""
        update: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"pk": s(f"W#{wallet_id}"), "sk": s("APPROVALS")},
            "UpdateExpression": "ADD pending :d",
            "ExpressionAttributeValues": {":d": n(delta)},
        }
        if at_most is not None:
            update["ConditionExpression"] = "attribute_not_exists(pending) OR pending <= :most"
            update["ExpressionAttributeValues"][":most"] = n(at_most)
        return {"Update": update}

    def _pending_count_parts(self, changes: Sequence[StateChange]) -> list[tuple[list[Any], Callable[[], Exception]]]:
        """One count update per wallet whose open approvals ``changes`` add or end (a transaction may not write one
        item twice), none where they add up to nothing: +1 per new approval, -1 per one decided but approved for a
        signing (which keeps its place), -1 per signing finished and 0 per reopening of an approval whose place was
        kept (`_counted`), 0 and +1 for one approved before places were kept; under a bound
        (`state_changes.pending_bounds`), only if the count after it stays within it, else `ApprovalQueueFull`."""
        deltas: dict[str, int] = {}
        for change in changes:
            match change:
                case CreateApproval(approval=a):
                    deltas[a.wallet_id] = deltas.get(a.wallet_id, 0) + 1
                case DecideApproval(approval_id=approval_id, status=status, signing=signing):
                    kept = status is ApprovalStatus.APPROVED and signing is not None
                    wallet_id = self._approval_wallet(approval_id)
                    deltas[wallet_id] = deltas.get(wallet_id, 0) + (0 if kept else -1)
                case ReopenApproval(approval_id=approval_id, signing=signing):
                    wallet_id = self._approval_wallet(approval_id)
                    deltas[wallet_id] = deltas.get(wallet_id, 0) + (0 if self._counted(approval_id, signing) else 1)
                case FinishApproval(approval_id=approval_id, signing=signing):
                    wallet_id = self._approval_wallet(approval_id)
                    deltas[wallet_id] = deltas.get(wallet_id, 0) - (1 if self._counted(approval_id, signing) else 0)
        bounds = pending_bounds(changes)
        parts: list[tuple[list[Any], Callable[[], Exception]]] = []
        for wallet_id, delta in deltas.items():
            bound = bounds.get(wallet_id)
            if delta == 0 and bound is None:
                continue
            if bound is not None and delta > bound:
                raise ApprovalQueueFull(wallet_id, bound)
            action = self._pending_count_action(wallet_id, delta, None if bound is None else bound - delta)
            parts.append(([action], partial(_queue_full, wallet_id, bound)))
        return parts

    def _counted(self, approval_id: str, signing: str) -> bool:
        """Whether the approval keeps its place in the count for ``signing`` (approved for it by this build:
        ``counted_signing``), as read now; the write that ends or reopens it is conditional on the same
        (`_counted_condition`), so the count's change is the one its write makes."""
        _wallet_id, item = self._approval_item(approval_id)
        return get_opt_s(item, "counted_signing") == signing

    def _approval_item(self, approval_id: str) -> tuple[str, Item]:
        pointer = self._get(f"A#{approval_id}", "APPROVAL")
        full = None if pointer is None else self._get(f"W#{get_s(pointer, 'wallet_id')}", f"AP#{approval_id}")
        if pointer is None or full is None:
            raise NotFound(f"approval {approval_id} not found")
        return get_s(pointer, "wallet_id"), full

    @staticmethod
    def _approval(wallet_id: str, i: Item) -> Approval:
        return Approval(
            get_s(i, "sk")[3:],
            wallet_id,
            get_b(i, "request_payload"),
            ApprovalStatus(get_s(i, "status")),
            get_f(i, "created_at"),
            get_opt_b(i, "decision"),
            get_opt_f(i, "decided_at"),
            get_opt_s(i, "signing"),
            get_opt_b(i, "message_hash"),
            get_opt_b(i, "signed_answer"),
        )

    def get_approval(self, approval_id: str) -> Approval:
        v.check_id("approval_id", approval_id)
        return self._approval(*self._approval_item(approval_id))

    def decide_approval(
        self, approval_id: str, status: ApprovalStatus, decision: bytes | None, now: float, signing: str | None = None
    ) -> Approval:
        now = v.check_approval_decision(approval_id, status, decision, now, signing)
        d = DecideApproval(approval_id, status, decision, now, signing)
        return self._apply_approval_change(
            d,
            self._decide_part(d),
            lambda a: replace(a, status=status, decision=decision, decided_at=now, signing=signing),
        )

    def reopen_approval(self, approval_id: str, decision: bytes, signing: str) -> Approval:
        v.check_approval_reopening(approval_id, decision, signing)
        r = ReopenApproval(approval_id, decision, signing)
        return self._apply_approval_change(
            r,
            self._reopen_part(r),
            lambda a: replace(a, status=ApprovalStatus.PENDING, decision=None, decided_at=None, signing=None),
        )

    def stalled_approvals(self, decided_before: float, limit: int) -> list[Approval]:
        decided_before = v.check_stalled_query(decided_before, limit)
        marks = [m for m in self._query(SIGNING_MARKS) if get_f(m, "decided_at") < decided_before]
        marks.sort(key=lambda m: (get_f(m, "decided_at"), get_s(m, "sk")))
        stalled: list[Approval] = []
        for mark in marks:  # the approval as it is now (a mark is only a pointer; its signing may have ended)
            if len(stalled) == limit:
                break
            item = self._get(f"W#{get_s(mark, 'wallet_id')}", f"AP#{get_s(mark, 'sk')}")
            approval = None if item is None else self._approval(get_s(mark, "wallet_id"), item)
            # Listed only if the item itself is still stalled: its signing may have ended and a new one begun
            # between the query and this read (reopened by another host's sweep, approved again), as SQLite's
            # one query never sees.
            if approval is None or approval.signing is None or approval.decided_at is None:
                continue
            if approval.decided_at < decided_before:
                stalled.append(approval)
        return stalled

    def _apply_approval_change(
        self,
        change: DecideApproval | ReopenApproval,
        part: tuple[list[Any], Callable[[], Exception]],
        written: Callable[[Approval], Approval],
    ) -> Approval:
        """Write one approval part on its own: a transaction of the approval and its wallet's pending count. Returns
        the approval as this write left it (``written`` of the approval read before: its condition held, and the
        rest of an approval never changes), so a failed read after a stored decision cannot turn it into a 503. A
        resend after a lost answer is the same transaction (botocore gives ``TransactWriteItems`` one idempotency
        token per call, and DynamoDB answers a token it applied with success), never a refusal of itself."""
        before = self.get_approval(change.approval_id)
        actions, refusal = part
        count_actions = [a for count, _ in self._pending_count_parts([change]) for a in count]
        try:
            self._transact([*actions, *count_actions])
        except ConditionFailed as exc:
            raise refusal() from exc
        return written(before)

    def _decide_part(self, d: DecideApproval) -> tuple[list[Any], Callable[[], Exception]]:
        """The transaction actions of `decide_approval` (for `DynamoAudited.apply_audited`), and its refusal: only
        a pending approval (its count: `_pending_count_parts`); approved for a signing, its mark."""
        actions, refusal = self._update_part(d.approval_id, **_decision(d), refused=_DECIDED)
        if d.status is not ApprovalStatus.APPROVED or d.signing is None:  # it waits no longer, nor is being signed
            actions.extend(self._message_mark_action(d.approval_id, held=False))
        if d.signing is not None:
            mark = {
                "pk": s(SIGNING_MARKS),
                "sk": s(d.approval_id),
                "wallet_id": s(self._approval_wallet(d.approval_id)),
                "decided_at": n(d.now),
            }
            actions.append({"Put": {"TableName": self._table, "Item": mark}})
        return actions, refusal

    def _reopen_part(self, r: ReopenApproval) -> tuple[list[Any], Callable[[], Exception]]:
        """The transaction actions of `reopen_approval` (for `DynamoAudited.apply_audited`), and its refusal: only
        an approval approved by this decision for this signing (its count: `_pending_count_parts`); its mark goes."""
        reopening = _reopening(r, self._counted(r.approval_id, r.signing))
        actions, refusal = self._update_part(r.approval_id, **reopening, refused=_NOT_APPROVED_BY)
        mark = self._message_mark_action(r.approval_id, held=True)
        return [*actions, self._unmark_signing_action(r.approval_id), *mark], refusal

    def _finish_part(self, f: FinishApproval) -> tuple[list[Any], Callable[[], Exception]]:
        """The transaction actions of a `FinishApproval` (`DynamoAudited.apply_audited`, `finish_signing`), and its
        refusal: only an approval approved for this signing (its count: `_pending_count_parts`); its mark goes, but
        for a signature (``answer``), which holds its message for good."""
        finishing = _finishing(f, self._counted(f.approval_id, f.signing))
        actions, refusal = self._update_part(f.approval_id, **finishing, refused=_NOT_SIGNING)
        mark = self._message_mark_action(f.approval_id, held=f.answer is not None)
        return [*actions, self._unmark_signing_action(f.approval_id), *mark], refusal

    def _unmark_signing_action(self, approval_id: str) -> Any:
        return {"Delete": {"TableName": self._table, "Key": {"pk": s(SIGNING_MARKS), "sk": s(approval_id)}}}

    def _update_part(
        self,
        approval_id: str,
        *,
        update: str,
        condition: str,
        values: dict[str, Any],
        refused: str,
    ) -> tuple[list[Any], Callable[[], Exception]]:
        wallet_id = self._approval_wallet(approval_id)
        action = {
            "Update": {
                "TableName": self._table,
                "Key": {"pk": s(f"W#{wallet_id}"), "sk": s(f"AP#{approval_id}")},
                "UpdateExpression": update,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": {"#st": "status", "#w": WRITE_ID},
                "ExpressionAttributeValues": {**values, ":w": s(new_write_id())},
            }
        }

        def refusal() -> Exception:
            status = self.get_approval(approval_id).status
            return AlreadyDecided(f"approval {approval_id} " + refused.format(status=status))

        return [action], refusal

    def _approval_wallet(self, approval_id: str) -> str:
        pointer = self._get(f"A#{approval_id}", "APPROVAL")
        if pointer is None:
            raise NotFound(f"approval {approval_id} not found")
        return get_s(pointer, "wallet_id")

    def pending_approvals(self, wallet_id: str) -> list[Approval]:
        v.check_id("wallet_id", wallet_id)
        approvals = [self._approval(wallet_id, i) for i in self._query(f"W#{wallet_id}", prefix="AP#")]
        pending = [a for a in approvals if a.status == ApprovalStatus.PENDING]
        return sorted(pending, key=lambda a: (a.created_at, a.approval_id))
