"""Connections and transactions for the SQLite adapter, and the one place sqlite3 errors are translated.

Each thread gets its own connection (sqlite3 connections are not shared across threads). Writes run in
``BEGIN IMMEDIATE`` transactions (see `sqlite_schema`), so a check and the write it guards happen under the
database's write lock, also across processes sharing the file; writers take turns on a lock file first
(`sqlite_writer_lock`), so a writer that finds another one writing waits for it, not for SQLite's busy handler.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from parent_proxy.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from parent_proxy.store import sqlite_events as events
from parent_proxy.store import sqlite_outbox_due as outbox
from parent_proxy.store import sqlite_outbox_heads as heads
from parent_proxy.store import sqlite_spend as spend
from parent_proxy.store import sqlite_writer_lock as writer_lock
from parent_proxy.store.sqlite_schema import (
    DEFAULT_BUSY_TIMEOUT_SECONDS,
    PRAGMAS,
    SCHEMA,
    SCHEMA_VERSION,
    SYNCHRONOUS_FULL,
    SYNCHRONOUS_NORMAL,
    add_approval_message_hash,
    add_approval_signed_answer,
    add_approval_signing,
    add_order_envelope,
    add_order_sequence,
)


class _ThreadState(threading.local):
    """Per thread: its connection, its descriptor of the writer lock file, and whether a `SqliteBase.reading` block
    (and its read transaction) is open."""

    conn: sqlite3.Connection | None = None
    lock_fd: int | None = None
    reading: bool = False
    snapshot: bool = False


@contextmanager
def _translate() -> Iterator[None]:
    """The one place where sqlite3 errors become store errors."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"constraint violated: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"sqlite store unavailable: {exc}") from exc


class SqliteBase:
    """Connection handling of `SqliteStore`. ``path`` is a file path (``:memory:`` is refused: it cannot be shared)."""

    def __init__(self, path: str | Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT_SECONDS) -> None:
        self._path = str(path)
        if self._path == ":memory:" or not self._path:
            raise InvalidInput("path", "must be a file path")
        self._busy_timeout = busy_timeout
        self._local = _ThreadState()
        self._all: list[sqlite3.Connection] = []
        self._lock_fds: list[int] = []
        self._lock = threading.Lock()
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if not 0 <= version <= SCHEMA_VERSION:
                raise StoreUnavailable(f"unknown schema version {version} in {self._path}")
            if version == 2:  # version 2's running totals were keyed by the REAL time (see `sqlite_spend`)
                conn.execute("DROP TABLE IF EXISTS spend")
            events.migrate(conn)  # versions 1 to 3 keyed request/denial times by the REAL time
            outbox.migrate(conn)  # versions 1 to 4 claimed the outbox by the REAL time
            heads.migrate(conn)  # versions 1 to 9 kept finished items for ever and claimed by the items
            heads.add_pause(conn)  # the first version 10 had heads without the pause (told by its shape)
            conn.execute("DROP INDEX IF EXISTS reservations_by_time")  # unused since version 2 (totals in ``spend``)
            add_order_sequence(conn)  # versions 1 to 6 kept no owner order sequence
            add_order_envelope(conn)  # versions 1 to 8 kept no owner order
            add_approval_signing(conn)  # versions 1 to 10 kept no approval's signing
            add_approval_message_hash(conn)  # versions 1 to 11 kept no approval's message hash
            add_approval_signed_answer(conn)  # versions 1 to 12 kept no approval's signed answer
            for statement in SCHEMA:  # also creates the tables older versions lack (agent keys: 6, creation nonces: 8)
                conn.execute(statement)
            if version in (1, 2):  # running window totals, computed once from the reservations
                spend.rebuild(conn)
            if 1 <= version < 10:  # the outbox's wallet heads, computed once from the pending items
                heads.rebuild(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- connections and transactions -----------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (``synchronous=FULL`` outside `_write(durable=False)`)."""
        conn = self._local.conn
        if conn is None:
            with _translate():
                conn = sqlite3.connect(
                    self._path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
                )
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise StoreUnavailable(f"could not enable WAL on {self._path} (mode {mode})")
                for pragma in PRAGMAS:
                    conn.execute(pragma)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _writer_lock(self) -> int:
        """This thread's descriptor of the writer lock file (`sqlite_writer_lock`)."""
        fd = self._local.lock_fd
        if fd is None:
            fd = writer_lock.open_lock(self._path)
            self._local.lock_fd = fd
            with self._lock:
                self._lock_fds.append(fd)
        return fd

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction. ``durable=False`` commits without syncing the log (see
        `SqliteStore.begin_signing` for the one use and why it is safe): the next durable commit of any connection
        to the file syncs the write-ahead log, which holds this commit's frames before its own. It runs on the
        thread's one connection, ``synchronous=NORMAL`` for this transaction only (a second connection would find
        the log changed by the first at each transaction and drop its whole page cache). Inside a `reading`
        block, its read transaction ends first: later reads see this write. The thread holds the writer lock
        (`sqlite_writer_lock`) from before ``BEGIN IMMEDIATE`` until the transaction has ended."""
        self._end_snapshot()
        fd = self._writer_lock()
        conn = self._conn()
        writer_lock.acquire(fd, self._busy_timeout)
        try:
            with _translate():
                if not durable:
                    conn.execute(SYNCHRONOUS_NORMAL)
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield conn
                    except BaseException:
                        conn.rollback()
                        raise
                    conn.commit()
                finally:
                    if not durable:
                        self._durable_again(conn)
        finally:
            writer_lock.release(fd)

    def _durable_again(self, conn: sqlite3.Connection) -> None:
        """Back to ``synchronous=FULL`` after `_write(durable=False)`. If even that fails, the connection is dropped
        (the thread's next call opens a new one, FULL from the start) rather than left committing without a sync; the
        transaction's own outcome stands and is what the caller sees."""
        try:
            conn.execute(SYNCHRONOUS_FULL)
        except sqlite3.Error:
            self._local.conn = None
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            conn.close()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """`Store.reading`: the reads of this thread in the block share one read transaction (one snapshot of the
        file), begun by the first of them; a write ends it (`_write`), the next read begins another."""
        if self._local.reading:  # nested: the outer block's transaction
            yield
            return
        self._local.reading = True
        try:
            yield
        finally:
            self._local.reading = False
            self._end_snapshot()

    def _end_snapshot(self) -> None:
        local = self._local
        if local.snapshot:
            local.snapshot = False
            conn = self._conn()
            with _translate():
                conn.rollback()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        local = self._local
        if local.reading:  # one read transaction for the block (`reading`)
            try:
                with _translate():
                    if not local.snapshot:
                        conn.execute("BEGIN")
                        local.snapshot = True
                    yield conn
            except BaseException:
                self._end_snapshot()  # a failed read leaves no transaction behind; the next read begins another
                raise
            return
        with _translate():
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.rollback()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
            for fd in self._lock_fds:
                os.close(fd)
            self._lock_fds.clear()
        self._local = _ThreadState()

    @staticmethod
    def _require_wallet(conn: sqlite3.Connection, wallet_id: str) -> None:
        if conn.execute("SELECT 1 FROM wallets WHERE wallet_id = ?", (wallet_id,)).fetchone() is None:
            raise NotFound(f"wallet {wallet_id} not found")
