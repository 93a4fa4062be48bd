"""Request and denial timestamps for the SQLite adapter (rate limit and denial-burst freeze), keyed for exact
counts.

An undercount here fails open (a rate limit or a denial-burst freeze that does not trigger), so the range seek
``since <= time`` runs on `sqlite_time.time_key` (a BLOB compared byte-wise), never on the REAL time (see
`sqlite_time` for the seek on a REAL key that skipped a row). The key is order-preserving and one-to-one, so
``t >= time_key(since)`` selects exactly the rows with ``at >= since``; ``at`` keeps the exact float for
`recent`. Schema version 4; `migrate` rebuilds the table of versions 1 to 3 (keyed by ``at``). Every function runs
inside the caller's transaction (``BEGIN IMMEDIATE`` for the writes).
"""

from __future__ import annotations

import sqlite3
from typing import Literal

from parent_proxy.store.sqlite_time import time_key

EventKind = Literal["request", "denial"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS wallet_events (
        wallet_id TEXT NOT NULL REFERENCES wallets(wallet_id), kind TEXT NOT NULL, t BLOB NOT NULL,
        at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS wallet_events_by_key ON wallet_events (wallet_id, kind, t)",
    "CREATE INDEX IF NOT EXISTS wallet_events_by_key_age ON wallet_events (t)",
)


def record(conn: sqlite3.Connection, wallet_id: str, kind: EventKind, at: float) -> None:
    conn.execute("INSERT INTO wallet_events VALUES (?, ?, ?, ?)", (wallet_id, kind, time_key(at), at))


def count(conn: sqlite3.Connection, wallet_id: str, kind: EventKind, since: float) -> int:
    """How many ``kind`` events of ``wallet_id`` happened at or after ``since``."""
    row = conn.execute(
        "SELECT COUNT(*) FROM wallet_events WHERE wallet_id = ? AND kind = ? AND t >= ?",
        (wallet_id, kind, time_key(since)),
    ).fetchone()
    return int(row[0])


def recent(conn: sqlite3.Connection, wallet_id: str, kind: EventKind, since: float) -> list[float]:
    """The times of the events `count` counts, oldest first."""
    rows = conn.execute(
        "SELECT at FROM wallet_events WHERE wallet_id = ? AND kind = ? AND t >= ? ORDER BY t",
        (wallet_id, kind, time_key(since)),
    ).fetchall()
    return [float(r[0]) for r in rows]


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Delete events before ``before`` (the caller knows no window reaches them any more); return how many."""
    return conn.execute("DELETE FROM wallet_events WHERE t < ?", (time_key(max(0.0, before)),)).rowcount


def migrate(conn: sqlite3.Connection) -> None:
    """Before `SCHEMA` runs: if ``wallet_events`` is the table of versions 1 to 3 (no ``t`` column), move it aside,
    create the keyed table and copy every row (a full scan, no seek), then drop the old table and its indexes."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(wallet_events)")}
    if not columns or "t" in columns:
        return
    conn.execute("ALTER TABLE wallet_events RENAME TO wallet_events_v3")
    for statement in SCHEMA:
        conn.execute(statement)
    rows = conn.execute("SELECT wallet_id, kind, at FROM wallet_events_v3").fetchall()
    conn.executemany(
        "INSERT INTO wallet_events VALUES (?, ?, ?, ?)", [(w, k, time_key(float(at)), float(at)) for w, k, at in rows]
    )
    conn.execute("DROP TABLE wallet_events_v3")
