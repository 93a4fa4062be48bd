"""A webhook receiver on 127.0.0.1 that fails or answers late on purpose and checks signatures, one delivery round
to it, and a receiver that accepts connections and never answers (`black_hole`, `HungReceiver`)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import random
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

import httpx

from parent_proxy.store.model import WebhookConfig
from parent_proxy.store.protocol import Store
from parent_proxy.webhook_transport import POST_DEADLINE_SECONDS, webhook_client
from parent_proxy.webhooks import WebhookWorker, enqueue_event
from tests.proxy.conftest import FakeClock, make_wallet

SECRET = b"webhook-secret-0123456789abcdef!"
ServerT = TypeVar("ServerT", bound=socketserver.BaseServer)


@contextlib.contextmanager
def serving(server: ServerT) -> Iterator[ServerT]:
    """Run ``server`` in a thread for the duration of the block."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def local_client(deadline_seconds: float = POST_DEADLINE_SECONDS) -> httpx.Client:
    """The production client, allowed to reach the receivers on 127.0.0.1 (``WAIAAS_WEBHOOK_ALLOW_PRIVATE``)."""
    return webhook_client(allow_private=True, deadline_seconds=deadline_seconds)


def worker_for(store: Store, clock: FakeClock, client: httpx.Client) -> WebhookWorker:
    return WebhookWorker(store, clock, client, random.Random(7))


def deliver_once(store: Store, url: str, client: httpx.Client, wallet_id: str = "w1") -> tuple[str, list[str | None]]:
    """Give a new wallet the webhook ``url``, queue one event, run one delivery round: the item's status then,
    and the errors of its delivery log (None for a delivery)."""
    clock = FakeClock()
    store.create_wallet(make_wallet(wallet_id))
    store.set_webhook(WebhookConfig(wallet_id, url, SECRET))
    item = enqueue_event(store, clock, wallet_id, "decision", {})
    worker_for(store, clock, client).run_once()
    return store.get_outbox_item(item.event_id).status, [a.error for a in store.delivery_log(item.event_id)]


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """A webhook URL on 127.0.0.1 whose server accepts every connection and never answers (a hung or firewalled
    receiver, or a hostile owner's choice); the connections are held until the block ends."""
    with hung_receiver() as hole:
        yield hole.url


class HungReceiver:
    """`black_hole`'s server: reads what each connection sends and never answers. It counts the connections it
    took (`connections`) and those the client has not closed yet (`open`); `release` hangs up on those it holds,
    as a receiver that gives up without answering (the client sees the connection closed)."""

    def __init__(self, listener: socket.socket) -> None:
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
        self.open = 0
        self.connections = 0
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()

    def take(self, conn: socket.socket) -> None:
        """Hold ``conn``, which was just accepted, until the client closes it or `release`."""
        with self._lock:
            self.connections += 1
            self.open += 1
            self._held.append(conn)
        threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def release(self) -> None:
        """Hang up on every connection held now (later ones are held as before)."""
        with self._lock:
            held, self._held = self._held, []
        for conn in held:
            with contextlib.suppress(OSError):  # the client closed it already
                conn.shutdown(socket.SHUT_WR)  # the client reads the end; this reads on until the client closes

    def _hold(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while conn.recv(65536):
                pass
        with self._lock:
            self.open -= 1


@contextlib.contextmanager
def hung_receiver() -> Iterator[HungReceiver]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=100)
    hole = HungReceiver(listener)

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listener is closed at the end of the block
            while True:
                hole.take(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield hole
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way (close alone does not, on Linux)
        listener.close()
        thread.join(5)
        hole.release()  # a POST still under way ends now, not at its deadline


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``seconds`` have passed (False). ``seconds`` bounds only how long
    a test waits for something that should happen: it is no measure of anything."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


class Receiver(ThreadingHTTPServer):
    """Answers 500 to the first ``fail_first`` requests, then 200 (or a 307 to ``redirect_to``), each after
    ``delay_seconds`` and once ``answer_when`` is set (if given; for at most a minute); records bodies whose
    signature verified (and whose event headers match the body) and every request's Host header (``requests``
    counts a request once its body is read, before the wait)."""

    def __init__(
        self,
        fail_first: int,
        redirect_to: str | None = None,
        delay_seconds: float = 0.0,
        answer_when: threading.Event | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.fail_first = fail_first
        self.redirect_to = redirect_to
        self.delay_seconds = delay_seconds
        self.answer_when = answer_when
        self.requests = 0
        self.accepted: list[bytes] = []
        self.hosts: list[str] = []
        self.bad_signatures = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        timestamp = self.headers["WAIaaS-Timestamp"]
        # Checked independently of the code under test: Stripe-style HMAC over "timestamp.body", and the unsigned
        # event headers repeating the signed body's id and type.
        expected = "v1=" + hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        envelope = json.loads(body)
        if (envelope["id"], envelope["type"]) != (self.headers["WAIaaS-Event-Id"], self.headers["WAIaaS-Event-Type"]):
            expected = "event headers differ from the body"
        self.server.requests += 1
        self.server.hosts.append(self.headers["Host"])
        time.sleep(self.server.delay_seconds)
        if self.server.answer_when is not None:
            self.server.answer_when.wait(60)
        location = self.server.redirect_to
        if not hmac.compare_digest(expected, self.headers["WAIaaS-Signature"]):
            self.server.bad_signatures += 1
            status = 400
        elif self.server.requests <= self.server.fail_first:
            status = 500
        elif location is not None:
            status = 307
        else:
            self.server.accepted.append(body)
            status = 200
        self.send_response(status)
        if location is not None:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass
