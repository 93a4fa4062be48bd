"""The HTTP client that webhook deliveries go through: it connects only to vetted addresses, within a deadline.

`webhook_client` builds an `httpx.Client` over httpx's own transport, whose connections come from `GuardedBackend`
(an httpcore network backend) instead of a plain ``socket.create_connection``. For each new connection:

1. The host is resolved (a `Resolver`; the system one runs ``getaddrinfo`` in a helper thread, so a slow DNS
   answer counts against the deadline). An IP literal is used as it is.
2. Every resolved address is checked (`parent_proxy.webhook_urls.check_address`); if any is refused, so is the
   connection (`WebhookError`, naming the address, never the URL).
3. The socket connects to a checked address, so no second DNS answer (rebinding) can change where it goes. TLS
   still sends the URL's host name as SNI and verifies the certificate against it (httpcore's ``start_tls``
   gets the URL's host), and the Host header is the URL's.
4. Everything after that shares one deadline: each connect, TLS handshake, send and receive is one blocking call
   whose socket timeout is at most the time left (CPython bounds a whole TLS handshake by it, not each read
   inside), and a call due after the deadline raises httpcore's ``*Timeout`` instead. So a receiver that
   drip-feeds bytes cannot hold a delivery lane past the deadline.

Connections are not kept alive: each POST gets its own connection, so the deadline is per POST. The client follows
no redirects and ignores ``HTTP(S)_PROXY``/``ALL_PROXY`` and ``.netrc`` (a proxy would choose the address itself);
``SSL_CERT_FILE``/``SSL_CERT_DIR`` still select the CA bundle.
"""

from __future__ import annotations

import contextlib
import ipaddress
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpcore
import httpx

from parent_proxy.webhook_urls import IPAddress, check_address

POST_DEADLINE_SECONDS = 10.0
"""Longest one webhook POST may take, from name resolution to the response's status line and headers."""

Resolver = Callable[[str, int, float], list[IPAddress]]
"""``(host, port, timeout) -> addresses``; raises `httpcore.ConnectError` or `httpcore.ConnectTimeout`."""


def system_resolver(host: str, port: int, timeout: float) -> list[IPAddress]:
    """The addresses ``getaddrinfo`` gives for ``host``, waiting at most ``timeout`` (a late lookup is abandoned
    to finish on its own: its thread is a daemon and holds nothing)."""
    answers: queue.SimpleQueue[list[Any] | Exception] = queue.SimpleQueue()

    def lookup() -> None:
        try:
            answers.put(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except Exception as exc:  # gaierror; UnicodeError for a name IDNA refuses ("a..b")
            answers.put(exc)

    threading.Thread(target=lookup, name="webhook-dns", daemon=True).start()
    try:
        answer = answers.get(timeout=timeout)
    except queue.Empty:
        raise httpcore.ConnectTimeout("name resolution timed out") from None
    if isinstance(answer, Exception):
        raise httpcore.ConnectError(f"name resolution failed: {type(answer).__name__}") from answer
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in answer))


class _Deadline:
    """One connection's time limit: `left` is the timeout for the next blocking call."""

    def __init__(self, seconds: float) -> None:
        self._at = time.monotonic() + seconds

    def left(self, timeout: float | None, error: type[Exception]) -> float:
        """What remains of the deadline (at most ``timeout``); ``error`` if nothing does."""
        remaining = self._at - time.monotonic()
        if remaining <= 0:
            raise error("webhook deadline passed")
        return remaining if timeout is None else min(timeout, remaining)


@contextlib.contextmanager
def _translated(timeout_error: type[Exception], other_error: type[Exception]) -> Iterator[None]:
    """Socket errors as the httpcore errors that httpx maps to its own (a timeout, or any other ``OSError``)."""
    try:
        yield
    except TimeoutError as exc:
        raise timeout_error("timed out") from exc
    except OSError as exc:
        raise other_error(type(exc).__name__) from exc


class _DeadlineStream(httpcore.NetworkStream):
    """A socket as an httpcore stream, every blocking call bounded by its connection's `_Deadline`."""

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        self._sock = sock
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _translated(httpcore.ReadTimeout, httpcore.ReadError):
            self._sock.settimeout(self._deadline.left(timeout, httpcore.ReadTimeout))
            return self._sock.recv(max_bytes)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _translated(httpcore.WriteTimeout, httpcore.WriteError):
            while buffer:
                self._sock.settimeout(self._deadline.left(timeout, httpcore.WriteTimeout))
                buffer = buffer[self._sock.send(buffer) :]

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        try:
            with _translated(httpcore.ConnectTimeout, httpcore.ConnectError):
                self._sock.settimeout(self._deadline.left(timeout, httpcore.ConnectTimeout))
                tls = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
        except BaseException:
            self.close()
            raise
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object" and isinstance(self._sock, ssl.SSLSocket):
            return self._sock  # it answers selected_alpn_protocol(), all that httpcore asks of an ssl_object
        if info == "socket":
            return self._sock
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        return None


def _connect(addresses: list[IPAddress], port: int, deadline: _Deadline, timeout: float | None) -> socket.socket:
    """A TCP connection to the first of ``addresses`` that accepts one; the last failure if none does."""
    for address in addresses[:-1]:
        with contextlib.suppress(OSError):
            return socket.create_connection((str(address), port), deadline.left(timeout, httpcore.ConnectTimeout))
    with _translated(httpcore.ConnectTimeout, httpcore.ConnectError):
        return socket.create_connection((str(addresses[-1]), port), deadline.left(timeout, httpcore.ConnectTimeout))


class GuardedBackend(httpcore.NetworkBackend):
    """Connections to checked addresses only, each bounded by ``deadline_seconds`` (the module docstring's steps)."""

    def __init__(self, *, allow_private: bool, deadline_seconds: float, resolver: Resolver) -> None:
        self._allow_private = allow_private
        self._deadline_seconds = deadline_seconds
        self._resolver = resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        deadline = _Deadline(self._deadline_seconds)
        # 1. Resolve (an IP literal is its own answer).
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = self._resolver(host, port, deadline.left(timeout, httpcore.ConnectTimeout))
        if not addresses:
            raise httpcore.ConnectError("name resolution gave no address")
        # 2. Every address must be allowed: a name with one refused address is refused.
        for address in addresses:
            check_address(address, allow_private=self._allow_private)
        # 3. Connect to a checked address; 4. bound the rest of the connection's life.
        sock = _connect(addresses, port, deadline, timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _DeadlineStream(sock, deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks are delivered over TCP only")


class _GuardedTransport(httpx.HTTPTransport):
    """httpx's transport (request conversion, exception mapping) over a connection pool fed by ``backend`` and
    keeping no idle connection. ``HTTPTransport`` offers no network-backend argument, so this replaces the pool
    its ``handle_request`` uses (``_pool``); tests/proxy/test_webhook_destinations.py fails if that stops working."""

    def __init__(self, backend: httpcore.NetworkBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, max_keepalive_connections=0, network_backend=backend
        )


def webhook_client(
    *,
    allow_private: bool,
    deadline_seconds: float = POST_DEADLINE_SECONDS,
    resolver: Resolver = system_resolver,
) -> httpx.Client:
    """The client for `parent_proxy.webhooks.WebhookWorker`. ``allow_private`` is the operator's
    ``WAIAAS_WEBHOOK_ALLOW_PRIVATE`` (loopback and private networks; never metadata or link-local addresses)."""
    backend = GuardedBackend(allow_private=allow_private, deadline_seconds=deadline_seconds, resolver=resolver)
    transport = _GuardedTransport(backend, httpx.create_ssl_context())
    return httpx.Client(transport=transport, trust_env=False, follow_redirects=False, timeout=deadline_seconds)
