"""The TCP -> vsock forwarder, with loopback TCP standing in for vsock and a real TLS handshake through it."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from enclave_app.forwarder import Forwarder
from enclave_app.transport import TcpAddress
from tests.support.tls_contexts import tls_material

KMS_HOST = "kms.us-east-1.amazonaws.com"


async def _through_forwarder(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> tuple[bytes, int]:
    relayed = 0

    async def kms_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readexactly(5)
        writer.write(b"ACK:" + data.upper() + b"x" * 100_000)
        await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(kms_like, "127.0.0.1", 0, ssl=server_context)
    upstream_port = upstream.sockets[0].getsockname()[1]
    forwarder = Forwarder(listen_address=TcpAddress("127.0.0.1", 0), upstream=TcpAddress("127.0.0.1", upstream_port))
    server = await forwarder.start()
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context, server_hostname=KMS_HOST)
        writer.write(b"hello")
        await writer.drain()
        reply = await reader.read(-1)
        relayed = len(reply)
        writer.close()
        return reply[:9], relayed
    finally:
        await forwarder.close()
        upstream.close()
        await upstream.wait_closed()


def test_tls_end_to_end_through_forwarder(tmp_path: Path) -> None:
    server_context, client_context = tls_material(tmp_path, KMS_HOST)
    head, size = asyncio.run(_through_forwarder(server_context, client_context))
    assert head == b"ACK:HELLO"
    assert size == 9 + 100_000


def test_forwarder_does_not_terminate_tls(tmp_path: Path) -> None:
    # The upstream presents a certificate for another name: the client's own check fails through the relay.
    server_context, client_context = tls_material(tmp_path, "evil.example.com")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        asyncio.run(_through_forwarder(server_context, client_context))


def test_unreachable_upstream_closes_client() -> None:
    async def run() -> bytes:
        forwarder = Forwarder(listen_address=TcpAddress("127.0.0.1", 0), upstream=TcpAddress("127.0.0.1", 1))
        server = await forwarder.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        data = await reader.read(-1)
        writer.close()
        await forwarder.close()
        return data

    assert asyncio.run(run()) == b""


# -- the lifetime of a relayed connection ---------------------------------------------------------------------------

LIFETIME = 0.5
"""The forwarder's lifetime in these tests. The bounds below leave 5 s for a loaded machine; a connection nobody cut
would run into the tests' own 10 s waits (or trickle for 20 s)."""


@contextlib.asynccontextmanager
async def _forwarded(handle: Any, lifetime: float = LIFETIME) -> AsyncIterator[int]:
    """A forwarder with ``lifetime`` in front of a local server running ``handle``; yields the forwarder's port."""
    upstream = await asyncio.start_server(handle, "127.0.0.1", 0)
    forwarder = Forwarder(
        listen_address=TcpAddress("127.0.0.1", 0),
        upstream=TcpAddress("127.0.0.1", upstream.sockets[0].getsockname()[1]),
        lifetime_seconds=lifetime,
    )
    server = await forwarder.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        await forwarder.close()
        upstream.close()
        await upstream.wait_closed()


async def _read_until_cut(port: int) -> tuple[bytes, float]:
    """Connect to the forwarder, send nothing, read until the connection ends: what came, and how long it took."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(10):
        received = await reader.read(-1)
    writer.close()
    return received, time.monotonic() - started


def test_a_connection_nobody_talks_on_is_cut_on_both_sides_at_its_lifetime() -> None:
    async def run() -> tuple[bytes, bytes, float]:
        upstream_saw: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            upstream_saw.set_result(await reader.read(-1))  # until the forwarder cuts it
            writer.close()

        async with _forwarded(silent) as port:
            client_saw, elapsed = await _read_until_cut(port)
            async with asyncio.timeout(10):
                return client_saw, await upstream_saw, elapsed

    client_saw, upstream_saw, elapsed = asyncio.run(run())
    assert client_saw == b"" and upstream_saw == b""
    assert LIFETIME * 0.9 <= elapsed < LIFETIME + 5


def test_an_answer_trickling_in_is_cut_at_the_lifetime_not_when_it_ends() -> None:
    async def run() -> tuple[bytes, float]:
        async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                for _ in range(200):  # 20 s if nothing cut it
                    writer.write(b"x")
                    await writer.drain()
                    await asyncio.sleep(0.1)
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async with _forwarded(trickle) as port:
            return await _read_until_cut(port)

    received, elapsed = asyncio.run(run())
    assert 1 <= len(received) < 20  # bytes were flowing, and then stopped flowing
    assert elapsed < LIFETIME + 5


def test_a_client_that_stops_reading_does_not_hold_the_connection() -> None:
    # The upstream sends far more than the socket buffers hold; the client never reads, so the relay is stuck in
    # drain() until the lifetime cuts it (closing gracefully would wait for the buffer to empty: it is aborted).
    async def run() -> float:
        upstream_done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                for _ in range(10_000):
                    writer.write(b"y" * 65536)
                    await writer.drain()
            upstream_done.set_result(time.monotonic())
            writer.close()

        async with _forwarded(flood) as port:
            started = time.monotonic()
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            async with asyncio.timeout(10):
                ended = await upstream_done
            writer.close()
            return ended - started

    assert asyncio.run(run()) < LIFETIME + 5


def test_a_connection_within_its_lifetime_is_relayed_whole() -> None:
    async def run() -> bytes:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await reader.readexactly(4)
            writer.write(request * 50_000)
            await writer.drain()
            writer.close()

        async with _forwarded(answer, lifetime=30) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"ping")
            await writer.drain()
            received = await reader.read(-1)
            writer.close()
            return received

    assert asyncio.run(run()) == b"ping" * 50_000


@pytest.mark.parametrize("lifetime", [0, -1.0, float("nan")])
def test_a_lifetime_that_is_not_positive_is_refused(lifetime: float) -> None:
    with pytest.raises(ValueError, match="lifetime_seconds"):
        Forwarder(
            listen_address=TcpAddress("127.0.0.1", 0), upstream=TcpAddress("127.0.0.1", 1), lifetime_seconds=lifetime
        )
