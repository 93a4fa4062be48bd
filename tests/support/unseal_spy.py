"""Spies at the enclave's sealer seam and at its handler, for tests of concurrent wallet loads: `SpySealers` counts
unseals (and the most under way at once) and holds each until the test releases it; `Arrivals` counts the requests
the handler has begun to serve. The real sealers and handler run behind them."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from enclave_app.protocol import AwsCredentials, Request, Response
from enclave_app.sealing import SealBinding, Sealer, Sealers
from enclave_app.server import Handler


class SpySealers:
    """The real sealers; counts the unseals begun and the most under way at once, and holds each unseal until
    ``release`` is set."""

    def __init__(self, inner: Sealers) -> None:
        self.inner, self.lock = inner, threading.Lock()
        self.started, self.release = threading.Event(), threading.Event()
        self.unseals = self.running = self.peak = 0

    def for_request(self, credentials: AwsCredentials | None) -> _SpySealer:
        return _SpySealer(self, self.inner.for_request(credentials))


@dataclass
class _SpySealer:
    spy: SpySealers
    sealer: Sealer

    def seal(self, secret: bytes, binding: SealBinding) -> bytes:
        return self.sealer.seal(secret, binding)

    def unseal(self, blob: bytes, binding: SealBinding) -> bytes:
        spy = self.spy
        with spy.lock:
            spy.unseals, spy.running = spy.unseals + 1, spy.running + 1
            spy.peak = max(spy.peak, spy.running)
        spy.started.set()
        try:
            if not spy.release.wait(10):
                raise AssertionError("the test never released the unseal")
            return self.sealer.unseal(blob, binding)
        finally:
            with spy.lock:
                spy.running -= 1

    def close(self) -> None:
        self.sealer.close()


class Arrivals:
    """Counts the requests the handler has begun to serve (so the test knows every load reached the enclave)."""

    def __init__(self, handler: Handler) -> None:
        self.count, handle = 0, handler.handle

        async def counted(request: Request) -> Response:
            self.count += 1
            return await handle(request)

        handler.handle = counted  # type: ignore[method-assign]

    async def reach(self, count: int) -> None:
        for _ in range(500):
            if self.count >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{self.count} requests reached the enclave, not {count}")
