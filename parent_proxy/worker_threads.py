"""`WorkerThreads`: the worker threads that run blocking store work off the event loop (`Services.run`).

What ``anyio.to_thread.run_sync(function, limiter=CapacityLimiter(size))`` did here, with less work per call
(measured: about 15 us less CPU per hop, three hops per signed request; no limiter, cancel scope or per-call
backend lookup, a C queue, one wake-up each way):

- at most ``size`` functions run at once, each on a thread of this pool, in a copy of the caller's context;
- the caller's cancellation does not interrupt a function that was handed over: the caller waits for it to end,
  then the cancellation is raised (its result is dropped), as under anyio's shielded wait;
- a thread idle for `IDLE_SECONDS` ends (a later call starts another), so a pool nobody uses holds no thread.

A function's exception is raised in the caller. Results are handed back on the caller's event loop; if that loop
has closed meanwhile, the result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

IDLE_SECONDS = 10.0
"""A worker thread ends after this long without work (anyio's worker threads: the same)."""

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", contextvars.Context, Callable[..., Any], tuple[Any, ...]]


def _deliver(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller went away (its loop is cancelling everything)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class WorkerThreads:
    """Up to ``size`` threads, started on demand, running what `run` hands them in order."""

    def __init__(self, size: int, name: str = "store worker") -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._waiting = 0  # jobs put and not yet taken; counted with ``_idle``, both under the lock

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on a worker thread; its result or exception (see the module docstring)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job: _Job = (loop, future, contextvars.copy_context(), function, args)
        with self._lock:
            # A thread for every job no idle thread will take (a burst must not queue behind one idle thread);
            # started before anything is counted or queued, so a thread that cannot start costs no slot or job.
            if self._waiting >= self._idle and self._threads < self._size:
                threading.Thread(target=self._work, name=self._name, daemon=True).start()
                self._threads += 1
            self._waiting += 1
            self._queue.put(job)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):  # anyio's cancellation waits too; a plain cancel is waited out
                while not future.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait([future])
            if not future.cancelled():
                future.exception()  # retrieved: the cancellation below is what the caller gets
            raise

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                loop, future, context, function, args = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._waiting == 0:  # under the lock: `run` starts a thread for anything put after this
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                self._waiting -= 1
            result, error = None, None
            try:
                result = context.run(function, *args)
            except BaseException as exc:  # handed to the caller, whatever it is
                error = exc
            with contextlib.suppress(RuntimeError):  # the caller's loop has closed: nobody is waiting
                loop.call_soon_threadsafe(_deliver, future, result, error)
            del result, error, future, function, args, context
