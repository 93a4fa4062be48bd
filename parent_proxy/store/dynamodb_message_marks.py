"""A new approval's message mark that names an approval no longer open (`parent_proxy.store.dynamodb_approvals`):
the refusal that says so (`StaleMark`), and the attempts that send the transaction again replacing it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from parent_proxy.errors import StoreUnavailable

MAX_MARK_ATTEMPTS = 3
"""A new approval's transaction is sent again this often while the mark of its message turns out to name an
approval that is no longer open (each time conditional on the mark read), then 503."""


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
