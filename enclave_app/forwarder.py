"""In-enclave TCP -> vsock forwarder: boto3 reaches ``kms.<region>.amazonaws.com:443`` through the parent.

Inside the enclave, ``kms.<region>.amazonaws.com`` resolves to 127.0.0.1 (an /etc/hosts entry in the image) and
this forwarder listens there on 443. Each accepted connection is paired with a new vsock connection to the
parent's ``vsock-proxy`` (which only reaches KMS), and bytes are relayed both ways unchanged. TLS runs end to
end between boto3 and KMS: the forwarder and the parent see ciphertext only, and no certificate check is moved
or weakened here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from enclave_app.errors import TransportError
from enclave_app.transport import Address, listen, open_stream

_LOG = logging.getLogger(__name__)

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
    """Relays every connection accepted on ``listen_address`` to a new connection to ``upstream``."""

    def __init__(self, *, listen_address: Address, upstream: Address) -> None:
        self._listen_address = listen_address
        self._upstream = upstream
        self._server: asyncio.Server | None = None

    async def start(self) -> asyncio.Server:
        self._server = await listen(self._listen_address, self._handle)
        return self._server

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await open_stream(self._upstream)
        except TransportError:
            _LOG.warning("forwarder: upstream unreachable; closing the client connection")
            client_writer.close()
            return
        try:
            await asyncio.gather(
                _pump(client_reader, upstream_writer),
                _pump(upstream_reader, client_writer),
            )
        finally:
            for writer in (client_writer, upstream_writer):
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()
