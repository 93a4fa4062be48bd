"""A receiver cannot make a delivery expensive: the response body is never read, and one deadline bounds the whole
POST (name resolution, connect, TLS handshake, request, status line and headers), however the receiver paces its
bytes. Raw TCP receivers on 127.0.0.1 that misbehave on purpose."""

from __future__ import annotations

import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable

import pytest

from parent_proxy.store.model import OutboxStatus
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.webhook_transport import POST_DEADLINE_SECONDS
from parent_proxy.webhooks import CLAIM_BATCH, LANES, LEASE_SECONDS
from tests.proxy.webhook_receiver import deliver_once, local_client, serving

BIG_BODY_BYTES = 64 * 1024 * 1024
DEADLINE = 1.0
DRIP_SECONDS = 30.0
"""How long a dripping receiver would take to finish, if a client waited for it: the client gives up after the
deadline and the receiver stops at its next byte, so only a broken client lasts this long."""


class RawReceiver(socketserver.ThreadingTCPServer):
    """Calls ``respond(sock)`` for each connection and records what it managed to send."""

    daemon_threads = True

    def __init__(self, respond: Callable[[RawReceiver, socket.socket], None]) -> None:
        super().__init__(("127.0.0.1", 0), _RawHandler)
        self.respond = respond
        self.sent = 0
        self.done = threading.Event()

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.server_address[1]}/hook"


class _RawHandler(socketserver.BaseRequestHandler):
    server: RawReceiver

    def handle(self) -> None:
        try:
            self.server.respond(self.server, self.request)
        except OSError:
            pass  # the client hung up: what the tests want
        finally:
            self.server.done.set()


def _read_request(sock: socket.socket) -> None:
    """Read one HTTP request to its end (headers, then Content-Length bytes of body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)


def _send(server: RawReceiver, sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)
    server.sent += len(data)


def huge_body(server: RawReceiver, sock: socket.socket) -> None:
    _read_request(sock)
    _send(server, sock, f"HTTP/1.1 200 OK\r\nContent-Length: {BIG_BODY_BYTES}\r\n\r\n".encode())
    chunk = b"A" * (1024 * 1024)
    for _ in range(BIG_BODY_BYTES // len(chunk)):
        _send(server, sock, chunk)


def drip_headers(server: RawReceiver, sock: socket.socket) -> None:
    """A status line, then a header one byte at a time: each read is quick, the response never is."""
    _read_request(sock)
    _send(server, sock, b"HTTP/1.1 200 OK\r\nX-Drip: ")
    for _ in range(int(DRIP_SECONDS / 0.1)):
        time.sleep(0.1)
        _send(server, sock, b"x")
    _send(server, sock, b"\r\nContent-Length: 0\r\n\r\n")


def drip_tls_record(server: RawReceiver, sock: socket.socket) -> None:
    """After the ClientHello, a TLS handshake record header announcing 16 KiB, then its bytes one at a time."""
    sock.recv(65536)
    _send(server, sock, b"\x16\x03\x03\x40\x00")
    for _ in range(int(DRIP_SECONDS / 0.1)):
        time.sleep(0.1)
        _send(server, sock, b"\x00")


def _timed_delivery(store: SqliteStore, url: str) -> tuple[str, list[str | None], float]:
    """`deliver_once` with the test's deadline: its status, its errors, how long the round took."""
    with local_client(deadline_seconds=DEADLINE) as client:
        started = time.monotonic()
        status, errors = deliver_once(store, url, client)
        return status, errors, time.monotonic() - started


def test_the_response_body_is_never_read(sqlite_store: SqliteStore) -> None:
    with serving(RawReceiver(huge_body)) as receiver:
        status, errors, _ = _timed_delivery(sqlite_store, receiver.url())
        assert receiver.done.wait(10)
    assert (status, errors) == (OutboxStatus.DELIVERED, [None])  # the 200 is all that counts
    assert receiver.sent < BIG_BODY_BYTES // 4  # the connection was dropped: at most the socket buffers filled


@pytest.mark.parametrize(
    ("respond", "scheme", "error"),
    [
        (drip_headers, "http", "transport error: ReadTimeout"),
        (drip_tls_record, "https", "transport error: ConnectTimeout"),  # the handshake never completes
    ],
)
def test_one_deadline_bounds_the_whole_post(
    sqlite_store: SqliteStore, respond: Callable[[RawReceiver, socket.socket], None], scheme: str, error: str
) -> None:
    with serving(RawReceiver(respond)) as receiver:
        status, errors, elapsed = _timed_delivery(sqlite_store, receiver.url(scheme))
    assert (status, errors) == (OutboxStatus.PENDING, [error])  # a failed attempt, retried later
    assert elapsed < DRIP_SECONDS / 3, elapsed  # the deadline, with room for a loaded machine; not the drip


def test_a_live_worker_holds_its_leases_through_its_posts() -> None:
    """Every claimed item's POST starts at once, in a lane of its own (tests/proxy/test_webhook_fairness.py)."""
    assert LEASE_SECONDS >= POST_DEADLINE_SECONDS + 30 and CLAIM_BATCH <= LANES
