"""The SQLite store's writers take turns on ``<database>-writer`` (`sqlite_writer_lock`): held from before
``BEGIN IMMEDIATE`` to the end of each write transaction (also one that fails), never by a read, polled with a
bounded, growing wait, and a lock file that cannot be opened or taken makes the store unavailable with nothing
written."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from parent_proxy.errors import StoreUnavailable
from parent_proxy.store import sqlite_writer_lock as writer_lock
from parent_proxy.store.sqlite import SqliteStore
from tests.proxy.conftest import make_wallet


@pytest.fixture
def other(tmp_path: Path) -> Iterator[int]:
    """A descriptor of the lock file of ``tmp_path / "state.db"`` that is not the store's (another process's)."""
    fd = os.open(writer_lock.lock_path(str(tmp_path / "state.db")), os.O_RDWR | os.O_CREAT, 0o600)
    yield fd
    os.close(fd)


def _free(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def _wallets(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM wallets").fetchone()[0])


def test_a_write_holds_the_lock_until_its_transaction_ends(tmp_path: Path, other: int) -> None:
    store = SqliteStore(tmp_path / "state.db")
    assert _free(other)
    with store._write() as conn:
        assert not _free(other)
        assert conn.in_transaction  # taken before BEGIN IMMEDIATE, held through it
    assert _free(other)
    with pytest.raises(RuntimeError), store._write():
        assert not _free(other)
        raise RuntimeError("the transaction fails")
    assert _free(other)  # released after the rollback too
    with store._read():
        assert _free(other)  # reads never take it
    store.close()


def test_the_lock_file_is_the_owners_only(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "state.db").close()
    mode = os.stat(writer_lock.lock_path(str(tmp_path / "state.db"))).st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_close_releases_the_descriptors(tmp_path: Path, other: int) -> None:
    store = SqliteStore(tmp_path / "state.db")
    fds = list(store._lock_fds)
    assert fds
    store.close()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_each_thread_has_its_own_descriptor_so_threads_take_turns(tmp_path: Path) -> None:
    """flock excludes open file descriptions, not processes: a descriptor shared by the threads of one store would
    let a second thread through while the first writes (it would then wait in SQLite's busy handler)."""
    store = SqliteStore(tmp_path / "state.db")
    store.create_wallet(make_wallet("w1"))
    thread = threading.Thread(target=store.create_wallet, args=(make_wallet("w2"),))
    thread.start()
    thread.join(10)
    assert _wallets(tmp_path / "state.db") == 2
    mine, theirs = store._local.lock_fd, [fd for fd in store._lock_fds if fd != store._local.lock_fd]
    assert mine is not None and len(theirs) == 1
    with store._write():
        assert not _free(theirs[0])  # the other thread's descriptor cannot take it while this thread writes
    assert _free(theirs[0])
    store.close()


def test_a_lock_held_past_the_busy_timeout_makes_the_store_unavailable(tmp_path: Path, other: int) -> None:
    store = SqliteStore(tmp_path / "state.db", busy_timeout=0.05)
    fcntl.flock(other, fcntl.LOCK_EX)
    with pytest.raises(StoreUnavailable, match="another writer held the lock"):
        store.create_wallet(make_wallet("w1"))
    fcntl.flock(other, fcntl.LOCK_UN)
    assert _wallets(tmp_path / "state.db") == 0
    store.create_wallet(make_wallet("w1"))  # free again: the store writes
    assert _wallets(tmp_path / "state.db") == 1
    store.close()


def test_a_lock_file_that_cannot_be_opened_makes_the_store_unavailable(tmp_path: Path) -> None:
    os.mkdir(writer_lock.lock_path(str(tmp_path / "state.db")))  # a directory cannot be opened for writing
    with pytest.raises(StoreUnavailable, match="cannot open its writer lock"):
        SqliteStore(tmp_path / "state.db")
    assert not (tmp_path / "state.db").exists()  # the lock comes first: nothing was created


class _Clock:
    def __init__(self, on_sleep: int = -1, fd: int = -1) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self._on_sleep, self._fd = on_sleep, fd

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if len(self.sleeps) == self._on_sleep:
            fcntl.flock(self._fd, fcntl.LOCK_UN)  # the other writer finishes during this wait


def test_acquire_polls_more_slowly_up_to_its_cap_and_takes_the_lock_once_free(tmp_path: Path, other: int) -> None:
    mine = writer_lock.open_lock(str(tmp_path / "state.db"))
    fcntl.flock(other, fcntl.LOCK_EX)
    clock = _Clock(on_sleep=7, fd=other)
    writer_lock.acquire(mine, 5.0, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == pytest.approx([50e-6, 100e-6, 200e-6, 400e-6, 500e-6, 500e-6, 500e-6])
    assert not _free(other)  # taken
    writer_lock.release(mine)
    assert _free(other)
    os.close(mine)


def test_acquire_gives_up_at_its_timeout_without_the_lock(tmp_path: Path, other: int) -> None:
    mine = writer_lock.open_lock(str(tmp_path / "state.db"))
    fcntl.flock(other, fcntl.LOCK_EX)
    clock = _Clock()
    with pytest.raises(StoreUnavailable, match=r"held the lock for 0\.002 s"):
        writer_lock.acquire(mine, 0.002, clock=clock, sleep=clock.sleep)
    assert sum(clock.sleeps) == pytest.approx(0.002)  # the last wait is cut to what is left, never past it
    assert clock.sleeps[-1] < 500e-6
    fcntl.flock(other, fcntl.LOCK_UN)
    assert _free(mine)  # the failed attempt holds nothing
    os.close(mine)


def test_acquire_on_a_closed_descriptor_is_a_store_failure(tmp_path: Path) -> None:
    mine = writer_lock.open_lock(str(tmp_path / "state.db"))
    os.close(mine)
    with pytest.raises(StoreUnavailable, match="writer lock"):
        writer_lock.acquire(mine, 1.0)
