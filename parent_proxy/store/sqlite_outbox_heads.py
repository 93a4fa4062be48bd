"""The outbox's wallet heads (schema version 10): one row per wallet with pending items, so that a claim's work does
not grow with any wallet's backlog.

``outbox_heads`` holds, for each wallet with at least one pending item, the key (``due``, ``event_id``) of its
earliest pending item, the wallet's delivery in flight (``lease_id``, ``lease_until`` of its last claim, cleared by that
lease's finish) and its pause (``paused``: `time_key` of the end of the pause its last failed attempt put it in,
`validation_outbox.wallet_pause_until`; NULL when none). ``ready``, the later of ``due`` and ``paused`` (a generated
column), is when the wallet is due: a claim walks ``outbox_heads_due`` (on ``ready``, ``event_id``) in that order and
stops after ``limit`` wallets: it passes over only the wallets in flight and those it skips, never a paused wallet
(its ``ready`` is not reached yet) nor a wallet's other items. Before, it walked every due pending item in Python
under ``BEGIN IMMEDIATE`` until it had ``limit`` distinct wallets, so one wallet's backlog (a receiver down for a
few hours) made every claim O(backlog) under the write lock that signing needs.

Every write that changes a wallet's pending items changes its head in the same transaction: `enqueued` (the new
item, if it sorts first; a pause stays), `leased` (a claim; the pause, over, cleared), `settled` (a finish: the
lease cleared if it is still the wallet's, the head moved to the earliest item left, found through the partial
index ``outbox_pending``, or deleted when none is left, and the pause set by a failed attempt that reschedules its
item, cleared by any other finish). So the claim answers what the scan of versions 5 to 9 answered, but for the
pause: in due order, the earliest due pending item of each wallet that has no item under a live lease, is not
paused and is not skipped (a lease that ended leaves the wallet's earliest item first again, as before). Before
the pause, a receiver that failed at once was sent each of the wallet's queued events back to back: the backoff was
the item's alone, so the wallet's next item was due at once.

Function of the caller's ``BEGIN IMMEDIATE`` transaction, as everywhere in the adapter. `migrate` and `rebuild`
bring a database of versions 1 to 9 up: the first before the schema runs (the ``finished`` column, which
`sqlite_outbox_retention` prunes on, and the two indexes the old claim used), the second after it (the heads, from
the pending items). `add_pause` brings up the heads of the first version 10, which had no pause.
"""

from __future__ import annotations

import sqlite3

from parent_proxy.store.sqlite_time import time_key

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox_heads (
        wallet_id TEXT PRIMARY KEY REFERENCES wallets(wallet_id), due BLOB NOT NULL, event_id TEXT NOT NULL,
        lease_id TEXT, lease_until REAL, paused BLOB,
        ready BLOB NOT NULL GENERATED ALWAYS AS (MAX(due, COALESCE(paused, due))) VIRTUAL)""",
    "CREATE INDEX IF NOT EXISTS outbox_heads_due ON outbox_heads (ready, event_id)",
    "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (wallet_id, due, event_id) WHERE status = 'pending'",
)

CLAIMABLE = (
    "SELECT wallet_id, event_id FROM outbox_heads WHERE ready <= ? AND (lease_until IS NULL OR lease_until <= ?)"
    " AND wallet_id NOT IN (SELECT value FROM json_each(?)) ORDER BY ready, event_id LIMIT ?"
)
"""`claimable`'s query: parameters ``time_key(now)``, ``now``, the skipped wallets (JSON), ``limit``."""


def enqueued(conn: sqlite3.Connection, wallet_id: str, due: bytes, event_id: str) -> None:
    """A pending item (``due``, ``event_id``) of ``wallet_id`` was inserted: it heads the wallet if the wallet had
    none, or if it sorts before the head (the wallet's lease, if any, stays)."""
    conn.execute(
        "INSERT INTO outbox_heads (wallet_id, due, event_id) VALUES (?, ?, ?) ON CONFLICT (wallet_id) DO UPDATE"
        " SET due = excluded.due, event_id = excluded.event_id"
        " WHERE (excluded.due, excluded.event_id) < (outbox_heads.due, outbox_heads.event_id)",
        (wallet_id, due, event_id),
    )


def claimable(conn: sqlite3.Connection, now: float, limit: int, skip: str) -> list[tuple[str, str]]:
    """(wallet, event id) of up to ``limit`` heads due at ``now`` (their item due, their pause over), in that order,
    of wallets not in flight and not in ``skip`` (a JSON array of wallet ids). A seek on ``outbox_heads_due``; the
    rows passed over are those of the wallets in flight or skipped, at most one each."""
    rows = conn.execute(CLAIMABLE, (time_key(now), now, skip, limit)).fetchall()
    return [(str(wallet_id), str(event_id)) for wallet_id, event_id in rows]


def leased(conn: sqlite3.Connection, wallet_id: str, lease_id: str, lease_until: float) -> None:
    """A claim leased the wallet's head item: the wallet is in flight until ``lease_until`` or this lease's finish;
    its pause (over, or the claim would not have reached it) is cleared."""
    conn.execute(
        "UPDATE outbox_heads SET lease_id = ?, lease_until = ?, paused = NULL WHERE wallet_id = ?",
        (lease_id, lease_until, wallet_id),
    )


def settled(conn: sqlite3.Connection, wallet_id: str, lease_id: str, paused_until: float | None) -> None:
    """An item of ``wallet_id`` leased by ``lease_id`` was finished or rescheduled: the wallet is no longer in flight
    if that lease is still its own (a finish after its lease ended, once another claim took the wallet, leaves the
    other's), the head moves to the earliest pending item left, or goes with the last one, and the wallet is paused
    until ``paused_until`` (`validation_outbox.wallet_pause_until` of the attempt; None: not paused)."""
    conn.execute(
        "UPDATE outbox_heads SET lease_id = NULL, lease_until = NULL WHERE wallet_id = ? AND lease_id = ?",
        (wallet_id, lease_id),
    )
    first = conn.execute(
        "SELECT due, event_id FROM outbox WHERE wallet_id = ? AND status = 'pending' ORDER BY due, event_id LIMIT 1",
        (wallet_id,),
    ).fetchone()
    if first is None:
        conn.execute("DELETE FROM outbox_heads WHERE wallet_id = ?", (wallet_id,))
    else:
        conn.execute(
            "INSERT INTO outbox_heads (wallet_id, due, event_id, paused) VALUES (?, ?, ?, ?) ON CONFLICT (wallet_id)"
            " DO UPDATE SET due = excluded.due, event_id = excluded.event_id, paused = excluded.paused",
            (wallet_id, first[0], first[1], None if paused_until is None else time_key(paused_until)),
        )


def migrate(conn: sqlite3.Connection) -> None:
    """Before the schema runs: give an outbox of versions 1 to 9 its ``finished`` column (`time_key` of the item's
    last attempt, which finished it: the newest delivery-log line; of its creation if it has none), and drop the
    two indexes only the old claim used. No-op on a new or already migrated database."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
    if not columns or "finished" in columns:
        return
    conn.execute("ALTER TABLE outbox ADD COLUMN finished BLOB")
    rows = conn.execute(
        "SELECT o.event_id, COALESCE((SELECT MAX(d.at) FROM deliveries d WHERE d.event_id = o.event_id), o.created_at)"
        " FROM outbox o WHERE o.status != 'pending'"
    ).fetchall()
    conn.executemany("UPDATE outbox SET finished = ? WHERE event_id = ?", [(time_key(float(t)), e) for e, t in rows])
    conn.execute("DROP INDEX IF EXISTS outbox_due_key")
    conn.execute("DROP INDEX IF EXISTS outbox_leased")


def add_pause(conn: sqlite3.Connection) -> None:
    """Before the schema runs: give an ``outbox_heads`` without the pause its ``paused`` and ``ready`` columns, and
    drop its ``outbox_heads_due`` index on (``due``, ``event_id``), which the schema then creates again on (``ready``,
    ``event_id``). That shape is the first version 10's (merge 1a7850b: the pause came later under the same version
    number, so the version alone cannot tell it): its heads are right as they are (no wallet was paused then) and its
    leases stay. No-op on a new database, one without heads (the schema creates them), or one with the pause."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(outbox_heads)")}
    if not columns or "paused" in columns:
        return
    conn.execute("ALTER TABLE outbox_heads ADD COLUMN paused BLOB")
    conn.execute(
        "ALTER TABLE outbox_heads ADD COLUMN ready BLOB NOT NULL"
        " GENERATED ALWAYS AS (MAX(due, COALESCE(paused, due))) VIRTUAL"
    )
    conn.execute("DROP INDEX IF EXISTS outbox_heads_due")


def rebuild(conn: sqlite3.Connection) -> None:
    """After the schema runs, on a database of versions 1 to 9: one head per wallet with pending items (its earliest
    one), in flight under the latest lease any of its pending items carries (the old claim's test: a wallet was in
    flight while any of its items had a live lease)."""
    conn.execute("DELETE FROM outbox_heads")
    conn.execute(
        "INSERT INTO outbox_heads (wallet_id, due, event_id) SELECT wallet_id, due, event_id FROM"
        " (SELECT wallet_id, due, event_id, ROW_NUMBER() OVER (PARTITION BY wallet_id ORDER BY due, event_id) AS r"
        " FROM outbox WHERE status = 'pending') WHERE r = 1"
    )
    conn.execute(
        "UPDATE outbox_heads SET (lease_id, lease_until) = (SELECT lease_id, lease_until FROM outbox o"
        " WHERE o.wallet_id = outbox_heads.wallet_id AND o.status = 'pending' AND o.lease_id IS NOT NULL"
        " ORDER BY o.lease_until DESC LIMIT 1)"
    )
