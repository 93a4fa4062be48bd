"""The webhook and audit half of `SqliteStore`: webhook settings, the persistent outbox, the delivery log and
the append-only audit table. The outbox is claimed through its wallet heads (`sqlite_outbox_heads`: one row per
wallet with pending items, keyed by the ``due`` key of `sqlite_outbox_due`, never by the REAL
``next_attempt_at``), which every write of the outbox keeps in the same transaction."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Collection

from parent_proxy.errors import Conflict, InvalidInput, LeaseLost, NotFound
from parent_proxy.store import sqlite_outbox_heads as heads
from parent_proxy.store import validation as v
from parent_proxy.store.model import AuditRecord, DeliveryAttempt, OutboxItem, OutboxStatus, WebhookConfig
from parent_proxy.store.protocol import AuditSealer
from parent_proxy.store.sqlite_base import SqliteBase
from parent_proxy.store.sqlite_time import time_key
from parent_proxy.store.validation_outbox import (
    check_outbox_item,
    check_webhook,
    delivered_attempt,
    failed_attempt,
    wallet_pause_until,
)

_SELECT_OUTBOX = (
    "SELECT event_id, wallet_id, event_type, body, created_at, status, attempts, next_attempt_at, lease_id,"
    " lease_until FROM outbox WHERE "
)
_SELECT_AUDIT = "SELECT seq, time, wallet_id, event_type, payload, receipt, prev_hash, hash FROM audit_log "


class SqliteOutboxAudit(SqliteBase):
    """Webhooks, outbox and audit log over `SqliteBase`'s transactions."""

    # -- webhooks -------------------------------------------------------------------------------------------
    def set_webhook(self, config: WebhookConfig) -> None:
        c = check_webhook(config)
        with self._write() as conn:
            self._set_webhook_in(conn, c)

    @classmethod
    def _set_webhook_in(cls, conn: sqlite3.Connection, c: WebhookConfig) -> None:
        cls._require_wallet(conn, c.wallet_id)
        conn.execute("INSERT OR REPLACE INTO webhooks VALUES (?, ?, ?)", (c.wallet_id, c.url, c.secret))

    def get_webhook(self, wallet_id: str) -> WebhookConfig | None:
        v.check_id("wallet_id", wallet_id)
        with self._read() as conn:
            row = conn.execute("SELECT url, secret FROM webhooks WHERE wallet_id = ?", (wallet_id,)).fetchone()
        return None if row is None else WebhookConfig(wallet_id, row[0], row[1])

    def enqueue_webhook(self, item: OutboxItem) -> None:
        i = check_outbox_item(item)
        with self._write() as conn:
            self._enqueue_in(conn, i)

    @classmethod
    def _enqueue_in(cls, conn: sqlite3.Connection, i: OutboxItem) -> None:
        cls._require_wallet(conn, i.wallet_id)
        if conn.execute("SELECT 1 FROM outbox WHERE event_id = ?", (i.event_id,)).fetchone():
            raise Conflict(f"outbox item {i.event_id} already exists")
        due = time_key(i.next_attempt_at)
        conn.execute(
            "INSERT INTO outbox (event_id, wallet_id, event_type, body, created_at, status, attempts,"
            " next_attempt_at, lease_id, lease_until, due) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, NULL, NULL, ?)",
            (i.event_id, i.wallet_id, i.event_type, i.body, i.created_at, i.next_attempt_at, due),
        )
        heads.enqueued(conn, i.wallet_id, due, i.event_id)

    @staticmethod
    def _outbox(row: tuple[object, ...]) -> OutboxItem:
        return OutboxItem(row[0], row[1], row[2], row[3], row[4], OutboxStatus(row[5]), *row[6:])  # type: ignore[arg-type]

    def claim_webhooks(
        self, now: float, lease_seconds: float, limit: int, *, skip_wallets: Collection[str] = ()
    ) -> list[OutboxItem]:
        now = v.check_time("now", now)
        lease_seconds = v.check_time("lease_seconds", lease_seconds)
        v.check_count("limit", limit, minimum=1, maximum=1000)
        skip = json.dumps(sorted(v.check_ids("skip_wallets", skip_wallets)))
        claimed = []
        with self._write() as conn:
            # The heads in due order: the earliest pending item of each wallet that has none in flight (the write
            # lock makes "none in flight" exact across processes) and is not skipped. Nothing else is read.
            for wallet_id, event_id in heads.claimable(conn, now, limit, skip):
                lease_id, lease_until = uuid.uuid4().hex, now + lease_seconds
                conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, lease_id = ?, lease_until = ? WHERE event_id = ?",
                    (lease_id, lease_until, event_id),
                )
                heads.leased(conn, wallet_id, lease_id, lease_until)
                row = conn.execute(_SELECT_OUTBOX + "event_id = ?", (event_id,)).fetchone()
                claimed.append(self._outbox(row))
        return claimed

    def _finish(
        self,
        event_id: str,
        lease_id: str,
        *,
        attempt: DeliveryAttempt,
        status: OutboxStatus,
        next_attempt_at: float | None,
    ) -> None:
        now = attempt.at
        with self._write() as conn:
            row = conn.execute(
                "SELECT status, lease_id, attempts, wallet_id FROM outbox WHERE event_id = ?", (event_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"outbox item {event_id} not found")
            if row[0] != OutboxStatus.PENDING or row[1] != lease_id:
                raise LeaseLost(f"outbox item {event_id}: lease lost")
            conn.execute(
                "UPDATE outbox SET status = ?, lease_id = NULL, lease_until = NULL,"
                " next_attempt_at = COALESCE(?, next_attempt_at), due = COALESCE(?, due), finished = ?"
                " WHERE event_id = ?",
                (
                    status.value,
                    next_attempt_at,
                    None if next_attempt_at is None else time_key(next_attempt_at),
                    None if status == OutboxStatus.PENDING else time_key(now),
                    event_id,
                ),
            )
            conn.execute(
                "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, row[2], now, int(attempt.delivered), attempt.status_code, attempt.error),
            )
            heads.settled(conn, row[3], lease_id, wallet_pause_until(now, next_attempt_at))

    def mark_delivered(self, event_id: str, lease_id: str, *, now: float, status_code: int) -> None:
        attempt = delivered_attempt(event_id, now=now, status_code=status_code)
        self._finish(event_id, lease_id, attempt=attempt, status=OutboxStatus.DELIVERED, next_attempt_at=None)

    def mark_failed(
        self,
        event_id: str,
        lease_id: str,
        *,
        now: float,
        error: str,
        status_code: int | None,
        next_attempt_at: float | None,
    ) -> None:
        attempt, status = failed_attempt(
            event_id, now=now, error=error, status_code=status_code, next_attempt_at=next_attempt_at
        )
        self._finish(event_id, lease_id, attempt=attempt, status=status, next_attempt_at=next_attempt_at)

    def get_outbox_item(self, event_id: str) -> OutboxItem:
        with self._read() as conn:
            row = conn.execute(_SELECT_OUTBOX + "event_id = ?", (event_id,)).fetchone()
        if row is None:
            raise NotFound(f"outbox item {event_id} not found")
        return self._outbox(row)

    def delivery_log(self, event_id: str) -> list[DeliveryAttempt]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT event_id, attempt, at, delivered, status_code, error FROM deliveries"
                " WHERE event_id = ? ORDER BY attempt, at",
                (event_id,),
            ).fetchall()
        return [DeliveryAttempt(r[0], r[1], r[2], bool(r[3]), r[4], r[5]) for r in rows]

    # -- audit log ------------------------------------------------------------------------------------------
    def append_audit(self, record: AuditRecord, webhook: OutboxItem | None = None) -> None:
        if not isinstance(record, AuditRecord):
            raise InvalidInput("record", "must be an AuditRecord")
        item = None if webhook is None else check_outbox_item(webhook)
        with self._write() as conn:
            self._append_audit_in(conn, record)
            if item is not None:
                self._enqueue_in(conn, item)

    @classmethod
    def _append_audit_in(cls, conn: sqlite3.Connection, r: AuditRecord) -> None:
        head = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        cls._insert_audit_in(conn, r, head)

    @staticmethod
    def _insert_audit_in(conn: sqlite3.Connection, r: AuditRecord, head: tuple[int, bytes] | None) -> None:
        """Insert ``r`` if it extends ``head`` (seq and hash of the head the caller read in this transaction)."""
        v.check_extends(r, head)
        conn.execute(
            "INSERT INTO audit_log (seq, time, wallet_id, event_type, payload, receipt, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (r.seq, r.time, r.wallet_id, r.event_type, r.payload, r.receipt, r.prev_hash, r.hash),
        )

    @classmethod
    def _seal_in(cls, conn: sqlite3.Connection, audit: AuditSealer) -> AuditRecord:
        """Append the record ``audit`` builds from the head, in the caller's transaction (which holds the write lock:
        the head cannot move under it, so the head read here is the one the record must extend)."""
        head = cls._audit_head_in(conn)
        record = audit(head)
        if not isinstance(record, AuditRecord):
            raise InvalidInput("audit", "must build an AuditRecord")
        cls._insert_audit_in(conn, record, None if head is None else (head.seq, head.hash))
        return record

    @staticmethod
    def _audit_head_in(conn: sqlite3.Connection) -> AuditRecord | None:
        row = conn.execute(_SELECT_AUDIT + "ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else AuditRecord(*row)

    def audit_head(self) -> AuditRecord | None:
        with self._read() as conn:
            return self._audit_head_in(conn)

    def audit_records(self, after_seq: int, limit: int) -> list[AuditRecord]:
        v.check_count("after_seq", after_seq)
        v.check_count("limit", limit, minimum=1, maximum=10_000)
        with self._read() as conn:
            rows = conn.execute(_SELECT_AUDIT + "WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
        return [AuditRecord(*r) for r in rows]
