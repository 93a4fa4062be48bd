"""The period-limit and rate half of `SqliteStore`: reservations (window totals via `sqlite_spend`), request and
denial timestamps (`sqlite_events`), and pruning. The ``*_in`` helpers run inside a caller's transaction, so that
`SqliteStore` can combine them with idempotency and audit writes in one ``BEGIN IMMEDIATE`` transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from parent_proxy.errors import Conflict, InvalidInput, LimitExceeded, NotFound
from parent_proxy.store import limits as lim
from parent_proxy.store import sqlite_creation_nonces as creation_nonces
from parent_proxy.store import sqlite_events as events
from parent_proxy.store import sqlite_outbox_retention as outbox_retention
from parent_proxy.store import sqlite_spend as spend
from parent_proxy.store import validation as v
from parent_proxy.store.model import Reservation, ReservationStatus
from parent_proxy.store.protocol import Limits
from parent_proxy.store.sqlite_outbox import SqliteOutboxAudit

PRUNE_MARGIN_SECONDS = 1.0


class SqliteLimits(SqliteOutboxAudit):
    """Reservations, rate/denial events and pruning over `SqliteBase`'s transactions."""

    # -- period limits --------------------------------------------------------------------------------------
    @staticmethod
    def _reserve_in(
        conn: sqlite3.Connection,
        wallet_id: str,
        request_id: str,
        wanted: tuple[tuple[str, int], ...],
        caps: dict[tuple[str, int], int],
        *,
        now: float,
    ) -> Reservation:
        """Check the caps and hold ``wanted``; the caller holds the write lock and checked the wallet exists."""
        if conn.execute(
            "SELECT 1 FROM reservations WHERE wallet_id = ? AND request_id = ?", (wallet_id, request_id)
        ).fetchone():
            raise Conflict(f"reservation {request_id} already exists")
        amounts = dict(wanted)
        last = {asset: spend.last_row(conn, wallet_id, asset) for asset in amounts}  # each asset's before any write
        excess: dict[tuple[str, int], tuple[int, int]] = {}
        for (asset, window), cap in caps.items():
            if asset in amounts:
                total = spend.total(conn, wallet_id, asset, window, now, last=last[asset]) + amounts[asset]
                if total > cap:
                    excess[(asset, window)] = (total, cap)
        if excess:
            raise LimitExceeded(wallet_id, excess)
        conn.execute(
            "INSERT INTO reservations VALUES (?, ?, ?, ?, 'pending')",
            (wallet_id, request_id, lim.encode_amounts(wanted), now),
        )
        for asset, amount in wanted:  # one row per asset: each asset's ``last`` is still its last row
            spend.add(conn, wallet_id, asset, now, request_id, amount=amount, last=last[asset])
        return Reservation(wallet_id=wallet_id, request_id=request_id, amounts=wanted, created_at=now)

    def reserve(
        self, wallet_id: str, request_id: str, amounts: Mapping[str, int], limits: Limits, now: float
    ) -> Reservation:
        v.check_id("wallet_id", wallet_id)
        v.check_id("request_id", request_id)
        wanted = v.check_amounts(amounts)
        caps = v.check_limits(limits)
        now = v.check_time("now", now)
        with self._write() as conn:
            self._require_wallet(conn, wallet_id)
            return self._reserve_in(conn, wallet_id, request_id, wanted, caps, now=now)

    @staticmethod
    def _transition_in(conn: sqlite3.Connection, reservation: Reservation, target: ReservationStatus) -> None:
        key = (reservation.wallet_id, reservation.request_id)
        if target == ReservationStatus.COMMITTED and (  # the signing path's case, in one statement
            conn.execute(
                "UPDATE reservations SET status = ? WHERE wallet_id = ? AND request_id = ? AND status = 'pending'",
                (target, *key),
            ).rowcount
            == 1
        ):
            return
        row = conn.execute(
            "SELECT status, amounts, created_at FROM reservations WHERE wallet_id = ? AND request_id = ?", key
        ).fetchone()
        if row is None:
            raise NotFound(f"reservation {reservation.request_id} not found")
        if row[0] == target:
            return
        if row[0] != ReservationStatus.PENDING:
            raise Conflict(f"reservation {reservation.request_id} is {row[0]}, cannot become {target}")
        conn.execute("UPDATE reservations SET status = ? WHERE wallet_id = ? AND request_id = ?", (target, *key))
        if target == ReservationStatus.RELEASED:
            for asset in lim.decode_amounts(row[1]):
                spend.remove(conn, reservation.wallet_id, asset, row[2], reservation.request_id)

    @staticmethod
    def _check_reservation(reservation: object) -> Reservation:
        if not isinstance(reservation, Reservation):
            raise InvalidInput("reservation", "must be a Reservation")
        return reservation

    def commit(self, reservation: Reservation) -> None:
        r = self._check_reservation(reservation)
        with self._write() as conn:
            self._transition_in(conn, r, ReservationStatus.COMMITTED)

    def release(self, reservation: Reservation) -> None:
        r = self._check_reservation(reservation)
        with self._write() as conn:
            self._transition_in(conn, r, ReservationStatus.RELEASED)

    def reservation_status(self, wallet_id: str, request_id: str) -> ReservationStatus:
        with self._read() as conn:
            row = conn.execute(
                "SELECT status FROM reservations WHERE wallet_id = ? AND request_id = ?", (wallet_id, request_id)
            ).fetchone()
        if row is None:
            raise NotFound(f"reservation {request_id} not found")
        return ReservationStatus(row[0])

    def spent_in_window(self, wallet_id: str, asset: str, window_seconds: int, now: float) -> int:
        v.check_id("wallet_id", wallet_id)
        v.check_id("asset", asset)
        v.check_count("window_seconds", window_seconds, minimum=1, maximum=v.MAX_WINDOW_SECONDS)
        now = v.check_time("now", now)
        with self._read() as conn:
            return spend.total(conn, wallet_id, asset, window_seconds, now, last=spend.last_row(conn, wallet_id, asset))

    # -- rate limits and denial bursts ----------------------------------------------------------------------
    def _record(self, kind: events.EventKind, wallet_id: str, now: float) -> None:
        v.check_id("wallet_id", wallet_id)
        now = v.check_time("now", now)
        with self._write() as conn:
            self._record_in(conn, kind, wallet_id, now)

    @classmethod
    def _record_in(cls, conn: sqlite3.Connection, kind: events.EventKind, wallet_id: str, now: float) -> None:
        cls._require_wallet(conn, wallet_id)
        events.record(conn, wallet_id, kind, now)

    def _recent(self, kind: events.EventKind, wallet_id: str, since: float) -> list[float]:
        v.check_id("wallet_id", wallet_id)
        since = v.check_time("since", since)
        with self._read() as conn:
            return events.recent(conn, wallet_id, kind, since)

    def _count(self, kind: events.EventKind, wallet_id: str, since: float) -> int:
        v.check_id("wallet_id", wallet_id)
        since = v.check_time("since", since)
        with self._read() as conn:
            return events.count(conn, wallet_id, kind, since)

    def count_requests(self, wallet_id: str, since: float) -> int:
        return self._count("request", wallet_id, since)

    def count_denials(self, wallet_id: str, since: float) -> int:
        return self._count("denial", wallet_id, since)

    def record_request(self, wallet_id: str, now: float) -> None:
        self._record("request", wallet_id, now)

    def recent_requests(self, wallet_id: str, since: float) -> list[float]:
        return self._recent("request", wallet_id, since)

    def record_denial(self, wallet_id: str, now: float) -> None:
        self._record("denial", wallet_id, now)

    def recent_denials(self, wallet_id: str, since: float) -> list[float]:
        return self._recent("denial", wallet_id, since)

    # -- housekeeping ---------------------------------------------------------------------------------------
    def prune(self, now: float) -> None:
        now = v.check_time("now", now)
        # Nothing created before ``horizon`` can count in a window of at most MAX_WINDOW_SECONDS ending at or after
        # ``now``, nor be at or after any ``since`` a window asks about (one second of margin for float rounding).
        horizon = now - v.MAX_WINDOW_SECONDS - PRUNE_MARGIN_SECONDS
        with self._write() as conn:
            events.prune(conn, horizon)
            conn.execute("DELETE FROM reservations WHERE created_at < ? AND status != 'pending'", (horizon,))
            spend.prune(conn, horizon)
            conn.execute(  # a scan (no index on the time): exactly the records `idempotency_expired` names
                "DELETE FROM idempotency WHERE (status = 'in_progress' AND created_at < ?)"
                " OR (status = 'completed' AND created_at < ?)",
                (now - v.IDEMPOTENCY_STALE_SECONDS, now - v.IDEMPOTENCY_RETENTION_SECONDS),
            )
            creation_nonces.prune(conn, now)
            outbox_retention.prune(conn, now)  # finished webhook items and their delivery log, after a month
