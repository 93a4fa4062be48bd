"""`PooledEnclaveClient`: `EnclaveClient` over a few kept-open connections instead of one connection per request.

Opening a Unix/vsock connection costs the proxy about 0.2 ms of event-loop time per request (measured with the
benchmark's transfer). The enclave server serves any number of frames on one connection, one answer per request,
in order, so a connection can carry one exchange after another as long as it is provably in step. The rules:

1. A connection carries one exchange at a time: it is taken out of the pool for the exchange.
2. It goes back only after a complete exchange: the whole request written and one whole answer frame read and
   decoded. A timeout, a cancellation, a framing or decoding error, or a closed stream closes it instead, so an
   answer that arrives late can never be read as the answer to a later request.
3. An idle connection is used again only within `IDLE_SECONDS` (well under the server's 10 s read timeout, after
   which it sends a ``timeout`` frame and closes), only if the peer has not closed it, and only on the event loop
   that opened it; otherwise it is closed and a fresh one opened.
4. At most `MAX_IDLE` connections are kept; more are closed after their exchange.

Nothing is retried (as in `EnclaveClient`): a request that fails on a reused connection fails like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from enclave_app.client import CredentialsSource, EnclaveClient
from enclave_app.errors import FramingError
from enclave_app.framing import read_frame, write_frame
from enclave_app.protocol import Request, Response, decode_response
from enclave_app.transport import Transport

MAX_IDLE = 16
"""Idle connections kept (the enclave server accepts 64 at once)."""
IDLE_SECONDS = 2.0
"""How long an idle connection may be used again (the server closes idle connections after 10 s)."""

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.AbstractEventLoop, float]


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


class PooledEnclaveClient(EnclaveClient):
    """`EnclaveClient` with connection reuse (see the module docstring for when a connection is reused)."""

    def __init__(
        self,
        address: str | Transport,
        *,
        timeout: float,
        wallet_timeout: float | None = None,
        aws_credentials: CredentialsSource | None = None,
    ) -> None:
        super().__init__(address, timeout=timeout, wallet_timeout=wallet_timeout, aws_credentials=aws_credentials)
        self._idle: list[_Conn] = []

    def _take(self, loop: asyncio.AbstractEventLoop) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        now = time.monotonic()
        while self._idle:
            reader, writer, owner, since = self._idle.pop()  # the most recently used first
            if owner is loop and now - since < IDLE_SECONDS and not reader.at_eof() and not writer.is_closing():
                return reader, writer
            if owner is loop:
                writer.close()
            elif not owner.is_closed():
                owner.call_soon_threadsafe(writer.close)
        return None

    def _give(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, loop: asyncio.AbstractEventLoop
    ) -> bool:
        if len(self._idle) >= MAX_IDLE or reader.at_eof() or writer.is_closing():
            return False
        self._idle.append((reader, writer, loop, time.monotonic()))
        return True

    async def _exchange(self, message: Request) -> Response:
        frame = message.to_wire()
        loop = asyncio.get_running_loop()
        taken = self._take(loop)
        reader, writer = taken if taken is not None else await self._address.connect()
        kept = False
        try:
            await write_frame(writer, frame)
            answer = await read_frame(reader)
            if answer is None:
                raise FramingError("the enclave closed the connection without answering")
            response = decode_response(answer)
            kept = self._give(reader, writer, loop)
            return response
        finally:
            if not kept:
                await _close(writer)

    async def aclose(self) -> None:
        """Close the idle connections (those of the running loop; others are closed by their loop)."""
        loop = asyncio.get_running_loop()
        idle, self._idle = self._idle, []
        for _reader, writer, owner, _since in idle:
            if owner is loop:
                await _close(writer)
            elif not owner.is_closed():
                owner.call_soon_threadsafe(writer.close)
