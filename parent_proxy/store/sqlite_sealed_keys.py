"""`SqliteStore.replace_sealed_keys`' writes, inside the caller's ``BEGIN IMMEDIATE`` transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from parent_proxy.errors import Conflict, NotFound
from parent_proxy.store.sealed_keys import SealedKeyReplacement


def replace_in(conn: sqlite3.Connection, replacements: Sequence[SealedKeyReplacement]) -> None:
    """Each wallet's sealed key becomes the new one if it is still the old one; else `NotFound` / `Conflict` (the
    caller's transaction is then rolled back, so no replacement of the call stays)."""
    for r in replacements:
        updated = conn.execute(
            "UPDATE wallets SET sealed_key = ? WHERE wallet_id = ? AND sealed_key = ?",
            (r.new_sealed_key, r.wallet_id, r.old_sealed_key),
        ).rowcount
        if updated == 1:
            continue
        if conn.execute("SELECT 1 FROM wallets WHERE wallet_id = ?", (r.wallet_id,)).fetchone() is None:
            raise NotFound(f"wallet {r.wallet_id} not found")
        raise Conflict(f"wallet {r.wallet_id}: its sealed key is no longer the one read")
