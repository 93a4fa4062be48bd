"""The idempotency part of `SqliteStore`: one record per wallet and key, claimed (in progress), completed with the
stored answer, or abandoned. The claim and the completion are also steps of the signing path's two transactions
(``_claim_in``, ``_complete_in``: `SqliteStore.begin_signing`, `SqliteStore.finish_signing`) and of
`SqliteStore.apply_audited` (`CompleteIdempotent`)."""

from __future__ import annotations

import sqlite3

from parent_proxy.errors import Conflict, IdempotencyInProgress, IdempotencyMismatch, NotFound
from parent_proxy.store import validation as v
from parent_proxy.store.model import IdempotencyRecord, IdempotencyStatus, IdempotentAnswer
from parent_proxy.store.sqlite_approvals import SqliteApprovals


class SqliteIdempotency(SqliteApprovals):
    """Idempotency records (the ``idempotency`` table)."""

    # -- idempotency ----------------------------------------------------------------------------------------
    @staticmethod
    def _existing(
        conn: sqlite3.Connection, wallet_id: str, key: str, request_hash: bytes, now: float
    ) -> IdempotencyRecord | None:
        """None if ``key`` is free at ``now``; the completed record; or raise mismatch / in progress."""
        row = conn.execute(
            "SELECT request_hash, status, response, created_at FROM idempotency WHERE wallet_id = ? AND key = ?",
            (wallet_id, key),
        ).fetchone()
        if row is None or v.idempotency_expired(row[1], row[3], now):
            return None
        if row[0] != request_hash:
            raise IdempotencyMismatch(f"idempotency key {key!r} was used for a different request")
        if row[1] != IdempotencyStatus.COMPLETED:
            raise IdempotencyInProgress(f"idempotency key {key!r}: the first request has not completed")
        return IdempotencyRecord(wallet_id, key, row[0], IdempotencyStatus.COMPLETED, row[2], row[3])

    def _claim_in(
        self, conn: sqlite3.Connection, wallet_id: str, key: str, request_hash: bytes, now: float
    ) -> IdempotencyRecord | None:
        self._require_wallet(conn, wallet_id)
        existing = self._existing(conn, wallet_id, key, request_hash, now)
        if existing is None:  # free, or held by an expired record, which this claim replaces
            conn.execute(
                "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, 'in_progress', NULL, ?)",
                (wallet_id, key, request_hash, now),
            )
        return existing

    def begin_idempotent(self, wallet_id: str, key: str, request_hash: bytes, now: float) -> IdempotencyRecord | None:
        v.check_claim(wallet_id, key, request_hash)
        now = v.check_time("now", now)
        with self._write() as conn:
            return self._claim_in(conn, wallet_id, key, request_hash, now)

    def lookup_idempotent(self, wallet_id: str, key: str, request_hash: bytes, now: float) -> IdempotencyRecord | None:
        v.check_claim(wallet_id, key, request_hash)
        now = v.check_time("now", now)
        with self._read() as conn:
            return self._existing(conn, wallet_id, key, request_hash, now)

    def _claimed(
        self,
        conn: sqlite3.Connection,
        wallet_id: str,
        key: str,
        request_hash: bytes,
        status: IdempotencyStatus = IdempotencyStatus.IN_PROGRESS,
    ) -> None:
        row = conn.execute(
            "SELECT request_hash, status FROM idempotency WHERE wallet_id = ? AND key = ?", (wallet_id, key)
        ).fetchone()
        if row is None:
            raise NotFound(f"idempotency key {key!r} not found")
        if row[0] != request_hash or row[1] != status:
            raise Conflict(f"idempotency key {key!r} is not {status.value.replace('_', ' ')} for this request")

    def complete_idempotent(self, wallet_id: str, key: str, request_hash: bytes, response: bytes) -> None:
        v.check_stored_answer(wallet_id, key, request_hash, response)
        with self._write() as conn:
            self._complete_in(conn, wallet_id, key, request_hash, response)

    def replace_idempotent(
        self, wallet_id: str, key: str, request_hash: bytes, response: bytes, *, previous: bytes | None = None
    ) -> None:
        v.check_stored_answer(wallet_id, key, request_hash, response)
        if previous is not None:
            v.check_blob("previous", previous)
        with self._write() as conn:
            if previous is None:
                replaced = conn.execute(
                    "UPDATE idempotency SET response = ?"
                    " WHERE wallet_id = ? AND key = ? AND request_hash = ? AND status = 'completed'",
                    (response, wallet_id, key, request_hash),
                ).rowcount
            else:
                answer = IdempotentAnswer(wallet_id, key, request_hash, response)
                replaced = self._replace_answer_in(conn, answer, previous)
            if replaced != 1:
                self._claimed(conn, wallet_id, key, request_hash, IdempotencyStatus.COMPLETED)
                raise Conflict(f"idempotency key {key!r} does not hold the answer to replace for this request")

    @staticmethod
    def _replace_answer_in(conn: sqlite3.Connection, answer: IdempotentAnswer, previous: bytes) -> int:
        """Replace the response of ``answer``'s key by ``answer.response`` if it is completed for this request and
        holds exactly ``previous`` (`ReplaceAnswer`); how many rows changed (0: left as it is, no refusal)."""
        return conn.execute(
            "UPDATE idempotency SET response = ?"
            " WHERE wallet_id = ? AND key = ? AND request_hash = ? AND status = 'completed' AND response = ?",
            (answer.response, answer.wallet_id, answer.key, answer.request_hash, previous),
        ).rowcount

    def _complete_in(
        self, conn: sqlite3.Connection, wallet_id: str, key: str, request_hash: bytes, response: bytes
    ) -> None:
        completed = conn.execute(
            "UPDATE idempotency SET status = 'completed', response = ?"
            " WHERE wallet_id = ? AND key = ? AND request_hash = ? AND status = 'in_progress'",
            (response, wallet_id, key, request_hash),
        ).rowcount
        if completed != 1:  # not in progress for this request: say why (`_claimed` raises)
            self._claimed(conn, wallet_id, key, request_hash)
            raise Conflict(f"idempotency key {key!r} is not in progress for this request")

    def abandon_idempotent(self, wallet_id: str, key: str, request_hash: bytes) -> None:
        v.check_idempotency_key(key)
        v.check_digest("request_hash", request_hash)
        with self._write() as conn:
            self._claimed(conn, wallet_id, key, request_hash)
            conn.execute("DELETE FROM idempotency WHERE wallet_id = ? AND key = ?", (wallet_id, key))
