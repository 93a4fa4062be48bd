"""SQLite outbox heads (`parent_proxy.store.sqlite_outbox_heads`): a claim's work does not grow with one wallet's
backlog (it runs under the write lock every signing request needs), a version-8 or -9 database gets its heads and
finish times when opened, and the first version 10's heads (no pause) get their pause."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from parent_proxy.store.model import OutboxItem, OutboxStatus
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.store.sqlite_schema import SCHEMA_VERSION
from parent_proxy.store.sqlite_time import time_key
from parent_proxy.store.validation import OUTBOX_RETENTION_SECONDS
from tests.proxy.conftest import make_wallet

T0 = 1_700_000_000.0


def _claim_steps(path: Path, backlog: int) -> int:
    """SQLite VM instructions (counted by a progress handler: deterministic) of one claim among ``backlog``
    due items of w1 and one of w2, both wallets free; the claim must take one item of each."""
    store = SqliteStore(path)
    for wallet_id in ("w1", "w2"):
        store.create_wallet(make_wallet(wallet_id))
    with store._write() as conn:  # the backlog in one transaction (one commit instead of ``backlog``)
        for i in range(backlog):
            store._enqueue_in(conn, OutboxItem(f"a{i:06d}", "w1", "e", b"{}", created_at=T0, next_attempt_at=T0 + i))
        store._enqueue_in(conn, OutboxItem("b", "w2", "e", b"{}", created_at=T0, next_attempt_at=T0 + backlog))
    conn = store._conn()
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 1)
    claimed = store.claim_webhooks(T0 + backlog + 1, 40.0, 10)
    conn.set_progress_handler(None, 0)
    assert [c.event_id for c in claimed] == ["a000000", "b"]
    store.close()
    return steps


def test_a_claims_work_does_not_grow_with_one_wallets_backlog(tmp_path: Path) -> None:
    """Before: the claim walked every due pending item until it had ``limit`` wallets, under ``BEGIN IMMEDIATE``:
    about 200 times the work for 200 times the backlog (0.3 s per claim at 100k items, and other wallets' writes
    refused with "database is locked"; here about 4,100 and 820,000 instructions). Now it reads one row per wallet: the
    same count for both (239 on SQLite 3.40.1)."""
    small, large = _claim_steps(tmp_path / "small.db", 100), _claim_steps(tmp_path / "large.db", 20_000)
    assert large <= small + 10, (small, large)


V8_OUTBOX_INDEXES = (
    "CREATE INDEX outbox_due_key ON outbox (status, due)",
    "CREATE INDEX outbox_leased ON outbox (wallet_id) WHERE lease_id IS NOT NULL",
)


def _as_version_8(path: Path, version: int = 8) -> None:
    """Turn a new database into version 8's outbox (also version 9's, which added only the wallets' owner order):
    no heads, no ``finished``, the old claim's two indexes."""
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE outbox_heads")
        for index in ("outbox_pending", "outbox_finished"):
            conn.execute(f"DROP INDEX {index}")
        conn.execute("ALTER TABLE outbox DROP COLUMN finished")
        for statement in V8_OUTBOX_INDEXES:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")


@pytest.mark.parametrize("version", [8, 9])
def test_version_8_outbox_gets_heads_and_finish_times(version: int, tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    for wallet_id in ("w1", "w2", "w3"):
        store.create_wallet(make_wallet(wallet_id))
    store.close()
    _as_version_8(path, version)
    rows = [  # event, wallet, status, attempts, due, lease id, lease until
        ("a", "w1", "pending", 0, T0 + 1, None, None),
        ("b", "w1", "pending", 2, T0, "lease-b", T0 + 100),  # w1's earliest, in flight
        ("old", "w1", "pending", 1, T0 + 2, "lease-old", T0 - 50),  # a lease that ended long ago
        ("c", "w1", "delivered", 1, T0 - 20, None, None),
        ("d", "w2", "pending", 0, T0 + 5, None, None),
        ("e", "w2", "dead", 59, T0 - 30, None, None),  # no delivery line: finished "at" its creation
    ]
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO outbox VALUES (?, ?, 'decision', x'7b7d', ?, ?, ?, ?, ?, ?, ?)",
            [
                (e, w, T0 - 40, status, n, due, lease, until, time_key(due))
                for e, w, status, n, due, lease, until in rows
            ],
        )
        conn.execute("INSERT INTO deliveries VALUES ('c', 1, ?, 1, 200, NULL)", (T0 - 10,))
    migrated = SqliteStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 13
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        heads = conn.execute(
            "SELECT wallet_id, due, event_id, lease_id, lease_until FROM outbox_heads ORDER BY wallet_id"
        ).fetchall()
        finished = dict(conn.execute("SELECT event_id, finished FROM outbox").fetchall())
    assert {"outbox_heads_due", "outbox_pending", "outbox_finished"} <= indexes
    assert not indexes & {"outbox_due_key", "outbox_leased"}
    assert heads == [("w1", time_key(T0), "b", "lease-b", T0 + 100), ("w2", time_key(T0 + 5), "d", None, None)]
    assert finished == {"a": None, "b": None, "old": None, "c": time_key(T0 - 10), "d": None, "e": time_key(T0 - 40)}
    # As the version-8 claim: w1 is in flight until lease-b ends or is finished; then its earliest item goes first.
    assert [c.event_id for c in migrated.claim_webhooks(T0 + 10, 30.0, 10)] == ["d"]
    migrated.mark_failed("b", "lease-b", now=T0 + 11, error="HTTP 500", status_code=500, next_attempt_at=T0 + 12)
    assert [c.event_id for c in migrated.claim_webhooks(T0 + 12, 30.0, 10)] == ["a"]  # after w1's pause
    # The finish times from the migration are what retention goes by.
    migrated.prune(T0 - 10 + OUTBOX_RETENTION_SECONDS)
    assert migrated.get_outbox_item("c").status == OutboxStatus.DELIVERED
    assert [e for e in "abcde" if _exists(path, e)] == ["a", "b", "c", "d"]
    migrated.close()
    SqliteStore(path).close()  # opening the migrated (version-10) database again changes nothing
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM outbox_heads").fetchone()[0] == 2


def _exists(path: Path, event_id: str) -> bool:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT 1 FROM outbox WHERE event_id = ?", (event_id,)).fetchone() is not None


FIRST_V10_HEADS = (
    """CREATE TABLE outbox_heads (
        wallet_id TEXT PRIMARY KEY REFERENCES wallets(wallet_id), due BLOB NOT NULL, event_id TEXT NOT NULL,
        lease_id TEXT, lease_until REAL)""",
    "CREATE INDEX outbox_heads_due ON outbox_heads (due, event_id)",
)
"""The heads of the first version 10 (merge 1a7850b), before the pause came under the same version number."""


def _as_first_version_10(path: Path) -> None:
    """Turn a database into the first version 10's: its heads (rows kept) without ``paused`` and ``ready``, their
    index on (``due``, ``event_id``), ``user_version`` 10."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT wallet_id, due, event_id, lease_id, lease_until FROM outbox_heads").fetchall()
        conn.execute("DROP TABLE outbox_heads")
        for statement in FIRST_V10_HEADS:
            conn.execute(statement)
        conn.executemany("INSERT INTO outbox_heads VALUES (?, ?, ?, ?, ?)", rows)
        conn.execute("PRAGMA user_version = 10")


def test_first_version_10_heads_get_their_pause(tmp_path: Path) -> None:
    """Before: such a database opened without error (version 10 needed no migration) and every claim then failed
    with "no such column: ready" (webhooks stopped for good). Now the heads get the pause, keep their rows and
    leases, and claim, pause and finish as the current ones."""
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    for wallet_id in ("w1", "w2"):
        store.create_wallet(make_wallet(wallet_id))
    for event_id, wallet_id, at in (("a", "w1", T0), ("b", "w1", T0 + 1), ("c", "w2", T0 + 2)):
        store.enqueue_webhook(OutboxItem(event_id, wallet_id, "e", b"{}", created_at=at, next_attempt_at=at))
    (leased,) = store.claim_webhooks(T0, 30.0, 1)  # w1's "a", in flight until T0 + 30
    store.close()
    _as_first_version_10(path)
    migrated = SqliteStore(path)
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_xinfo(outbox_heads)")]
        index = [row[2] for row in conn.execute("PRAGMA index_info(outbox_heads_due)")]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    assert columns == ["wallet_id", "due", "event_id", "lease_id", "lease_until", "paused", "ready"]
    assert index == ["ready", "event_id"] and version == SCHEMA_VERSION
    (other,) = migrated.claim_webhooks(T0 + 10, 30.0, 10)  # w1 still in flight: w2's "c" only
    assert other.event_id == "c" and other.lease_id is not None
    migrated.mark_delivered("c", other.lease_id, now=T0 + 10, status_code=200)
    assert leased.lease_id is not None
    migrated.mark_failed("a", leased.lease_id, now=T0 + 11, error="HTTP 500", status_code=500, next_attempt_at=T0 + 500)
    assert migrated.claim_webhooks(T0 + 12, 30.0, 10) == []  # w1 paused (to T0 + 11 + the cap)
    assert [c.event_id for c in migrated.claim_webhooks(T0 + 80, 30.0, 10)] == ["b"]
    migrated.close()
    SqliteStore(path).close()  # opening it again changes nothing


def test_a_version_10_database_with_the_pause_keeps_its_heads(tmp_path: Path) -> None:
    """Only versions 1 to 9 get their heads computed from the pending items: opening a version 10 (or later) keeps
    them as they are, a wallet's pause with them (computing them again would drop it)."""
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.create_wallet(make_wallet("w1"))
    for event_id, at in (("a", T0), ("b", T0 + 1)):
        store.enqueue_webhook(OutboxItem(event_id, "w1", "e", b"{}", created_at=at, next_attempt_at=at))
    (leased,) = store.claim_webhooks(T0, 30.0, 1)
    assert leased.lease_id is not None
    store.mark_failed("a", leased.lease_id, now=T0 + 11, error="HTTP 500", status_code=500, next_attempt_at=T0 + 500)
    store.close()
    with sqlite3.connect(path) as conn:
        heads_before = conn.execute("SELECT * FROM outbox_heads").fetchall()
        conn.execute("PRAGMA user_version = 10")
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT * FROM outbox_heads").fetchall() == heads_before
    reopened = SqliteStore(path)
    assert reopened.claim_webhooks(T0 + 12, 30.0, 10) == []  # still paused
    reopened.close()
