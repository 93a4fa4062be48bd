"""`PooledEnclaveClient` reuses a connection only after a complete exchange, within its idle time, on its loop.

The servers here speak the real framing over a Unix socket; each answers pings with a status frame. A late answer
to a timed-out request must never be read as the answer to the next request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from enclave_app.errors import EnclaveTimeoutError, FramingError
from enclave_app.framing import read_frame, write_frame
from enclave_app.protocol import EnclaveState, StatusResponse
from enclave_app.transport import UnixAddress
from parent_proxy import enclave_pool
from parent_proxy.enclave_pool import PooledEnclaveClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def status(wallets: int) -> StatusResponse:
    return StatusResponse(state=EnclaveState.READY, wallets=wallets, session_public_key=bytes(32))


class CountingServer:
    """Answers every ping frame with a status whose ``wallets`` is the connection's number (1, 2, ...);
    ``delay`` holds back the answer of the connection's first frame."""

    def __init__(self) -> None:
        self.connections = 0
        self.delay = 0.0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number, delay = self.connections, self.delay
        try:
            while await read_frame(reader) is not None:
                await asyncio.sleep(delay)
                delay = 0.0
                await write_frame(writer, status(number).to_wire())
        except (FramingError, ConnectionError):
            pass
        finally:
            writer.close()


async def serve(path: Path, handler: Handler) -> asyncio.Server:
    return await asyncio.start_unix_server(handler, str(path))


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(coroutine)  # type: ignore[arg-type]


def test_connections_are_reused_after_complete_exchanges(tmp_path: Path) -> None:
    async def main() -> None:
        counting = CountingServer()
        server = await serve(tmp_path / "s", counting.handle)
        client = PooledEnclaveClient(UnixAddress(str(tmp_path / "s")), timeout=1.0)
        answers = [await client.ping() for _ in range(5)]
        assert [a.wallets for a in answers] == [1] * 5 and counting.connections == 1
        # Concurrent requests each take their own connection; afterwards both are kept.
        both = await asyncio.gather(client.ping(), client.ping())
        assert sorted(a.wallets for a in both) == [1, 2] and counting.connections == 2
        await client.aclose()
        server.close()
        await server.wait_closed()

    run(main())


def test_a_timed_out_exchange_closes_its_connection(tmp_path: Path) -> None:
    async def main() -> None:
        counting = CountingServer()
        counting.delay = 0.3  # the first connection answers late
        server = await serve(tmp_path / "s", counting.handle)
        client = PooledEnclaveClient(UnixAddress(str(tmp_path / "s")), timeout=0.1)
        with pytest.raises(EnclaveTimeoutError, match="did not answer in time"):
            await client.ping()
        counting.delay = 0.0
        await asyncio.sleep(0.4)  # the late answer has been sent by now
        answer = await client.ping()
        assert answer.wallets == 2 and counting.connections == 2  # a new connection, not the late answer
        await client.aclose()
        server.close()
        await server.wait_closed()

    run(main())


def test_idle_and_closed_connections_are_not_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        counting = CountingServer()
        server = await serve(tmp_path / "s", counting.handle)
        client = PooledEnclaveClient(UnixAddress(str(tmp_path / "s")), timeout=1.0)
        await client.ping()
        monkeypatch.setattr(enclave_pool, "IDLE_SECONDS", 0.0)
        assert (await client.ping()).wallets == 2  # idle too long: a fresh connection
        monkeypatch.setattr(enclave_pool, "IDLE_SECONDS", 60.0)

        async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_frame(reader)
            await write_frame(writer, status(99).to_wire())
            writer.close()  # the peer goes away after one answer

        server.close()
        await server.wait_closed()
        await client.aclose()
        (tmp_path / "s").unlink()
        once = await serve(tmp_path / "s", answer_once)
        assert (await client.ping()).wallets == 99
        async with asyncio.timeout(10):  # the EOF arrives (the idle connection's reader sees it)
            while not all(idle[0].at_eof() for idle in client._idle):
                await asyncio.sleep(0.01)
        assert (await client.ping()).wallets == 99  # the closed connection was not reused
        await client.aclose()
        once.close()
        await once.wait_closed()

    run(main())
