"""How long the SQLite adapter keeps finished webhook outbox items: `validation.OUTBOX_RETENTION_SECONDS` after the
attempt that finished them (``outbox.finished``, `time_key` of that attempt's time, set by the finish in the same
transaction; schema version 10, `sqlite_outbox_heads.migrate` fills it for older databases). Pending items have no
``finished`` and are never pruned. Runs in the caller's transaction (`SqliteStore.prune`)."""

from __future__ import annotations

import sqlite3

from parent_proxy.store.sqlite_time import time_key
from parent_proxy.store.validation import OUTBOX_RETENTION_SECONDS


def prune(conn: sqlite3.Connection, now: float) -> int:
    """Delete the items finished more than `OUTBOX_RETENTION_SECONDS` before ``now`` and their delivery-log lines
    (first: they reference the items); return how many items. A seek on ``outbox_finished``."""
    cutoff = time_key(max(0.0, now - OUTBOX_RETENTION_SECONDS))
    conn.execute("DELETE FROM deliveries WHERE event_id IN (SELECT event_id FROM outbox WHERE finished < ?)", (cutoff,))
    return conn.execute("DELETE FROM outbox WHERE finished < ?", (cutoff,)).rowcount
