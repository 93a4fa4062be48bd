"""The outbox's ``due`` key (schema version 5): `time_key` of ``next_attempt_at``, which the claim seeks on (through
the wallet heads of `sqlite_outbox_heads` since version 10) instead of the REAL time (see `sqlite_time` for why no
range seek that matters runs on a REAL key)."""

from __future__ import annotations

import sqlite3

from parent_proxy.store.sqlite_time import time_key


def migrate(conn: sqlite3.Connection) -> None:
    """Before the schema runs: give an outbox of versions 1 to 4 (no ``due`` column) the column, filled from
    ``next_attempt_at`` by a full scan, and drop the index on the REAL time. No row changes otherwise."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
    if not columns or "due" in columns:
        return
    conn.execute("ALTER TABLE outbox ADD COLUMN due BLOB NOT NULL DEFAULT x''")
    rows = conn.execute("SELECT event_id, next_attempt_at FROM outbox").fetchall()
    conn.executemany("UPDATE outbox SET due = ? WHERE event_id = ?", [(time_key(float(t)), e) for e, t in rows])
    conn.execute("DROP INDEX IF EXISTS outbox_due")
