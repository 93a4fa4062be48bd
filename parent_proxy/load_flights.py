"""`LoadFlights`: at most one wallet load under way per wallet id, and the requests that need it wait for it.

After a signer restart the enclave holds no wallet, and every request for a wallet makes the relay load it again
(`parent_proxy.enclave_relay.EnclaveRelay.ensure_wallet`). Each load unseals the agent key in the enclave: an
Argon2id derivation of 64 MiB when self-hosted (one at a time per signer process), a KMS Decrypt with an NSM
attestation in the cloud; the signer's worker threads and the relay's enclave connections are held meanwhile. Sent
once per concurrent request, N requests for one wallet cost N unseals, and the first request of any other wallet
waits behind them. So the relay loads each wallet once at a time (a "flight"):

1. A request that finds no flight for its wallet starts one (`LoadFlights.fly`) and runs the load itself.
2. A request that finds one waits for its outcome (`LoadFlights.join`). Its own cancellation ends only its wait.
3. A flight that fails hands its error to every request that waited for it; it is not kept: the next request
   after it starts a flight of its own (a failure is never cached).
4. A flight whose request was cancelled has no outcome: the requests waiting for it check again, and one of them
   starts a new flight.
5. A flight is dropped (`LoadFlights.drop`) when the relay forgets what it loaded (an enclave restart detected):
   a request after that never waits for a load begun in the previous enclave session (but for the flight that
   detected the restart itself, which loads its wallet again in the new session).

Only the flights under way are kept (one future per wallet being loaded), so memory is bounded by the requests in
progress. Flights are per event loop: a request on another loop than the flight's runs its own load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a flight ended: ``error`` is what its load raised (None: it succeeded, or its request was cancelled)."""

    error: Exception | None
    traceback: TracebackType | None = None

    def raise_error(self) -> None:
        """Raise the flight's error, with the traceback it had when the load raised it; nothing if none."""
        if self.error is not None:
            raise self.error.with_traceback(self.traceback)


class LoadFlights:
    """The loads under way, one per key (a wallet id); see the module docstring."""

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[Outcome]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def join(self, key: str) -> Outcome | None:
        """Wait for the flight under way for ``key`` and return its outcome; None at once if there is none (on this
        event loop)."""
        flight = self._flights.get(key)
        if flight is None or flight.get_loop() is not asyncio.get_running_loop():
            return None
        await asyncio.wait([flight])  # not `await flight`: a waiter's cancellation would cancel the flight
        return flight.result()

    async def fly(self, key: str, load: Callable[[], Awaitable[None]]) -> None:
        """Run ``load()`` as the flight for ``key``: requests calling `join` meanwhile wait for it. Its error is
        raised here as it came, and handed to them."""
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        outcome = Outcome(None)
        try:
            await load()
        except Exception as exc:
            outcome = Outcome(exc, exc.__traceback__)
            raise
        finally:
            if self._flights.get(key) is flight:  # dropped meanwhile: a later flight may hold the key now
                del self._flights[key]
            flight.set_result(outcome)

    def drop(self, key: str | None = None, *, keep: str | None = None) -> None:
        """Forget the flight under way for ``key`` (with None: all, but ``keep``'s): later requests start their own.
        Those already waiting still get its outcome."""
        if key is not None:
            self._flights.pop(key, None)
            return
        kept = self._flights.get(keep) if keep is not None else None
        self._flights.clear()
        if kept is not None and keep is not None:
            self._flights[keep] = kept
