"""Stream transports from an address spec: ``vsock:<cid>:<port>``, ``unix:<path>``, ``tcp:<host>:<port>``.

AF_VSOCK (Nitro), AF_UNIX (self-host) and loopback TCP (tests) differ only in how a socket is opened; once open,
everything above (framing, the forwarder) runs on the same asyncio streams.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from enclave_app.errors import TransportError

MAX_PORT = 65535
MAX_VSOCK_PORT = 0xFFFFFFFF
"""vsock ports and CIDs are 32-bit (``struct sockaddr_vm``, linux/vm_sockets.h)."""

LISTEN_BACKLOG = 64


@dataclass(frozen=True, slots=True)
class VsockAddress:
    cid: int
    port: int


@dataclass(frozen=True, slots=True)
class UnixAddress:
    path: str


@dataclass(frozen=True, slots=True)
class TcpAddress:
    host: str
    port: int


Address = VsockAddress | UnixAddress | TcpAddress
StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _number(text: str, upper: int) -> int:
    if not text.isdigit() or int(text) > upper:
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


async def open_stream(address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``address``."""
    try:
        if isinstance(address, TcpAddress):
            return await asyncio.open_connection(address.host, address.port)
        if isinstance(address, UnixAddress):
            return await asyncio.open_unix_connection(address.path)
        sock = _vsock_socket()
        try:
            await asyncio.get_running_loop().sock_connect(sock, (address.cid, address.port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)
    except OSError as exc:
        raise TransportError("connection failed") from exc


async def listen(address: Address, handler: StreamHandler) -> asyncio.Server:
    """Start serving ``handler`` on ``address``."""
    try:
        if isinstance(address, TcpAddress):
            return await asyncio.start_server(handler, address.host, address.port, backlog=LISTEN_BACKLOG)
        if isinstance(address, UnixAddress):
            return await asyncio.start_unix_server(handler, address.path, backlog=LISTEN_BACKLOG)
        sock = _vsock_socket()
        try:
            sock.bind((address.cid, address.port))
            sock.listen(LISTEN_BACKLOG)
        except BaseException:
            sock.close()
            raise
        return await asyncio.start_server(handler, sock=sock)
    except OSError as exc:
        raise TransportError("listen failed") from exc
