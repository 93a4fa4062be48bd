"""SQLite-only store behaviour: pruning really deletes rows, older databases are migrated (window totals rebuilt
from the reservations, request/denial times re-keyed), time keys sort like the times, request and denial counts
agree with a scan and seek on the time key, only begin_signing commits without a log sync, and the reads of a
`reading` block share one read transaction."""

from __future__ import annotations

import math
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from parent_proxy.errors import InvalidInput, LimitExceeded
from parent_proxy.store import sqlite_outbox_heads as heads
from parent_proxy.store.model import OutboxItem
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.store.sqlite_schema import SCHEMA_VERSION
from parent_proxy.store.sqlite_time import time_key
from parent_proxy.store.validation import (
    IDEMPOTENCY_RETENTION_SECONDS,
    IDEMPOTENCY_STALE_SECONDS,
    MAX_WINDOW_SECONDS,
)
from tests.proxy.conftest import make_wallet

T0 = 1_700_000_000.0
DAY = 86_400


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608 - test table names


def test_prune_deletes_aged_out_rows_only(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.create_wallet(make_wallet("w1"))
    store.commit(store.reserve("w1", "old", {"SOL": 5}, {}, T0))
    store.release(store.reserve("w1", "old-released", {"SOL": 5}, {}, T0))
    store.reserve("w1", "old-pending", {"SOL": 5}, {}, T0)
    store.record_request("w1", T0)
    store.record_denial("w1", T0)
    store.commit(store.reserve("w1", "new", {"SOL": 7}, {}, T0 + DAY))
    store.record_request("w1", T0 + DAY)
    assert (_count(path, "reservations"), _count(path, "spend"), _count(path, "wallet_events")) == (4, 4, 3)
    store.prune(T0 + MAX_WINDOW_SECONDS + 2)
    # The pending reservation row stays (a late commit or release still finds it); its amount counts nowhere.
    assert (_count(path, "reservations"), _count(path, "spend"), _count(path, "wallet_events")) == (2, 1, 1)
    assert store.spent_in_window("w1", "SOL", MAX_WINDOW_SECONDS, T0 + MAX_WINDOW_SECONDS + 2) == 7
    store.release(store.reserve("w1", "later", {"SOL": 1}, {}, T0 + MAX_WINDOW_SECONDS + 3))
    store.close()


@pytest.mark.parametrize("now", [math.inf, math.nan, -1.0, "later", None])
def test_prune_refuses_a_bad_time_and_deletes_nothing(tmp_path: Path, now: object) -> None:
    """An infinite ``now`` would put every row before the horizon: window totals and event counts gone."""
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.create_wallet(make_wallet("w1"))
    store.commit(store.reserve("w1", "r1", {"SOL": 5}, {}, T0))
    store.record_request("w1", T0)
    store.begin_idempotent("w1", "k1", b"h" * 32, T0)
    before = [_count(path, table) for table in ("reservations", "spend", "wallet_events", "idempotency")]
    with pytest.raises(InvalidInput, match="now: must be a finite"):
        store.prune(now)  # type: ignore[arg-type]
    assert [_count(path, table) for table in ("reservations", "spend", "wallet_events", "idempotency")] == before
    assert before == [1, 1, 1, 1] and store.spent_in_window("w1", "SOL", DAY, T0) == 5
    store.close()


@pytest.mark.parametrize("version", [1, 2])
def test_older_database_is_migrated(tmp_path: Path, version: int) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.create_wallet(make_wallet("w1"))
    store.commit(store.reserve("w1", "a", {"SOL": 300, "USDC": 2}, {}, T0))
    store.release(store.reserve("w1", "b", {"SOL": 50}, {}, T0 + 1))
    store.reserve("w1", "c", {"SOL": 20}, {}, T0 + 2)
    store.close()
    with sqlite3.connect(path) as conn:  # back to version 1 (no running totals) or 2 (keyed by the REAL time)
        conn.execute("DROP TABLE spend")
        if version == 2:
            conn.execute(
                "CREATE TABLE spend (wallet_id TEXT NOT NULL, asset TEXT NOT NULL, created_at REAL NOT NULL,"
                " request_id TEXT NOT NULL, amount TEXT NOT NULL, cum TEXT NOT NULL,"
                " PRIMARY KEY (wallet_id, asset, created_at, request_id)) WITHOUT ROWID"
            )
            conn.execute("INSERT INTO spend VALUES ('w1', 'SOL', 1.0, 'stale', '999', '999')")
        conn.execute(f"PRAGMA user_version = {version}")
    migrated = SqliteStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert migrated.spent_in_window("w1", "SOL", DAY, T0 + 2) == 320
    assert migrated.spent_in_window("w1", "USDC", DAY, T0 + 2) == 2
    assert migrated.spent_in_window("w1", "SOL", 2, T0 + 2) == 20
    migrated.close()


def test_only_begin_signing_commits_without_syncing(tmp_path: Path) -> None:
    """`begin_signing` commits without a log sync (made durable by the `finish_signing` that must follow): its
    transaction alone runs under ``synchronous=NORMAL``, on the thread's one connection, which is back to ``FULL``
    for every other write, also after a refused `begin_signing`."""
    store = SqliteStore(tmp_path / "state.db")
    store.create_wallet(make_wallet("w1"))
    conn = store._conn()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    digest = bytes(32)
    claim = store.begin_signing("w1", "k", digest, request_id="r", amounts={"SOL": 1}, limits={}, now=T0)
    assert claim.reservation is not None
    assert statements[:2] == ["PRAGMA synchronous = NORMAL", "BEGIN IMMEDIATE"]
    assert statements[-2:] == ["COMMIT", "PRAGMA synchronous = FULL"]
    full = 2
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == full
    with pytest.raises(LimitExceeded) as refused:
        store.begin_signing("w1", "k2", digest, request_id="r2", amounts={"SOL": 5}, limits={("SOL", DAY): 3}, now=T0)
    assert refused.value.excess == {("SOL", DAY): (6, 3)}
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == full
    statements.clear()
    store.commit(claim.reservation)  # a durable write after it sees it
    assert "PRAGMA synchronous = NORMAL" not in statements
    assert store.spent_in_window("w1", "SOL", DAY, T0) == 1
    assert store._all == [conn]  # one connection for the thread: no second page cache dropped at each switch
    store.close()


def test_a_connection_that_cannot_be_made_durable_again_is_dropped(tmp_path: Path) -> None:
    """If ``synchronous=FULL`` cannot be restored after `begin_signing`, that connection is never used again (a later
    durable write would commit without a sync); the reservation it committed stands, as its caller was told."""
    store = SqliteStore(tmp_path / "state.db")
    store.create_wallet(make_wallet("w1"))
    conn = store._conn()

    def refuse_full(action: int, name: str | None, value: str | None, *_: object) -> int:
        refused = action == sqlite3.SQLITE_PRAGMA and name == "synchronous" and (value or "").upper() == "FULL"
        return sqlite3.SQLITE_DENY if refused else sqlite3.SQLITE_OK

    conn.set_authorizer(refuse_full)
    claim = store.begin_signing("w1", "k", bytes(32), request_id="r", amounts={"SOL": 1}, limits={}, now=T0)
    assert claim.reservation is not None
    fresh = store._conn()
    assert fresh is not conn and store._all == [fresh]
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        conn.execute("SELECT 1")  # closed, not left open beside it (its handle and the file's)
    assert fresh.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.commit(claim.reservation)
    assert store.spent_in_window("w1", "SOL", DAY, T0) == 1
    store.close()


def test_close_closes_every_connection_of_every_thread(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.create_wallet(make_wallet("w1"))
    mine = store._conn()
    with ThreadPoolExecutor(1) as pool:
        theirs = pool.submit(lambda: (store.count_requests("w1", T0), store._conn())[1]).result()
    assert theirs is not mine and sorted(map(id, store._all)) == sorted(map(id, (mine, theirs)))
    store.close()
    for conn in (mine, theirs):
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")
    assert store._all == [] and store._conn() is not mine  # a later call opens a new one
    store.close()


def test_reads_in_a_reading_block_share_one_snapshot(tmp_path: Path) -> None:
    """Inside `SqliteStore.reading` the reads run in one read transaction: a write committed meanwhile by another
    connection is not seen until the block ends (or a write of this thread ends the transaction); one BEGIN and one
    ROLLBACK for the whole block."""
    store, other = SqliteStore(tmp_path / "state.db"), SqliteStore(tmp_path / "state.db")
    store.create_wallet(make_wallet("w1"))
    statements: list[str] = []
    store._conn().set_trace_callback(statements.append)
    with store.reading():
        assert store.count_requests("w1", T0) == 0
        other.record_request("w1", T0)
        assert store.count_requests("w1", T0) == 0  # the block's snapshot
        assert store.get_wallet("w1").wallet_id == "w1"
        assert store.spent_in_window("w1", "SOL", DAY, T0) == 0
    assert [s for s in statements if s in ("BEGIN", "ROLLBACK")] == ["BEGIN", "ROLLBACK"]
    assert len(statements) == 6  # BEGIN, four reads (the total is one seek on an empty window), ROLLBACK
    assert store.count_requests("w1", T0) == 1
    with store.reading():
        assert store.count_requests("w1", T0) == 1
        other.record_request("w1", T0 + 1)
        store.record_denial("w1", T0)  # a write of this thread ends the snapshot: the next read sees both
        assert store.count_requests("w1", T0) == 2
    assert not store._conn().in_transaction
    store.close()
    other.close()


def test_time_keys_sort_like_the_times() -> None:
    times = [0.0, 5e-324, 1e-9, 0.001, 1.0, 1.5, 1_699_996_400.999, 1_700_000_000.0, 1_700_000_000.001, 2.0**53, 1e300]
    keys = [time_key(t) for t in times]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert time_key(-1.0) < time_key(-0.5) < time_key(0.0)
    assert time_key(-0.0) == time_key(0.0)  # equal times, equal keys: a seek from -0.0 or 0.0 finds the same rows


def _events_scan(path: Path, wallet_id: str, kind: str) -> list[float]:
    """Every ``kind`` time of ``wallet_id`` by a full table scan (no index), to compare with the store's seeks."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT at FROM wallet_events NOT INDEXED WHERE wallet_id = ? AND kind = ?", (wallet_id, kind)
        ).fetchall()
    return sorted(float(r[0]) for r in rows)


EVENT_TIMES = (0.0, 0.5, 1.0, 2.0, T0 - 1, T0 - 0.5, T0, T0, T0 + 1e-6, T0 + 0.25, T0 + 1, T0 + 3600, T0 + 3600.5)


def test_event_counts_match_a_scan_under_integral_and_fractional_times(tmp_path: Path) -> None:
    """Regression for the REAL-key seek that skipped an integral-valued row (`sqlite_time`): for every boundary at,
    just before and just after each recorded time, the counts equal a scan's, and the count is an index seek on
    the time key (not on the REAL ``at``)."""
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.create_wallet(make_wallet("w1"))
    store.create_wallet(make_wallet("w2"))
    for i, t in enumerate(EVENT_TIMES):
        store.record_request("w1", t)
        if i % 2:
            store.record_denial("w1", t)
        store.record_request("w2", t + 7)  # another wallet's events never count
    requests, denials = _events_scan(path, "w1", "request"), _events_scan(path, "w1", "denial")
    assert requests == sorted(EVENT_TIMES)
    boundaries = {-0.0, *EVENT_TIMES}
    boundaries |= {math.nextafter(t, math.inf) for t in EVENT_TIMES} | {math.nextafter(t, 0) for t in EVENT_TIMES}
    for since in sorted(boundaries):
        assert store.count_requests("w1", since) == sum(1 for t in requests if t >= since), since
        assert store.count_denials("w1", since) == sum(1 for t in denials if t >= since), since
        assert store.recent_requests("w1", since) == [t for t in requests if t >= since], since
        assert store.recent_denials("w1", since) == [t for t in denials if t >= since], since
    with sqlite3.connect(path) as conn:
        plan = " ".join(
            str(row[3])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM wallet_events WHERE wallet_id = ? AND kind = ? AND t >= ?",
                ("w1", "request", time_key(T0)),
            )
        )
    assert "wallet_events_by_key (wallet_id=? AND kind=? AND t>?)" in plan
    store.close()


def test_version_3_events_are_rekeyed(tmp_path: Path) -> None:
    """A version-3 database (times keyed by the REAL ``at``) keeps every event, now keyed by `time_key`, and loses
    the index no query uses any more."""
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.create_wallet(make_wallet("w1"))
    store.commit(store.reserve("w1", "a", {"SOL": 3}, {}, T0))
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE wallet_events")
        conn.execute(
            "CREATE TABLE wallet_events (wallet_id TEXT NOT NULL REFERENCES wallets(wallet_id), kind TEXT NOT NULL,"
            " at REAL NOT NULL)"
        )
        conn.execute("CREATE INDEX wallet_events_by_time ON wallet_events (wallet_id, kind, at)")
        conn.execute("CREATE INDEX wallet_events_by_age ON wallet_events (at)")
        conn.execute("CREATE INDEX reservations_by_time ON reservations (wallet_id, created_at)")
        conn.executemany(
            "INSERT INTO wallet_events VALUES ('w1', ?, ?)",
            [("request", T0), ("request", T0 + 0.5), ("denial", T0 + 1), ("request", T0 + 2)],
        )
        conn.execute("PRAGMA user_version = 3")
    migrated = SqliteStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        keys = conn.execute("SELECT t, at FROM wallet_events ORDER BY t").fetchall()
    assert {"wallet_events_by_key", "wallet_events_by_key_age"} <= indexes
    assert not indexes & {"wallet_events_by_time", "wallet_events_by_age", "reservations_by_time"}
    assert keys == [(time_key(at), at) for at in (T0, T0 + 0.5, T0 + 1, T0 + 2)]
    assert migrated.recent_requests("w1", T0) == [T0, T0 + 0.5, T0 + 2]
    assert migrated.count_requests("w1", T0 + 0.5) == 2
    assert migrated.count_denials("w1", T0 + 1) == 1
    assert migrated.spent_in_window("w1", "SOL", DAY, T0) == 3
    migrated.record_denial("w1", T0 + 3)
    assert migrated.count_denials("w1", T0) == 2
    migrated.close()
    SqliteStore(path).close()  # opening a version-4 database again changes nothing
    assert _events_scan(path, "w1", "denial") == [T0 + 1, T0 + 3]


def _outbox_item(event_id: str, due: float, wallet_id: str = "w1") -> OutboxItem:
    return OutboxItem(event_id, wallet_id, "decision", b"{}", created_at=T0, next_attempt_at=due)


def test_outbox_claims_match_a_scan_and_seek_on_the_due_key(tmp_path: Path) -> None:
    """The outbox is claimed by its ``due`` time key: every boundary at, just before and just after each due time
    claims exactly the items a scan finds due, in due order (one wallet each: a claim takes one item per wallet),
    and the claim is a seek on the wallet heads' ``ready`` key (their ``due`` when not paused) in that order (no
    sort, no seek on the REAL ``lease_until``)."""
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    dues = sorted(EVENT_TIMES)
    for i, due in enumerate(dues):
        store.create_wallet(make_wallet(f"w{i:02d}"))
        store.enqueue_webhook(_outbox_item(f"e{i:02d}", due, f"w{i:02d}"))
    boundaries = sorted({*dues} | {math.nextafter(t, math.inf) for t in dues} | {math.nextafter(t, 0) for t in dues})
    for now in boundaries:  # a zero lease ends at ``now``: every later claim may take the item again
        claimed = [item.event_id for item in store.claim_webhooks(now, 0.0, 1000)]
        assert claimed == [f"e{i:02d}" for i, due in enumerate(dues) if due <= now], now
    with sqlite3.connect(path) as conn:
        plan = " ".join(
            str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + heads.CLAIMABLE, (time_key(T0), T0, "[]", 10))
        )
    assert "SEARCH outbox_heads USING INDEX outbox_heads_due (ready<?)" in plan and "TEMP B-TREE" not in plan
    store.close()


V4_OUTBOX = """CREATE TABLE outbox (
    event_id TEXT PRIMARY KEY, wallet_id TEXT NOT NULL REFERENCES wallets(wallet_id), event_type TEXT NOT NULL,
    body BLOB NOT NULL, created_at REAL NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL, lease_id TEXT, lease_until REAL)"""


def test_version_4_outbox_gets_due_keys(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.create_wallet(make_wallet("w1"))
    store.close()
    with sqlite3.connect(path) as conn:  # the version-4 outbox: no ``due``, an index on the REAL time
        conn.execute("DROP TABLE outbox_heads")
        conn.execute("DROP TABLE outbox")
        conn.execute(V4_OUTBOX)
        conn.execute("CREATE INDEX outbox_due ON outbox (status, next_attempt_at)")
        conn.executemany(
            "INSERT INTO outbox VALUES (?, 'w1', 'decision', x'7b7d', ?, ?, 0, ?, NULL, NULL)",
            [("a", T0, "pending", T0 + 1), ("b", T0, "pending", T0), ("c", T0, "delivered", T0 - 5)],
        )
        conn.execute("PRAGMA user_version = 4")
    migrated = SqliteStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        keys = conn.execute("SELECT event_id, due, next_attempt_at FROM outbox ORDER BY event_id").fetchall()
    assert {"outbox_heads_due", "outbox_pending"} <= indexes
    assert not indexes & {"outbox_due", "outbox_due_key", "outbox_leased"}
    assert keys == [("a", time_key(T0 + 1), T0 + 1), ("b", time_key(T0), T0), ("c", time_key(T0 - 5), T0 - 5)]
    [b] = migrated.claim_webhooks(T0, 30.0, 10)
    assert b.event_id == "b"
    migrated.mark_delivered("b", b.lease_id or "", now=T0, status_code=200)  # w1 has no delivery in flight again
    assert [i.event_id for i in migrated.claim_webhooks(T0 + 1, 30.0, 10)] == ["a"]
    migrated.close()
    SqliteStore(path).close()  # opening a migrated database again changes nothing


def test_prune_deletes_expired_idempotency_records(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.create_wallet(make_wallet("w1"))
    h = bytes(32)
    store.begin_idempotent("w1", "done-old", h, T0)
    store.complete_idempotent("w1", "done-old", h, b"{}")
    store.begin_idempotent("w1", "dead", h, T0 + IDEMPOTENCY_RETENTION_SECONDS - IDEMPOTENCY_STALE_SECONDS - 2)
    now = T0 + IDEMPOTENCY_RETENTION_SECONDS + 1
    store.begin_idempotent("w1", "running", h, now - IDEMPOTENCY_STALE_SECONDS)
    store.begin_idempotent("w1", "done-new", h, now - IDEMPOTENCY_RETENTION_SECONDS)
    store.complete_idempotent("w1", "done-new", h, b"{}")
    store.prune(now)
    with sqlite3.connect(path) as conn:
        keys = sorted(r[0] for r in conn.execute("SELECT key FROM idempotency"))
    assert keys == ["done-new", "running"]  # each exactly at its limit: still held
    store.close()
