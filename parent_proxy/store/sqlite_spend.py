"""Rolling-window totals for the SQLite adapter in O(log n): one ``spend`` row per (reservation, asset) with a
running (prefix) sum, so a window's total is two index seeks instead of a scan of every live reservation.

Per ``(wallet, asset)``, rows are ordered by ``(created_at, request_id)``. ``amount`` is what the row counts (its
reserved amount; 0 once released) and ``cum`` the sum of ``amount`` over this row and every row before it in that
order, including rows already pruned. The total of a window ending at ``now`` is then exactly

    cum(last row) - (cum(first row in the window) - amount(first row in the window))

(rows after ``now`` count too, as in `limits.in_window`). Inserting a row out of time order, or releasing one,
shifts ``cum`` of the rows after it; both touch only the few rows written since (concurrent requests), never the
window. Amounts and sums are decimal strings, handled as Python ints: exact for u64 amounts and any total.

The time in the key is `sqlite_time.time_key` (8 bytes that sort like the float), never the REAL itself: index
seeks then compare bytes only (see `sqlite_time` for the SQLite 3.40.1 seek that skipped a row); the exact float
is kept in ``created_at`` for `limits.in_window`. Every function runs inside the caller's transaction
(``BEGIN IMMEDIATE`` for the writes).
"""

from __future__ import annotations

import sqlite3

from parent_proxy.store.limits import decode_amounts, in_window
from parent_proxy.store.sqlite_time import time_key

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS spend (
        wallet_id TEXT NOT NULL, asset TEXT NOT NULL, t BLOB NOT NULL, request_id TEXT NOT NULL,
        created_at REAL NOT NULL, amount TEXT NOT NULL, cum TEXT NOT NULL,
        PRIMARY KEY (wallet_id, asset, t, request_id)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS spend_by_age ON spend (t)",
)

BOUNDARY_SLACK_SECONDS = 1e-3
"""The index seek starts this far before ``now - window`` (far more than the rounding of that subtraction), and the
exact test of `limits.in_window` picks the first counted row, so the boundary is the same as the scan's."""


def _shift_after(
    conn: sqlite3.Connection, wallet_id: str, asset: str, key: bytes, request_id: str, *, delta: int
) -> None:
    rows = conn.execute(
        "SELECT t, request_id, cum FROM spend WHERE wallet_id = ? AND asset = ? AND (t, request_id) > (?, ?)",
        (wallet_id, asset, key, request_id),
    ).fetchall()
    conn.executemany(
        "UPDATE spend SET cum = ? WHERE wallet_id = ? AND asset = ? AND t = ? AND request_id = ?",
        [(str(int(c) + delta), wallet_id, asset, t, r) for t, r, c in rows],
    )


Last = tuple[bytes, str, str]
"""The last row of a ``(wallet, asset)`` in key order: its ``t``, ``request_id`` and ``cum``."""


def last_row(conn: sqlite3.Connection, wallet_id: str, asset: str) -> Last | None:
    """The last row of ``(wallet_id, asset)`` (None: there is none); valid until the transaction writes ``spend``."""
    row = conn.execute(
        "SELECT t, request_id, cum FROM spend WHERE wallet_id = ? AND asset = ? ORDER BY t DESC, request_id DESC"
        " LIMIT 1",
        (wallet_id, asset),
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def add(
    conn: sqlite3.Connection,
    wallet_id: str,
    asset: str,
    at: float,
    request_id: str,
    *,
    amount: int,
    last: Last | None,
) -> None:
    """Count ``amount`` of ``asset`` at time ``at`` for reservation ``request_id``. ``last``: `last_row` of the asset,
    read in this transaction since its last write of ``spend``."""
    key = time_key(at)
    if last is None or (key, request_id) > last[:2]:  # after every row (the usual case): nothing to shift
        cum = (0 if last is None else int(last[2])) + amount
        conn.execute(
            "INSERT INTO spend VALUES (?, ?, ?, ?, ?, ?, ?)",
            (wallet_id, asset, key, request_id, at, str(amount), str(cum)),
        )
        return
    before = conn.execute(
        "SELECT cum FROM spend WHERE wallet_id = ? AND asset = ? AND (t, request_id) < (?, ?)"
        " ORDER BY t DESC, request_id DESC LIMIT 1",
        (wallet_id, asset, key, request_id),
    ).fetchone()
    cum = (0 if before is None else int(before[0])) + amount
    conn.execute(
        "INSERT INTO spend VALUES (?, ?, ?, ?, ?, ?, ?)", (wallet_id, asset, key, request_id, at, str(amount), str(cum))
    )
    _shift_after(conn, wallet_id, asset, key, request_id, delta=amount)


def remove(conn: sqlite3.Connection, wallet_id: str, asset: str, at: float, request_id: str) -> None:
    """Stop counting a reservation's amount of ``asset`` (a release). A pruned row counts nowhere already."""
    key = time_key(at)
    row = conn.execute(
        "SELECT amount, cum FROM spend WHERE wallet_id = ? AND asset = ? AND t = ? AND request_id = ?",
        (wallet_id, asset, key, request_id),
    ).fetchone()
    if row is None or int(row[0]) == 0:
        return
    amount = int(row[0])
    conn.execute(
        "UPDATE spend SET amount = '0', cum = ? WHERE wallet_id = ? AND asset = ? AND t = ? AND request_id = ?",
        (str(int(row[1]) - amount), wallet_id, asset, key, request_id),
    )
    _shift_after(conn, wallet_id, asset, key, request_id, delta=-amount)


def total(
    conn: sqlite3.Connection, wallet_id: str, asset: str, window_seconds: int, now: float, *, last: Last | None
) -> int:
    """What counts against a window of ``window_seconds`` ending at ``now`` (see the module docstring); ``last``:
    `last_row` of the asset, read in this transaction."""
    if last is None:
        return 0
    start = max(0.0, now - window_seconds - BOUNDARY_SLACK_SECONDS)
    rows = conn.execute(
        "SELECT created_at, amount, cum FROM spend WHERE wallet_id = ? AND asset = ? AND t >= ? ORDER BY t, request_id",
        (wallet_id, asset, time_key(start)),
    )
    for created_at, amount, cum in rows:
        if in_window(created_at, window_seconds, now):
            return int(last[2]) - (int(cum) - int(amount))
    return 0


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Delete rows created before ``before`` (the caller knows they count in no window any more); return how many."""
    return conn.execute("DELETE FROM spend WHERE t < ?", (time_key(max(0.0, before)),)).rowcount


def rebuild(conn: sqlite3.Connection) -> None:
    """Fill ``spend`` from the reservations table (migration from schema versions 1 and 2)."""
    conn.execute("DELETE FROM spend")
    rows = conn.execute(
        "SELECT wallet_id, request_id, amounts, created_at FROM reservations WHERE status != 'released'"
        " ORDER BY created_at, request_id"
    ).fetchall()
    for wallet_id, request_id, amounts, created_at in rows:
        for asset, amount in decode_amounts(amounts).items():
            add(conn, wallet_id, asset, created_at, request_id, amount=amount, last=last_row(conn, wallet_id, asset))
