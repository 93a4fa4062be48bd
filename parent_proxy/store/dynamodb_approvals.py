"""The pending-approval part of `DynamoStore`: an approval lives under its wallet (``W#<wallet>/AP#<id>``) with a
pointer item ``A#<id>/APPROVAL`` naming the wallet, written together in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from parent_proxy.errors import AlreadyDecided, Conflict, NotFound, StoreUnavailable
from parent_proxy.store import validation as v
from parent_proxy.store.dynamodb_base import (
    WRITE_ID,
    ConditionFailed,
    Item,
    b,
    get_b,
    get_f,
    get_opt_b,
    get_opt_f,
    get_s,
    n,
    new_write_id,
    opt_b,
    s,
)
from parent_proxy.store.dynamodb_limits import DynamoLimits
from parent_proxy.store.model import Approval, ApprovalStatus, DecideApproval, ReopenApproval

_DECIDED = "is already {status}"
_NOT_APPROVED_BY = "is {status}, not approved by this decision"


def _decision(d: DecideApproval) -> dict[str, Any]:
    """The update of `decide_approval`: only a pending approval (``#st`` its status, ``#w``/``:w`` its write id)."""
    return {
        "update": "SET #st = :s, decision = :d, decided_at = :t, #w = :w",
        "condition": "#st = :p",
        "values": {":s": s(d.status), ":d": opt_b(d.decision), ":t": n(d.now), ":p": s(ApprovalStatus.PENDING)},
    }


def _reopening(r: ReopenApproval) -> dict[str, Any]:
    """The update of `reopen_approval`: only an approval approved by this decision (names as `_decision`)."""
    return {
        "update": "SET #st = :p, #w = :w REMOVE decision, decided_at",
        "condition": "#st = :a AND decision = :d",
        "values": {":p": s(ApprovalStatus.PENDING), ":a": s(ApprovalStatus.APPROVED), ":d": b(r.decision)},
    }


class DynamoApprovals(DynamoLimits):
    """Escalated requests waiting for the owner."""

    # -- pending approvals ----------------------------------------------------------------------------------
    def create_approval(self, approval: Approval) -> None:
        a = v.check_approval(approval)
        self._require_wallet(a.wallet_id)
        try:
            self._transact(self._approval_actions(a))
        except ConditionFailed as exc:
            raise Conflict(f"approval {a.approval_id} already exists") from exc

    def _approval_actions(self, a: Approval) -> list[Any]:
        """Put the pointer and the approval, both only if new."""
        full = {
            "pk": s(f"W#{a.wallet_id}"),
            "sk": s(f"AP#{a.approval_id}"),
            "request_payload": b(a.request_payload),
            "status": s(ApprovalStatus.PENDING),
            "created_at": n(a.created_at),
        }
        pointer = {"pk": s(f"A#{a.approval_id}"), "sk": s("APPROVAL"), "wallet_id": s(a.wallet_id)}
        new = "attribute_not_exists(pk)"
        return [
            {"Put": {"TableName": self._table, "Item": pointer, "ConditionExpression": new}},
            {"Put": {"TableName": self._table, "Item": full, "ConditionExpression": new}},
        ]

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
        )

    def get_approval(self, approval_id: str) -> Approval:
        v.check_id("approval_id", approval_id)
        return self._approval(*self._approval_item(approval_id))

    def decide_approval(self, approval_id: str, status: ApprovalStatus, decision: bytes | None, now: float) -> Approval:
        now = v.check_approval_decision(approval_id, status, decision, now)
        return self._update_approval(
            approval_id, **_decision(DecideApproval(approval_id, status, decision, now)), refused=_DECIDED
        )

    def _decide_part(self, d: DecideApproval) -> tuple[list[Any], Callable[[], Exception]]:
        """The transaction action of `decide_approval` (for `DynamoAudited.apply_audited`), and its refusal."""
        return self._update_part(d.approval_id, **_decision(d), refused=_DECIDED)

    def _reopen_part(self, r: ReopenApproval) -> tuple[list[Any], Callable[[], Exception]]:
        """The transaction action of `reopen_approval` (for `DynamoAudited.apply_audited`), and its refusal."""
        return self._update_part(r.approval_id, **_reopening(r), refused=_NOT_APPROVED_BY)

    def _update_part(
        self, approval_id: str, *, update: str, condition: str, values: dict[str, Any], refused: str
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

    def reopen_approval(self, approval_id: str, decision: bytes) -> Approval:
        v.check_id("approval_id", approval_id)
        v.check_blob("decision", decision)
        return self._update_approval(
            approval_id, **_reopening(ReopenApproval(approval_id, decision)), refused=_NOT_APPROVED_BY
        )

    def _approval_wallet(self, approval_id: str) -> str:
        pointer = self._get(f"A#{approval_id}", "APPROVAL")
        if pointer is None:
            raise NotFound(f"approval {approval_id} not found")
        return get_s(pointer, "wallet_id")

    def _update_approval(
        self, approval_id: str, *, update: str, condition: str, values: dict[str, Any], refused: str
    ) -> Approval:
        """One conditional update of an approval (``#st`` names its status, ``#w``/``:w`` its write id); returns
        the approval as this update left it, read from the write's own answer (a resend after a lost response is
        this write, see `_write_once`); `AlreadyDecided` with ``refused`` (formatted with the current status) when
        the condition does not hold."""
        wallet_id, write_id = self._approval_wallet(approval_id), new_write_id()
        request = {
            "TableName": self._table,
            "Key": {"pk": s(f"W#{wallet_id}"), "sk": s(f"AP#{approval_id}")},
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#st": "status", "#w": WRITE_ID},
            "ExpressionAttributeValues": {**values, ":w": s(write_id)},
            "ReturnValues": "ALL_NEW",
        }
        try:
            stored = self._write_once("update_item", request, write_id)
        except ConditionFailed as exc:
            if exc.item is None:
                raise NotFound(f"approval {approval_id} not found") from exc
            status = get_s(exc.item, "status")
            raise AlreadyDecided(f"approval {approval_id} " + refused.format(status=status)) from exc
        if stored is None:
            raise StoreUnavailable(f"approval {approval_id}: the update returned no item")
        return self._approval(wallet_id, stored)

    def pending_approvals(self, wallet_id: str) -> list[Approval]:
        v.check_id("wallet_id", wallet_id)
        approvals = [self._approval(wallet_id, i) for i in self._query(f"W#{wallet_id}", prefix="AP#")]
        pending = [a for a in approvals if a.status == ApprovalStatus.PENDING]
        return sorted(pending, key=lambda a: (a.created_at, a.approval_id))
