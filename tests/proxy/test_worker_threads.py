"""`WorkerThreads` (`Services.run`): results and exceptions reach the caller, the caller's context goes with the
function, at most ``size`` functions run at once, a cancelled caller waits for its function to end before the
cancellation is raised, and idle threads end."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import anyio
import pytest

from parent_proxy import worker_threads
from parent_proxy.worker_threads import WorkerThreads

CALLER = contextvars.ContextVar("CALLER", default="unset")


def test_result_exception_and_context_reach_across() -> None:
    async def main() -> None:
        pool = WorkerThreads(1)
        assert await pool.run(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ZeroDivisionError, match="division by zero"):
            await pool.run(lambda: 1 / 0)
        CALLER.set("the caller's")
        assert await pool.run(CALLER.get) == "the caller's"
        assert await pool.run(lambda: threading.current_thread().name) == "store worker"

    asyncio.run(main())


def test_at_most_size_functions_run_at_once() -> None:
    lock, running, peak = threading.Lock(), [0], [0]

    def job() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.005)
        with lock:
            running[0] -= 1

    async def main(size: int) -> None:
        pool = WorkerThreads(size)
        await asyncio.gather(*(pool.run(job) for _ in range(20)))

    for size in (1, 3):
        peak[0] = 0
        asyncio.run(main(size))
        assert peak[0] == size


def test_a_burst_runs_on_as_many_threads_as_the_pool_allows() -> None:
    """With one idle thread warm, four calls at once run at once (each waits for the other three at a barrier): a
    call must not queue behind a busy thread while the pool has room."""
    barrier = threading.Barrier(4, timeout=10)

    async def main() -> None:
        pool = WorkerThreads(4)
        await pool.run(lambda: None)  # one thread, now idle
        await asyncio.gather(*(pool.run(barrier.wait) for _ in range(4)))

    asyncio.run(main())


def test_a_thread_that_cannot_start_costs_no_slot_and_queues_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    pool = WorkerThreads(1)
    real_start = threading.Thread.start

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    async def refused() -> None:
        with pytest.raises(RuntimeError, match="can't start new thread"):
            await pool.run(ran.append, "refused")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    asyncio.run(refused())
    monkeypatch.setattr(threading.Thread, "start", real_start)
    # The one slot is free again: a later call runs (on a thread of its own here, so a pool left waiting for ever
    # fails the test instead of hanging it), and the refused job never does.
    later = threading.Thread(target=lambda: asyncio.run(pool.run(ran.append, "later")), daemon=True)
    later.start()
    later.join(10)
    assert not later.is_alive() and ran == ["later"]


@pytest.mark.parametrize("how", ["task.cancel", "anyio scope"])
def test_a_cancelled_caller_waits_for_its_function(how: str) -> None:
    """The function is not interrupted: the cancellation is raised only once it has ended (as anyio's shielded
    wait did), so what it wrote is never in flight when the caller's clean-up runs."""
    ended = threading.Event()

    def slow() -> str:
        time.sleep(0.2)
        ended.set()
        return "done"

    async def main() -> None:
        pool = WorkerThreads(1)
        if how == "task.cancel":
            task = asyncio.ensure_future(pool.run(slow))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with anyio.move_on_after(0.05):
                await pool.run(slow)
        assert ended.is_set()

    asyncio.run(main())


def test_idle_threads_end_and_a_later_call_starts_another(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_threads, "IDLE_SECONDS", 0.05)

    async def main() -> None:
        pool = WorkerThreads(2)
        first = await pool.run(threading.get_ident)
        deadline = time.monotonic() + 5
        while pool._threads and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert pool._threads == 0
        assert await pool.run(lambda: 7) == 7
        assert pool._threads == 1
        assert first != threading.get_ident()

    asyncio.run(main())


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size must be at least 1"):
        WorkerThreads(0)
