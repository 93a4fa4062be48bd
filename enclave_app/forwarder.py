"""In-enclave TCP -> vsock forwarder: boto3 reaches ``kms.<region>.amazonaws.com:443`` through the parent.

Inside the enclave, ``kms.<region>.amazonaws.com`` resolves to 127.0.0.1 (an /etc/hosts entry in the image) and
this forwarder listens there on 443. Each accepted connection is paired with a new vsock connection to the
parent's ``vsock-proxy`` (which only reaches KMS), and bytes are relayed both ways unchanged. TLS runs end to
end between boto3 and KMS: the forwarder and the parent see ciphertext only, and no certificate check is moved
or weakened here.

Every relayed connection lives at most ``lifetime_seconds`` (:data:`CONNECTION_LIFETIME_SECONDS`), then both sides
are cut. botocore's time limits are per socket read, so an answer trickling in a byte at a time (the parent relays
the stream and can pace it) would otherwise hold a KMS call, and the enclave's worker thread making it, for as long
as the parent likes. With the cut, one attempt of a KMS call ends within the lifetime, and the whole call within
the bound :mod:`enclave_app.kms_sealers` states. A connection the client leaves idle is cut the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from enclave_app.errors import TransportError
from enclave_app.transport import Transport

_LOG = logging.getLogger(__name__)

CONNECTION_LIFETIME_SECONDS = 10.0
"""Longest a relayed connection lives (ours). A KMS call through the parent's vsock-proxy takes well under a second;
`enclave_app.kms_sealers.KMS_CALL_LIMIT_SECONDS` bounds a call; a test keeps it under the enclave's request limit."""

RELAY_CHUNK_BYTES = 64 * 1024
"""Largest read per relay step (ours): bounds memory per connection; TLS records are at most 16 KiB + overhead."""


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(RELAY_CHUNK_BYTES):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close: the other direction may still be talking
    except (ConnectionError, OSError):
        writer.close()


class Forwarder:
    """Relays every connection accepted on ``listen_address`` to a new connection to ``upstream``, for at most
    ``lifetime_seconds`` each."""

    def __init__(
        self, *, listen_address: Transport, upstream: Transport, lifetime_seconds: float = CONNECTION_LIFETIME_SECONDS
    ) -> None:
        if not lifetime_seconds > 0:
            raise ValueError("lifetime_seconds must be positive")
        self._listen_address = listen_address
        self._upstream = upstream
        self._lifetime_seconds = lifetime_seconds
        self._server: asyncio.Server | None = None

    async def start(self) -> asyncio.Server:
        self._server = await self._listen_address.serve(self._handle)
        return self._server

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        writers = [client_writer]
        try:
            # Setting up the upstream connection, relaying and closing both sides all count against the lifetime.
            async with asyncio.timeout(self._lifetime_seconds):
                await self._relay(client_reader, client_writer, writers)
                for writer in writers:
                    writer.close()
                    with contextlib.suppress(ConnectionError, OSError):
                        await writer.wait_closed()
        except TimeoutError:
            _LOG.warning("forwarder: a connection reached its %.0f s lifetime; both sides cut", self._lifetime_seconds)
        finally:
            for writer in writers:
                writer.transport.abort()  # nothing when already closed; drops what a stalled peer did not take

    async def _relay(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        writers: list[asyncio.StreamWriter],
    ) -> None:
        try:
            upstream_reader, upstream_writer = await self._upstream.connect()
        except TransportError:
            _LOG.warning("forwarder: upstream unreachable; closing the client connection")
            return
        writers.append(upstream_writer)
        await asyncio.gather(
            _pump(client_reader, upstream_writer),
            _pump(upstream_reader, client_writer),
        )
