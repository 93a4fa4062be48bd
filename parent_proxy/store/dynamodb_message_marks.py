"""The message marks of `DynamoStore`'s approvals (`parent_proxy.store.dynamodb_approvals`): ``W#<wallet>/AM#<message
hash hex>`` (``approval_id``) names the approval that holds a wallet's message, so that an escalation of the same
message makes no second approval.

The mark is put with a new approval, only if absent (a single conditional write); it is kept while that approval is
pending or approved with its signing under way, and for good once its signing recorded a signature (the approval's
``signed_answer``: `FinishApproval.answer`); it is deleted by the write that ends it otherwise (a rejection, an
enclave refusal's `FinishApproval`; an approval decided without a signing by a build before), and put again by a
reopening (the same item in the usual case). A new approval whose mark is held is refused naming the holder:
`ApprovalSigned` if the holder was signed, `ApprovalPending` if it is open (`DynamoMessageMarks._mark_holder`).

A mark left behind by a write that did not delete it (a host of a build before the marks decided the approval, or of
a build before the signed answers finished its signing: a rolling update, or a rollback) names an approval that is
neither open nor signed; a new approval of that message then replaces it (`StaleMark`: conditionally, on the mark
still naming that approval and that approval still neither, in the new approval's own transaction) instead of
joining an approval that can never be decided again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from parent_proxy.errors import ApprovalPending, ApprovalSigned, NotFound, StoreUnavailable
from parent_proxy.store.dynamodb_attributes import get_opt_b, get_s, s
from parent_proxy.store.dynamodb_base import Item
from parent_proxy.store.dynamodb_limits import DynamoLimits
from parent_proxy.store.model import ApprovalStatus

MAX_MARK_ATTEMPTS = 3
"""A new approval's transaction is sent again this often while the mark of its message turns out to name an
approval that is no longer open (each time conditional on the mark read), then 503."""
MESSAGE_MARK = "AM#"
"""The sort-key prefix of a wallet's mark of one message (see the module docstring)."""
_NEITHER_OPEN_NOR_SIGNED = (
    "attribute_not_exists(pk) OR (#st <> :p AND attribute_not_exists(signing) AND attribute_not_exists(signed_answer))"
)
"""An approval item that holds no message: none, or neither pending, nor approved with a signing under way, nor
signed."""


class StaleMark(Exception):
    """The mark of ``approval_id``'s message names ``holder``, which is no longer open (None: no mark any more):
    send the transaction again, replacing that mark (`DynamoApprovals._approval_parts`). Never leaves the store."""

    def __init__(self, approval_id: str, holder: str | None) -> None:
        super().__init__(approval_id)
        self.approval_id, self.holder = approval_id, holder


def mark_attempts(write: Callable[[dict[str, str | None]], Any]) -> Any:
    """``write(replacing)`` until no `StaleMark` (``replacing``: a new approval's id -> the stale holder its mark
    names), at most `MAX_MARK_ATTEMPTS` times; then `StoreUnavailable`, nothing written."""
    replacing: dict[str, str | None] = {}
    for _ in range(MAX_MARK_ATTEMPTS):
        try:
            return write(replacing)
        except StaleMark as stale:
            replacing[stale.approval_id] = stale.holder
    raise StoreUnavailable("dynamodb store unavailable: the mark of this message kept changing; nothing was written")


class DynamoMessageMarks(DynamoLimits):
    """The marks' writes, and the refusal of a new approval whose mark is held."""

    @staticmethod
    def _message_mark_key(wallet_id: str, message_hash: bytes) -> dict[str, Any]:
        return {"pk": s(f"W#{wallet_id}"), "sk": s(MESSAGE_MARK + message_hash.hex())}

    def _new_mark(self, wallet_id: str, mark: Item, replacing: str | None) -> list[Any]:
        """The mark of a new approval: put only if absent; with ``replacing``, put over the one naming that stale
        approval, only if it still names it and that approval is still neither open nor signed (a reopening between
        the read and this write puts the same mark back, naming the same approval)."""
        if replacing is None:
            new = "attribute_not_exists(pk)"
            return [{"Put": {"TableName": self._table, "Item": mark, "ConditionExpression": new}}]
        put = {
            "TableName": self._table,
            "Item": mark,
            "ConditionExpression": "approval_id = :h",
            "ExpressionAttributeValues": {":h": s(replacing)},
        }
        check = {
            "TableName": self._table,
            "Key": {"pk": s(f"W#{wallet_id}"), "sk": s(f"AP#{replacing}")},
            "ConditionExpression": _NEITHER_OPEN_NOR_SIGNED,
            "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": {":p": s(ApprovalStatus.PENDING)},
        }
        return [{"Put": put}, {"ConditionCheck": check}]

    def _mark_holder(self, approval_id: str, wallet_id: str, message_hash: bytes) -> Exception:
        """The refusal of new approval ``approval_id`` whose message's mark is held: `ApprovalSigned` naming its
        holder if that was signed, `ApprovalPending` while it is open; else `StaleMark` (the caller sends the
        transaction again, replacing it)."""
        mark = self._get(f"W#{wallet_id}", MESSAGE_MARK + message_hash.hex())
        if mark is None:  # the open approval ended between the write and this read: nothing written, try again
            return StaleMark(approval_id, None)
        holder = get_s(mark, "approval_id")
        item = self._get(f"W#{wallet_id}", f"AP#{holder}")
        if item is None:
            return StaleMark(approval_id, holder)
        status = ApprovalStatus(get_s(item, "status"))
        if status is ApprovalStatus.APPROVED and get_opt_b(item, "signed_answer") is not None:
            return ApprovalSigned(wallet_id, holder)
        if status is ApprovalStatus.PENDING or (status is ApprovalStatus.APPROVED and "signing" in item):
            return ApprovalPending(wallet_id, holder)
        return StaleMark(approval_id, holder)

    def _message_mark_action(self, approval_id: str, *, held: bool) -> list[Any]:
        """The approval's message mark put (``held``, naming it) or deleted; none for an approval stored without a
        message hash (before it was kept)."""
        pointer = self._get(f"A#{approval_id}", "APPROVAL")
        if pointer is None:
            raise NotFound(f"approval {approval_id} not found")
        message_hash = get_opt_b(pointer, "message_hash")
        if message_hash is None:
            return []
        key = self._message_mark_key(get_s(pointer, "wallet_id"), message_hash)
        if held:
            return [{"Put": {"TableName": self._table, "Item": {**key, "approval_id": s(approval_id)}}}]
        return [{"Delete": {"TableName": self._table, "Key": key}}]
