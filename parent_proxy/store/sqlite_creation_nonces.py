"""`SqliteStore.claim_creation_nonce`'s table and writes (`creation_nonces`: the layout and the bound).

One row per (owner key, nonce) with the time it is held until; the claim runs in the caller's ``BEGIN IMMEDIATE``
transaction, so a check and its write cannot interleave with another process's. Added in schema version 8 as a new
table only: an older database gains it when opened (`sqlite_schema`).
"""

from __future__ import annotations

import sqlite3

from parent_proxy.errors import NonceUsed
from parent_proxy.store.creation_nonces import expired

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS creation_nonces (
        owner BLOB NOT NULL, nonce TEXT NOT NULL, held_until REAL NOT NULL, PRIMARY KEY (owner, nonce))""",
)


def claim_in(conn: sqlite3.Connection, owner: bytes, nonce: str, now: float, held_until: float) -> None:
    """Hold ``nonce`` of ``owner`` until ``held_until``, replacing a claim expired at ``now``; `NonceUsed` if one
    still holds (the caller's transaction is then rolled back: nothing written)."""
    row = conn.execute(
        "SELECT held_until FROM creation_nonces WHERE owner = ? AND nonce = ?", (owner, nonce)
    ).fetchone()
    if row is not None and not expired(float(row[0]), now):
        raise NonceUsed("creation nonce already used")
    conn.execute("INSERT OR REPLACE INTO creation_nonces VALUES (?, ?, ?)", (owner, nonce, held_until))


def prune(conn: sqlite3.Connection, now: float) -> int:
    """Delete the claims expired at ``now`` (a scan: the table holds minutes of creations); return how many."""
    return conn.execute("DELETE FROM creation_nonces WHERE held_until < ?", (now,)).rowcount
