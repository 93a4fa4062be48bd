"""Stream transports from an address spec: ``vsock:<cid>:<port>``, ``unix:<path>``, ``tcp:<host>:<port>``.

AF_VSOCK (Nitro), AF_UNIX (self-host) and loopback TCP (tests) differ only in how a socket is opened; once open,
everything above (framing, the server, the client, the forwarder) runs on the same asyncio streams. The seam is
`Transport` (``connect`` and ``serve``); each address class is one of its adapters, and every socket failure
comes out as `TransportError`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from enclave_app.errors import TransportError

MAX_PORT = 65535
MAX_VSOCK_PORT = 0xFFFFFFFF
"""vsock ports and CIDs are 32-bit (``struct sockaddr_vm``, linux/vm_sockets.h)."""

LISTEN_BACKLOG = 64

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Transport(Protocol):
    """The transport seam: where the protocol's byte streams come from. The framing, the enclave server, the
    client and the forwarder only ever call these two methods, so the same code runs over every socket family."""

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connected stream, or `TransportError`."""
        ...

    async def serve(self, handler: StreamHandler) -> asyncio.Server:
        """Start serving ``handler`` on each accepted stream, or `TransportError`."""
        ...


@dataclass(frozen=True, slots=True)
class VsockAddress:
    """AF_VSOCK (the Nitro enclave and its parent)."""

    cid: int
    port: int

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        with _failure("connection failed"):
            sock = _vsock_socket()
            try:
                await asyncio.get_running_loop().sock_connect(sock, (self.cid, self.port))
                return await asyncio.open_connection(sock=sock)
            except BaseException:
                sock.close()
                raise

    async def serve(self, handler: StreamHandler) -> asyncio.Server:
        with _failure("listen failed"):
            sock = _vsock_socket()
            try:
                sock.bind((self.cid, self.port))
                # asyncio listens on the socket itself (with its default backlog, 100, unless told).
                return await asyncio.start_server(handler, sock=sock, backlog=LISTEN_BACKLOG)
            except BaseException:
                sock.close()
                raise


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """AF_UNIX (self-host: the signer's socket on a shared volume)."""

    path: str

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        with _failure("connection failed"):
            return await asyncio.open_unix_connection(self.path)

    async def serve(self, handler: StreamHandler) -> asyncio.Server:
        with _failure("listen failed"):
            return await asyncio.start_unix_server(handler, self.path, backlog=LISTEN_BACKLOG)


@dataclass(frozen=True, slots=True)
class TcpAddress:
    """TCP (tests, and the enclave's forwarder to KMS through the parent's proxy)."""

    host: str
    port: int

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        with _failure("connection failed"):
            return await asyncio.open_connection(self.host, self.port)

    async def serve(self, handler: StreamHandler) -> asyncio.Server:
        with _failure("listen failed"):
            return await asyncio.start_server(handler, self.host, self.port, backlog=LISTEN_BACKLOG)


Address = VsockAddress | UnixAddress | TcpAddress
"""What `parse_address` returns: each is a `Transport`."""


@contextmanager
def _failure(message: str) -> Iterator[None]:
    """An OSError inside becomes `TransportError(message)` (chained), the transport's one error type."""
    try:
        yield
    except OSError as exc:
        raise TransportError(message) from exc


def _number(text: str, upper: int) -> int:
    # ASCII digits only: ``str.isdigit`` also takes other scripts' digits and superscripts ("²", which ``int``
    # refuses with a ValueError, so a bad setting was a traceback instead of the variable named).
    if not (text.isascii() and text.isdigit()) or int(text) > upper:
        raise TransportError("address number out of range")
    return int(text)


def parse_address(spec: str) -> Address:
    """Parse ``vsock:16:5005``, ``unix:/run/waiaas.sock`` or ``tcp:127.0.0.1:5005``."""
    scheme, _, rest = spec.partition(":")
    if scheme == "vsock":
        cid, _, port = rest.partition(":")
        return VsockAddress(_number(cid, MAX_VSOCK_PORT), _number(port, MAX_VSOCK_PORT))
    if scheme == "unix":
        if not rest.startswith("/"):
            raise TransportError("unix address must be an absolute path")
        return UnixAddress(rest)
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if not host:
            raise TransportError("tcp address needs host:port")
        return TcpAddress(host, _number(port, MAX_PORT))
    raise TransportError("unknown address scheme (vsock, unix, tcp)")


def _vsock_socket() -> socket.socket:
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        raise TransportError("AF_VSOCK not available on this system")
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock
