"""The hash-chained audit log: appends, every kind of tampering, and the `waiaas audit verify` command."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from parent_proxy.audit import AuditLog, canonical_json, iter_audit_records, record_hash, verify_audit_chain
from parent_proxy.errors import AuditChainError, ClockUnavailable, Conflict, InvalidInput, StoreUnavailable
from parent_proxy.store.model import AuditRecord, OutboxItem
from parent_proxy.store.protocol import Store
from parent_proxy.store.sqlite import SqliteStore
from tests.proxy.conftest import FakeClock, make_wallet


class BrokenClock:
    def now(self) -> float:
        raise OSError("clock device gone")


def _chain(store: Store, clock: FakeClock, n: int = 5) -> list[AuditRecord]:
    log = AuditLog(store, clock)
    for i in range(n):
        clock.advance(1.5)
        log.append("decision", {"i": i, "tier": "ALLOW", "why": ["ok"]}, wallet_id="w1", receipt=bytes([i]) * 8)
    return list(iter_audit_records(store))


def test_append_and_verify(store: Store, clock: FakeClock) -> None:
    records = _chain(store, clock)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].payload == b'{"i":0,"tier":"ALLOW","why":["ok"]}'
    verify_audit_chain(records)
    verify_audit_chain(records, expected_head=records[-1].hash)
    verify_audit_chain(records, expected_head=records[2].hash)  # a head kept earlier: the log has grown since
    verify_audit_chain([])
    with pytest.raises(AuditChainError, match="seq 4: the expected head is not in the chain"):
        verify_audit_chain(records[:4], expected_head=records[-1].hash)  # truncated below the anchor
    with pytest.raises(AuditChainError, match="the expected head is not in the chain"):
        verify_audit_chain([], expected_head=records[0].hash)  # everything removed


def _tampered(records: list[AuditRecord], how: str) -> list[AuditRecord]:
    r = list(records)
    if how == "edit-payload":
        r[2] = dataclasses.replace(r[2], payload=b'{"i":2,"tier":"DENY","why":["ok"]}')
    elif how == "edit-time":
        r[2] = dataclasses.replace(r[2], time=r[2].time + 1)
    elif how == "edit-receipt":
        r[2] = dataclasses.replace(r[2], receipt=None)
    elif how == "edit-and-rehash":
        r[2] = dataclasses.replace(r[2], event_type="other")
        r[2] = dataclasses.replace(r[2], hash=record_hash(r[2]))
    elif how == "delete":
        del r[2]
    elif how == "reorder":
        r[2], r[3] = r[3], r[2]
    elif how == "insert-rehashed":
        fake = AuditRecord(3, r[1].time, "w1", "decision", b"{}", None, r[1].hash, b"")
        r.insert(2, dataclasses.replace(fake, hash=record_hash(fake)))
    elif how == "non-canonical":
        r[2] = dataclasses.replace(r[2], payload=b'{"why": ["ok"], "i": 2, "tier": "ALLOW"}')
        r[2] = dataclasses.replace(r[2], hash=record_hash(r[2]))
    return r


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("edit-payload", "seq 3: hash does not match"),
        ("edit-time", "seq 3: hash does not match"),
        ("edit-receipt", "seq 3: hash does not match"),
        ("edit-and-rehash", "seq 4: prev_hash does not match"),
        ("delete", "seq 3: found seq 4 where seq 3 belongs"),
        ("reorder", "seq 3: found seq 4 where seq 3 belongs"),
        ("insert-rehashed", "seq 4: found seq 3 where seq 4 belongs"),
        ("non-canonical", "seq 3: payload is not canonical JSON"),
    ],
)
def test_tampering_is_caught_at_the_first_bad_seq(sqlite_store: SqliteStore, how: str, match: str) -> None:
    records = _chain(sqlite_store, FakeClock())
    with pytest.raises(AuditChainError, match=match) as info:
        verify_audit_chain(_tampered(records, how))
    assert info.value.seq == int(match.split(":", maxsplit=1)[0].split()[1])


def test_first_record_must_start_at_genesis(sqlite_store: SqliteStore) -> None:
    records = _chain(sqlite_store, FakeClock())
    with pytest.raises(AuditChainError, match="seq 1: found seq 2"):
        verify_audit_chain(records[1:])
    forged = dataclasses.replace(records[0], prev_hash=b"\x01" * 32)
    with pytest.raises(AuditChainError, match="seq 1: prev_hash does not match"):
        verify_audit_chain([dataclasses.replace(forged, hash=record_hash(forged))])


def test_bad_input_and_clock_failure_append_nothing(sqlite_store: SqliteStore) -> None:
    log = AuditLog(sqlite_store, FakeClock())
    with pytest.raises(InvalidInput, match=r"payload.amount: float is not allowed"):
        log.append("decision", {"amount": 1.5})
    with pytest.raises(InvalidInput, match="event_type: must be"):
        log.append("bad type", {})
    with pytest.raises(InvalidInput, match="object keys must be strings"):
        canonical_json({1: "x"})
    with pytest.raises(ClockUnavailable, match="the clock could not be read"):
        AuditLog(sqlite_store, BrokenClock()).append("decision", {})
    assert sqlite_store.audit_head() is None


def test_concurrent_appenders_retry_on_a_moved_head(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    other = SqliteStore(tmp_path / "state.db")  # a second handle, like a second process
    clock = FakeClock()
    AuditLog(sqlite_store, clock).append("a", {})
    stale_head = sqlite_store.audit_head()
    AuditLog(other, clock).append("b", {})

    class StaleFirst:
        """A store view whose first head read is stale, as if another appender won the race."""

        def __init__(self) -> None:
            self.reads = 0

        def __getattr__(self, name: str) -> object:
            return getattr(sqlite_store, name)

        def audit_head(self) -> AuditRecord | None:
            self.reads += 1
            return stale_head if self.reads == 1 else sqlite_store.audit_head()

    view = StaleFirst()
    record = AuditLog(view, clock).append("c", {})  # type: ignore[arg-type]
    assert (record.seq, view.reads) == (3, 2)
    verify_audit_chain(list(iter_audit_records(sqlite_store)))
    other.close()


def test_a_refused_webhook_is_raised_at_once_not_retried_as_a_race(store: Store, clock: FakeClock) -> None:
    """`AuditLog.append` retries only a head that moved; a refusal of the write itself (here: the webhook's event id
    is taken) is raised after one attempt, and leaves no record."""
    store.create_wallet(make_wallet("w1"))
    log = AuditLog(store, clock)
    item = OutboxItem("e1", "w1", "wallet.frozen", b"{}", created_at=clock.t, next_attempt_at=clock.t)
    first = log.append("wallet.frozen", {"n": 1}, wallet_id="w1", webhook=item)
    assert store.get_outbox_item("e1").event_type == "wallet.frozen"
    attempts = []

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        def append_audit(self, record: AuditRecord, webhook: OutboxItem | None = None) -> None:
            attempts.append(record.seq)
            store.append_audit(record, webhook)

    with pytest.raises(Conflict, match="outbox item e1 already exists"):
        AuditLog(Counting(), clock).append("wallet.frozen", {"n": 2}, wallet_id="w1", webhook=item)  # type: ignore[arg-type]
    assert attempts == [2]
    assert store.audit_head() == first


def test_an_append_that_always_loses_the_race_is_unavailable_not_a_conflict(sqlite_store: SqliteStore) -> None:
    """Losing the head to other appenders every time is contention (503), not a refusal by the stored state (409)."""
    clock = FakeClock()
    AuditLog(sqlite_store, clock).append("a", {})

    class AlwaysMoved:
        """A store view in which another appender moves the head between every read and write."""

        def __init__(self) -> None:
            self.seq = 1

        def __getattr__(self, name: str) -> object:
            return getattr(sqlite_store, name)

        def audit_head(self) -> AuditRecord | None:
            self.seq += 1
            return AuditRecord(self.seq, clock.t, None, "other", b"{}", None, bytes(32), bytes([self.seq]) * 32)

    with pytest.raises(StoreUnavailable, match="lost the race for the head 20 times") as info:
        AuditLog(AlwaysMoved(), clock).append("b", {})  # type: ignore[arg-type]
    assert not isinstance(info.value, Conflict)
    assert [r.event_type for r in iter_audit_records(sqlite_store)] == ["a"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from policies.cli import main; raise SystemExit(main())", *args],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_cli_verify_ok_broken_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    records = _chain(store, FakeClock(), n=3)
    store.close()
    ok = _cli("audit", "verify", "--db", str(path))
    assert ok.returncode == 0, ok.stderr
    assert f"OK: 3 records, head {records[-1].hash.hex()}" in ok.stdout
    anchored = _cli("audit", "verify", "--db", str(path), "--expect-head", "00" * 32)
    assert anchored.returncode == 1
    assert "the expected head is not in the chain" in anchored.stderr
    conn = sqlite3.connect(path)
    conn.execute("UPDATE audit_log SET payload = ? WHERE seq = 2", (b'{"i":9,"tier":"ALLOW","why":["ok"]}',))
    conn.commit()
    conn.close()
    broken = _cli("audit", "verify", "--db", str(path))
    assert broken.returncode == 1
    assert "FAILED: audit chain broken at seq 2: hash does not match" in broken.stderr
    missing = _cli("audit", "verify", "--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 2
    assert "no database at" in missing.stderr
    assert not (tmp_path / "nope.db").exists()
