"""`Completions`: a state-changing request runs to its end even when its HTTP task is cancelled.

A request that has claimed an idempotency key, reserved amounts or consumed an owner approval holds something that
only its own later steps commit, record or give back. asyncio cancels a task at whatever ``await`` it is suspended
in, and a plain ``Task.cancel()`` (a server stopping with a graceful-shutdown timeout, a test client going away)
is only delayed by a worker-thread call (`parent_proxy.worker_threads` waits for the function to end): the thread
finishes its store transaction, but its result (the reservation) is dropped, and the reservation, the claim or the
approval stays held until its window or expiry passes. That fails safe (counted, never signed), but the agent
loses the request and the owner the approval.

So the app runs every request other than GET and HEAD in a task of its own (`run`): a cancellation ends the
caller's wait, never the request. The request keeps every time limit of its own steps (the enclave timeout, the
store's busy timeout, the chain client's timeouts), so it cannot run for ever; its answer, if the caller is gone, is
kept where the client can still find it (an idempotent replay, the audit log, the webhook). On shutdown the app
waits for those still running (`drain`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class Completions:
    """The requests running in their own tasks (one instance per app)."""

    def __init__(self) -> None:
        self._running: set[asyncio.Future[Any]] = set()

    @property
    def running(self) -> int:
        return len(self._running)

    async def run(self, work: Awaitable[T]) -> T:
        """Await ``work`` in a task of its own that the caller's cancellation does not cancel."""
        task = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            # Marks the outcome retrieved: a request whose caller is gone leaves no "exception was never
            # retrieved" behind (a caller still waiting gets the same exception through the shield).
            task.exception()

    async def drain(self) -> None:
        """Wait until every request started so far has finished (each is bounded by its own steps' timeouts)."""
        while self._running:
            await asyncio.wait(set(self._running))
