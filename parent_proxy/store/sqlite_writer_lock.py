"""Writers of one SQLite file take turns on a lock file beside it before ``BEGIN IMMEDIATE``.

SQLite's own write lock stays what makes a check and its write atomic; this lock only changes how a writer waits.
A connection that finds SQLite's write lock taken sleeps in SQLite's busy handler, 1, 2, 5, 10 ms and so on, however
soon the lock comes free: with two proxy processes (``WAIAAS_WORKERS``), or a proxy thread writing the outbox while
another signs, a collision costs a request milliseconds. Here a writer takes an exclusive ``flock`` on
``<database>-writer`` first and, when it is held, polls it every 50 us at first, then less often (at most every
500 us), so a collision costs about the other writer's transaction. The wait is bounded like SQLite's (the busy
timeout), then the store is unavailable, as it would be for SQLite's lock.

Each connection (one per thread, `sqlite_base`) holds its own descriptor: ``flock`` excludes open file descriptions,
so threads of one process take turns too. A process that dies holding the lock releases it with its descriptors. A
writer that does not take this lock (the ``sqlite3`` shell, a program of its own) still meets SQLite's write lock
and its busy handler, as before.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable

from parent_proxy.errors import StoreUnavailable

FIRST_POLL_SECONDS = 50e-6
LAST_POLL_SECONDS = 500e-6


def lock_path(database: str) -> str:
    return f"{database}-writer"


def open_lock(database: str) -> int:
    """A descriptor of the database's lock file (created, owner-only, if missing); StoreUnavailable if it cannot be
    opened."""
    try:
        return os.open(lock_path(database), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreUnavailable(f"sqlite store unavailable: cannot open its writer lock: {exc.strerror}") from exc


def acquire(
    fd: int,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Take the lock on ``fd``, waiting at most ``timeout`` seconds (then StoreUnavailable, the lock not taken)."""
    deadline = clock() + timeout
    delay = FIRST_POLL_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError as exc:
            raise StoreUnavailable(f"sqlite store unavailable: writer lock: {exc.strerror}") from exc
        left = deadline - clock()
        if left <= 0:
            raise StoreUnavailable(f"sqlite store unavailable: another writer held the lock for {timeout:g} s")
        sleep(min(delay, left))
        delay = min(delay * 2, LAST_POLL_SECONDS)


def release(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
