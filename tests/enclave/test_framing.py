"""Length-prefixed CBOR frames: round trips over TCP and Unix sockets, and hostile input."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tracemalloc
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_app.errors import FrameTooLargeError, FramingError, TransportError
from enclave_app.framing import LENGTH_PREFIX_BYTES, MAX_FRAME_BYTES, encode_frame, read_frame, write_frame
from enclave_app.transport import (
    LISTEN_BACKLOG,
    StreamHandler,
    TcpAddress,
    Transport,
    UnixAddress,
    VsockAddress,
    parse_address,
)


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def _read(data: bytes) -> Any:
    async def run() -> Any:
        return await read_frame(_reader(data))

    return asyncio.run(run())


def test_frame_round_trip_and_clean_eof() -> None:
    message = {"type": "ping", "nonce": b"\x01" * 32, "n": [1, 2, 3]}

    async def run() -> list[Any]:
        reader = _reader(encode_frame(message) + encode_frame("second"))
        return [await read_frame(reader), await read_frame(reader), await read_frame(reader)]

    assert asyncio.run(run()) == [message, "second", None]


def test_oversized_length_refused_before_reading_body() -> None:
    header = (MAX_FRAME_BYTES + 1).to_bytes(LENGTH_PREFIX_BYTES, "big")
    with pytest.raises(FrameTooLargeError, match="too large"):
        _read(header)  # no body at all: the length alone is refused
    tracemalloc.start()
    try:
        with pytest.raises(FrameTooLargeError, match="too large"):
            _read(b"\xff\xff\xff\xff")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024  # nowhere near the 4 GiB the header announced


def test_exactly_max_frame_accepted_and_larger_message_refused() -> None:
    body = cbor2.dumps(b"x" * (MAX_FRAME_BYTES - 5))
    assert len(body) == MAX_FRAME_BYTES
    assert _read(len(body).to_bytes(4, "big") + body) == b"x" * (MAX_FRAME_BYTES - 5)
    # Both sides: a frame of exactly the maximum is sent too, one byte more is not.
    assert encode_frame(b"x" * (MAX_FRAME_BYTES - 5)) == len(body).to_bytes(4, "big") + body
    with pytest.raises(FrameTooLargeError, match="too large"):
        encode_frame(b"x" * (MAX_FRAME_BYTES - 4))
    with pytest.raises(FrameTooLargeError, match="too large"):
        encode_frame(b"x" * MAX_FRAME_BYTES)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "inside a frame header"),
        (b"\x00\x00\x00\x05abc", "inside a frame body"),
        (b"\x00\x00\x00\x00", "empty frame"),
        (b"\x00\x00\x00\x02\xff\xff", "not valid CBOR"),
        (b"\x00\x00\x00\x02\x01\x01", "not valid CBOR"),  # two items in one frame
        (b"\x00\x00\x00\x02\xc1\x00", "not valid CBOR"),  # a date tag
    ],
)
def test_malformed_frames_refused(data: bytes, message: str) -> None:
    with pytest.raises(FramingError, match=message):
        _read(data)


def test_unencodable_message_refused() -> None:
    with pytest.raises(FramingError, match="cannot be encoded"):
        encode_frame(object())


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_streams_never_crash(data: bytes) -> None:
    async def run() -> None:
        reader = _reader(data)
        for _ in range(50):
            if await read_frame(reader) is None:
                return

    with contextlib.suppress(FramingError):
        asyncio.run(run())


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.binary(max_size=64))
def test_any_announced_length_is_bounded(length: int, tail: bytes) -> None:
    try:
        _read(length.to_bytes(4, "big") + tail)
    except FrameTooLargeError:
        assert length > MAX_FRAME_BYTES
    except FramingError:
        assert length <= MAX_FRAME_BYTES


def test_address_specs() -> None:
    assert parse_address("vsock:16:5005") == VsockAddress(16, 5005)
    assert parse_address("unix:/run/waiaas/enclave.sock") == UnixAddress("/run/waiaas/enclave.sock")
    assert parse_address("tcp:127.0.0.1:5005") == TcpAddress("127.0.0.1", 5005)
    assert parse_address("tcp:[::1]:5005") == TcpAddress("[::1]", 5005)
    assert parse_address("tcp:127.0.0.1:65535") == TcpAddress("127.0.0.1", 65535)
    assert parse_address("vsock:4294967295:4294967295") == VsockAddress(2**32 - 1, 2**32 - 1)
    for bad, refusal in (
        ("vsock:16", "address number out of range"),  # no port
        ("vsock:-1:5", "address number out of range"),
        ("unix:relative", "unix address must be an absolute path"),
        ("tcp:127.0.0.1:70000", "address number out of range"),
        ("tcp:127.0.0.1:65536", "address number out of range"),  # one above the largest port
        ("vsock:4294967296:5", "address number out of range"),  # one above the largest (32-bit) CID
        ("vsock:16:4294967296", "address number out of range"),
        ("tcp:127.0.0.1:\u00b2", "address number out of range"),  # a superscript two: isdigit, but not for int()
        ("tcp:127.0.0.1:\u0665\u0660\u0660\u0665", "address number out of range"),  # Arabic-Indic digits
        ("vsock:\uff13:5005", "address number out of range"),  # a fullwidth three
        ("tcp:127.0.0.1:+5", "address number out of range"),
        ("tcp::5", "tcp address needs host:port"),
        ("http:x", "unknown address scheme"),
        ("", "unknown address scheme"),
    ):
        with pytest.raises(TransportError, match=refusal):
            parse_address(bad)


async def _echo_server_round_trip(address: TcpAddress | UnixAddress) -> list[Any]:
    transport: Transport = address

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (message := await read_frame(reader)) is not None:
            await write_frame(writer, {"echo": message})
        writer.close()

    server = await transport.serve(handler)
    if isinstance(address, TcpAddress):
        transport = TcpAddress("127.0.0.1", server.sockets[0].getsockname()[1])
    reader, writer = await transport.connect()
    replies = []
    for message in ({"type": "ping"}, b"\x00" * 70000):
        await write_frame(writer, message)
        replies.append(await read_frame(reader))
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return replies


def test_same_framing_over_tcp_and_unix(tmp_path: Path) -> None:
    expected = [{"echo": {"type": "ping"}}, {"echo": b"\x00" * 70000}]
    assert asyncio.run(_echo_server_round_trip(TcpAddress("127.0.0.1", 0))) == expected
    assert asyncio.run(_echo_server_round_trip(UnixAddress(str(tmp_path / "e.sock")))) == expected


def test_connection_refused_is_transport_error(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="connection failed"):
        asyncio.run(UnixAddress(str(tmp_path / "nobody-here.sock")).connect())


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _taken_vsock_address(handler: StreamHandler) -> VsockAddress:
    """A vsock address that cannot be served: where the machine has a vsock device, one already served (checked
    here to fail the second time); where it has none, any (checked here to fail at once)."""
    address = VsockAddress(3, 5000 + os.getpid() % 1000)
    try:
        first = await address.serve(handler)
    except TransportError:
        return address
    try:
        with pytest.raises(TransportError, match="listen failed"):
            await address.serve(handler)
    finally:
        first.close()
        await first.wait_closed()
    return address


@pytest.mark.parametrize("kind", ["unix", "tcp", "vsock"])
def test_every_socket_failure_is_a_transport_error(tmp_path: Path, kind: str) -> None:
    """Each adapter turns its socket's OSError into `TransportError` (what the client, the server and the
    forwarder handle), for connecting and for serving: a unix path in a missing directory, a TCP port taken and one
    nobody listens on, a vsock address nobody serves and one already served."""

    async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def failures() -> None:
        if kind == "unix":
            unreachable: Transport = UnixAddress(str(tmp_path / "missing" / "e.sock"))
            unservable: Transport = unreachable
        elif kind == "tcp":
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen()
                unservable = TcpAddress("127.0.0.1", taken.getsockname()[1])
                with pytest.raises(TransportError, match="listen failed"):
                    await unservable.serve(nothing)
            unreachable = TcpAddress("127.0.0.1", _free_tcp_port())
        else:
            unreachable = VsockAddress(3, 5005)
            unservable = await _taken_vsock_address(nothing)
        with pytest.raises(TransportError, match="connection failed"):
            await unreachable.connect()
        if kind == "unix":
            with pytest.raises(TransportError, match="listen failed"):
                await unservable.serve(nothing)

    asyncio.run(failures())


class _LoopbackAsVsock(socket.socket):
    """The vsock device faked (this machine has none): a TCP socket on loopback that binds any (cid, port) to a free
    port and records the backlog it is asked to listen with."""

    backlogs: list[int] = []

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.setblocking(False)

    def bind(self, _address: Any) -> None:
        super().bind(("127.0.0.1", 0))

    def listen(self, backlog: int = 0) -> None:
        self.backlogs.append(backlog)
        super().listen(backlog)


def test_a_vsock_server_listens_with_the_transports_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the backlog was set by hand, then asyncio listened again with its own default (100)."""
    monkeypatch.setattr("enclave_app.transport._vsock_socket", _LoopbackAsVsock)
    _LoopbackAsVsock.backlogs = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await write_frame(writer, await read_frame(reader))
        writer.close()

    async def run() -> Any:
        server = await VsockAddress(16, 5005).serve(echo)
        try:
            reader, writer = await TcpAddress(*server.sockets[0].getsockname()[:2]).connect()
            await write_frame(writer, {"ping": 1})
            answer = await read_frame(reader)
            writer.close()
            return answer
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(run()) == {"ping": 1}
    assert _LoopbackAsVsock.backlogs and set(_LoopbackAsVsock.backlogs) == {LISTEN_BACKLOG}
