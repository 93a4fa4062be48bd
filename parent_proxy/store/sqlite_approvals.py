"""The pending-approval part of `SqliteStore`: escalated requests waiting for the owner, each step also usable
inside a caller's transaction (``_*_in``, for `SqliteStore.apply_audited`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from parent_proxy.errors import (
    AlreadyDecided,
    ApprovalClosed,
    ApprovalPending,
    ApprovalQueueFull,
    ApprovalSigned,
    Conflict,
    NotFound,
)
from parent_proxy.store import validation as v
from parent_proxy.store.model import Approval, ApprovalStatus
from parent_proxy.store.sqlite_limits import SqliteLimits
from parent_proxy.store.state_changes import (
    ApprovalStillOpen,
    DecideApproval,
    FinishApproval,
    ReopenApproval,
    StateChange,
    pending_bounds,
)

_SELECT_APPROVAL = (
    "SELECT approval_id, wallet_id, request_payload, status, created_at, decision, decided_at, signing, message_hash,"
    " signed_answer FROM approvals WHERE "
)
_HOLDER_OF_MESSAGE = (
    "SELECT approval_id, signed_answer IS NOT NULL FROM approvals WHERE wallet_id = ? AND message_hash = ?"
    " AND (status = 'pending' OR (status = 'approved' AND (signing IS NOT NULL OR signed_answer IS NOT NULL)))"
    " ORDER BY signed_answer IS NULL, created_at, approval_id LIMIT 1"
)
"""The approval that holds a wallet's message, a signed one first: signed (approved, its signature recorded), or
open (waiting for the owner, or approved with its signing under way); and whether it is signed (`CreateApproval`)."""
_OPEN_COUNT = (
    "SELECT (SELECT COUNT(*) FROM approvals WHERE wallet_id = ? AND status = 'pending')"
    " + (SELECT COUNT(*) FROM approvals INDEXED BY approvals_signing"
    " WHERE signing IS NOT NULL AND status = 'approved' AND wallet_id = ?)"
)
"""How many of a wallet's approvals are open (`CreateApproval`'s bound): the pending ones by the wallet's index, and
those approved with a signing under way by the partial index of signings under way (a few across all wallets), not
by reading every approval the wallet ever had."""
_IS_OPEN = (
    "SELECT status = 'pending' OR (status = 'approved' AND signing IS NOT NULL)"
    " FROM approvals WHERE approval_id = ? AND wallet_id = ?"
)
"""Whether a wallet's approval is open, as `_HOLDER_OF_MESSAGE` counts it (no row: no such approval)."""


class SqliteApprovals(SqliteLimits):
    """Escalated requests waiting for the owner."""

    def create_approval(self, approval: Approval) -> None:
        a = v.check_approval(approval)
        with self._write() as conn:
            self._create_approval_in(conn, a)

    @classmethod
    def _create_approval_in(cls, conn: sqlite3.Connection, a: Approval) -> None:
        """Insert ``a``; `ApprovalSigned` if an approval of the same wallet and message was signed, `ApprovalPending`
        if one is open (`_HOLDER_OF_MESSAGE`), looked up under the write lock (one writer at a time: exact under
        concurrency, across processes too)."""
        cls._require_wallet(conn, a.wallet_id)
        if a.message_hash is not None:
            row = conn.execute(_HOLDER_OF_MESSAGE, (a.wallet_id, a.message_hash)).fetchone()
            if row is not None:
                raise (ApprovalSigned if row[1] else ApprovalPending)(a.wallet_id, row[0])
        if conn.execute("SELECT 1 FROM approvals WHERE approval_id = ?", (a.approval_id,)).fetchone():
            raise Conflict(f"approval {a.approval_id} already exists")
        conn.execute(
            "INSERT INTO approvals (approval_id, wallet_id, request_payload, status, created_at, decision,"
            " decided_at, message_hash) VALUES (?, ?, ?, 'pending', ?, NULL, NULL, ?)",
            (a.approval_id, a.wallet_id, a.request_payload, a.created_at, a.message_hash),
        )

    @staticmethod
    def _still_open_in(conn: sqlite3.Connection, c: ApprovalStillOpen) -> None:
        """The condition `ApprovalStillOpen`, under the write lock: `ApprovalClosed` unless the wallet's approval is
        open (`_IS_OPEN`); `NotFound` if the wallet has no such approval."""
        row = conn.execute(_IS_OPEN, (c.approval_id, c.wallet_id)).fetchone()
        if row is None:
            raise NotFound(f"approval {c.approval_id} not found")
        if not row[0]:
            raise ApprovalClosed(c.wallet_id, c.approval_id)

    @staticmethod
    def _check_pending_bounds_in(conn: sqlite3.Connection, changes: Sequence[StateChange]) -> None:
        """`ApprovalQueueFull` if a bounded `CreateApproval` left its wallet with more open approvals than its bound
        (pending, or approved with a signing under way, which may return to pending), counted after the
        transaction's changes (inside it, under SQLite's write lock: exact under concurrency; the transaction then
        rolls back)."""
        for wallet_id, bound in pending_bounds(changes).items():
            (pending,) = conn.execute(_OPEN_COUNT, (wallet_id, wallet_id)).fetchone()
            if pending > bound:
                raise ApprovalQueueFull(wallet_id, bound)

    @staticmethod
    def _approval(row: tuple[Any, ...]) -> Approval:
        approval_id, wallet_id, payload, status, created_at, decision, decided_at, signing, message, signed = row
        return Approval(
            approval_id, wallet_id, payload, ApprovalStatus(status), created_at, decision, decided_at, signing, message,
            signed,
        )  # fmt: skip

    def get_approval(self, approval_id: str) -> Approval:
        v.check_id("approval_id", approval_id)
        with self._read() as conn:
            row = conn.execute(_SELECT_APPROVAL + "approval_id = ?", (approval_id,)).fetchone()
        if row is None:
            raise NotFound(f"approval {approval_id} not found")
        return self._approval(row)

    def decide_approval(
        self, approval_id: str, status: ApprovalStatus, decision: bytes | None, now: float, signing: str | None = None
    ) -> Approval:
        now = v.check_approval_decision(approval_id, status, decision, now, signing)
        with self._write() as conn:
            return self._decide_in(conn, DecideApproval(approval_id, status, decision, now, signing))

    @classmethod
    def _decide_in(cls, conn: sqlite3.Connection, d: DecideApproval) -> Approval:
        return cls._update_approval_in(
            conn,
            d.approval_id,
            "UPDATE approvals SET status = ?, decision = ?, decided_at = ?, signing = ?"
            " WHERE approval_id = ? AND status = 'pending'",
            (d.status.value, d.decision, d.now, d.signing, d.approval_id),
            refused="is already {status}",
        )

    def reopen_approval(self, approval_id: str, decision: bytes, signing: str) -> Approval:
        v.check_approval_reopening(approval_id, decision, signing)
        with self._write() as conn:
            return self._reopen_in(conn, ReopenApproval(approval_id, decision, signing))

    @classmethod
    def _reopen_in(cls, conn: sqlite3.Connection, r: ReopenApproval) -> Approval:
        return cls._update_approval_in(
            conn,
            r.approval_id,
            "UPDATE approvals SET status = 'pending', decision = NULL, decided_at = NULL, signing = NULL"
            # a finished signing (signed, or refused by the enclave) left no ``signing``: never reopened
            " WHERE approval_id = ? AND status = 'approved' AND decision = ? AND signing = ?",
            (r.approval_id, r.decision, r.signing),
            refused="is {status}, not approved by this decision for this signing",
        )

    @classmethod
    def _finish_approval_in(cls, conn: sqlite3.Connection, f: FinishApproval) -> Approval:
        return cls._update_approval_in(
            conn,
            f.approval_id,
            "UPDATE approvals SET signing = NULL, signed_answer = ?"
            " WHERE approval_id = ? AND status = 'approved' AND signing = ?",
            (f.answer, f.approval_id, f.signing),
            refused="is {status}, not approved for this signing",
        )

    def stalled_approvals(self, decided_before: float, limit: int) -> list[Approval]:
        decided_before = v.check_stalled_query(decided_before, limit)
        with self._read() as conn:
            rows = conn.execute(
                _SELECT_APPROVAL + "signing IS NOT NULL AND decided_at < ? ORDER BY decided_at, approval_id LIMIT ?",
                (decided_before, limit),
            ).fetchall()
        return [self._approval(r) for r in rows]

    @classmethod
    def _update_approval_in(
        cls, conn: sqlite3.Connection, approval_id: str, sql: str, params: tuple[object, ...], *, refused: str
    ) -> Approval:
        """One conditional update of an approval; `AlreadyDecided` with ``refused`` (formatted with the current
        status) when it changed no row."""
        cur = conn.execute(sql, params)
        row = conn.execute(_SELECT_APPROVAL + "approval_id = ?", (approval_id,)).fetchone()
        if row is None:
            raise NotFound(f"approval {approval_id} not found")
        if cur.rowcount != 1:
            raise AlreadyDecided(f"approval {approval_id} " + refused.format(status=row[3]))
        return cls._approval(row)

    def pending_approvals(self, wallet_id: str) -> list[Approval]:
        v.check_id("wallet_id", wallet_id)
        with self._read() as conn:
            rows = conn.execute(
                _SELECT_APPROVAL + "wallet_id = ? AND status = 'pending' ORDER BY created_at, approval_id",
                (wallet_id,),
            ).fetchall()
        return [self._approval(r) for r in rows]
