"""The parts `WebhookWorker.run_until` (`parent_proxy.webhooks`) shares its POST lanes with: which wallets' receivers
were slow lately (`SlowWallets`), how a claim keeps the slow ones to their share of the lanes (`lane_claims`), and
the threads the POSTs run on (`Lanes`).

Slow wallets are this process's memory, nothing stored: each process learns on its own which receivers are slow
(so a wallet's first slow POST in a process takes one of its ordinary lanes), and a restart forgets them. The memory
holds the wallets slow within the last ``remember_seconds`` and no others.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Generic, TypeVar

from parent_proxy.store.model import OutboxItem

Job = TypeVar("Job")
Result = TypeVar("Result")
Claim = Callable[[int, frozenset[str]], list[OutboxItem]]
"""``(limit, skip_wallets) -> items``: `Store.claim_webhooks` at the current time, with the worker's lease."""


class SlowWallets:
    """The wallets whose receivers were slow lately. A wallet is slow from the end of a POST that took at least
    ``slow_seconds`` (whatever its outcome: a receiver that never answers runs into the deadline) until
    ``remember_seconds`` later; a quicker POST meanwhile changes nothing, so a receiver cannot win an ordinary lane
    back by answering once between hangs. Times are ``time.monotonic()`` readings, passed in. Thread-safe."""

    def __init__(self, *, slow_seconds: float, remember_seconds: float) -> None:
        self._slow_seconds = slow_seconds
        self._remember_seconds = remember_seconds
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, wallet_id: str, *, took: float, now: float) -> None:
        """One POST to ``wallet_id``'s receiver: it took ``took`` seconds and ended at ``now``."""
        if took >= self._slow_seconds:
            with self._lock:
                self._until[wallet_id] = now + self._remember_seconds

    def current(self, now: float) -> frozenset[str]:
        """The wallets slow at ``now``; those whose time is up are forgotten."""
        with self._lock:
            for wallet_id in [w for w, until in self._until.items() if until <= now]:
                del self._until[wallet_id]
            return frozenset(self._until)

    def is_slow(self, wallet_id: str, now: float) -> bool:
        """Whether ``wallet_id`` is slow at ``now``."""
        with self._lock:
            return self._until.get(wallet_id, now) > now


def lane_claims(claim: Claim, *, free: int, slow_free: int, maybe_slow: frozenset[str]) -> Iterator[OutboxItem]:
    """Claim items for ``free`` lanes, at most ``slow_free`` of them for slow wallets, given every wallet that may be
    slow by the time a claim reads the outbox (``maybe_slow``: those slow now, and those with a POST in flight,
    which may end slow and free its wallet meanwhile). One claim when that cannot exceed the share; else a claim for
    ``slow_free`` lanes open to every wallet, then, if it filled them (more may be due), one for the rest that skips
    ``maybe_slow`` and what the first took. Items are yielded as claimed: the first claim's go out even if the
    second fails."""
    if free <= 0:
        return
    open_to_all = free if not maybe_slow or slow_free >= free else max(slow_free, 0)
    taken: frozenset[str] = frozenset()
    if open_to_all:
        items = claim(open_to_all, frozenset())
        yield from items
        if len(items) < open_to_all:
            return  # everything due is claimed
        taken = frozenset(item.wallet_id for item in items)
    if free > open_to_all:
        yield from claim(free - open_to_all, maybe_slow | taken)


class Lanes(Generic[Job, Result]):
    """``count`` daemon threads, each running ``work`` on one submitted job at a time (a thread keeps what it opened,
    such as its store connection, from one job to the next). Daemon threads, unlike
    `concurrent.futures.ThreadPoolExecutor`'s, which the interpreter waits for at exit: a job still under way does
    not hold up the end of the process."""

    def __init__(self, count: int, work: Callable[[Job], Result], *, name: str) -> None:
        self._count = count
        self._work = work
        self._jobs: queue.SimpleQueue[tuple[Job, Future[Result]] | None] = queue.SimpleQueue()
        for n in range(count):
            threading.Thread(target=self._serve, name=f"{name}-{n}", daemon=True).start()

    def submit(self, job: Job) -> Future[Result]:
        """Queue ``job``: it starts as soon as a thread is free. The future gets its result or its exception."""
        future: Future[Result] = Future()
        self._jobs.put((job, future))
        return future

    def close(self) -> None:
        """The threads end once the jobs submitted so far are done (without waiting for them here)."""
        for _ in range(self._count):
            self._jobs.put(None)

    def _serve(self) -> None:
        while (entry := self._jobs.get()) is not None:
            job, future = entry
            try:
                result = self._work(job)
            except BaseException as exc:  # as ThreadPoolExecutor does: the caller sees it through the future
                future.set_exception(exc)
            else:
                future.set_result(result)
