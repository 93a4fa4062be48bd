"""Webhook delivery against a real HTTP receiver on 127.0.0.1 that fails on purpose and checks signatures.

`Receiver`, `serving`, `local_client`, `worker_for` and `deliver_once` serve the other ``test_webhook_*``
modules too."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import random
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

import httpx
import pytest

from parent_proxy.errors import ClockUnavailable, WebhookError
from parent_proxy.store.model import OutboxStatus, WebhookConfig
from parent_proxy.store.protocol import Store
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.webhook_transport import POST_DEADLINE_SECONDS, webhook_client
from parent_proxy.webhooks import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_MAX_SECONDS,
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    WebhookWorker,
    backoff_delay,
    enqueue_event,
    sign_webhook,
    verify_webhook_signature,
)
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


class Receiver(ThreadingHTTPServer):
    """Answers 500 to the first ``fail_first`` requests, then 200 (or a 307 to ``redirect_to``); records bodies
    whose signature verified and every request's Host header."""

    def __init__(self, fail_first: int, redirect_to: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.fail_first = fail_first
        self.redirect_to = redirect_to
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
        # Checked independently of the code under test: Stripe-style HMAC over "timestamp.body".
        expected = "v1=" + hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        self.server.requests += 1
        self.server.hosts.append(self.headers["Host"])
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


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    with serving(Receiver(getattr(request, "param", 0))) as server:
        yield server


@pytest.fixture
def setup(sqlite_store: SqliteStore, receiver: Receiver) -> SqliteStore:
    sqlite_store.create_wallet(make_wallet("w1"))
    sqlite_store.set_webhook(WebhookConfig("w1", receiver.url, SECRET))
    return sqlite_store


@pytest.mark.parametrize("receiver", [3], indirect=True)
def test_retries_with_backoff_until_delivered(
    setup: SqliteStore, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    item = enqueue_event(setup, clock, "w1", "decision", {"tier": "ALLOW"})
    with local_client() as client:
        worker = worker_for(setup, clock, client)
        delivered, waits = 0, []
        for _ in range(10):
            delivered += worker.run_once()
            current = setup.get_outbox_item(item.event_id)
            if current.status != OutboxStatus.PENDING:
                break
            waits.append(current.next_attempt_at - clock.now())
            assert worker.run_once() == 0  # not due yet: nothing is claimed
            clock.t = current.next_attempt_at
    assert delivered == 1 and receiver.accepted == [item.body] and receiver.bad_signatures == 0
    assert receiver.requests == 4
    # Exponential with jitter: attempt n waits between half and all of BASE * 2**(n-1).
    for n, wait in enumerate(waits, start=1):
        assert BACKOFF_BASE_SECONDS * 2 ** (n - 1) / 2 <= wait <= BACKOFF_BASE_SECONDS * 2 ** (n - 1)
    log = setup.delivery_log(item.event_id)
    assert [(a.attempt, a.delivered, a.status_code) for a in log] == [
        (1, False, 500), (2, False, 500), (3, False, 500), (4, True, 200)
    ]  # fmt: skip
    assert setup.get_outbox_item(item.event_id).status == OutboxStatus.DELIVERED
    assert SECRET.decode() not in caplog.text and SECRET.hex() not in caplog.text
    assert "v1=" not in caplog.text


@pytest.mark.parametrize("receiver", [1000], indirect=True)
def test_gives_up_after_max_attempts(setup: SqliteStore, receiver: Receiver) -> None:
    clock = FakeClock()
    item = enqueue_event(setup, clock, "w1", "decision", {})
    with local_client() as client:
        worker = worker_for(setup, clock, client)
        for _ in range(MAX_ATTEMPTS + 3):
            worker.run_once()
            clock.advance(10_000)
    assert receiver.requests == MAX_ATTEMPTS
    done = setup.get_outbox_item(item.event_id)
    assert (done.status, done.attempts) == (OutboxStatus.DEAD, MAX_ATTEMPTS)
    assert len(setup.delivery_log(item.event_id)) == MAX_ATTEMPTS


def test_crash_between_claim_and_mark_is_redelivered(setup: SqliteStore, receiver: Receiver) -> None:
    clock = FakeClock()
    item = enqueue_event(setup, clock, "w1", "decision", {"n": 1})
    crashed = setup.claim_webhooks(clock.now(), LEASE_SECONDS, 10)  # a worker claims, then dies
    assert [c.event_id for c in crashed] == [item.event_id]
    with local_client() as client:
        worker = worker_for(setup, clock, client)
        assert worker.run_once() == 0  # the lease is still live: nobody else may take it
        clock.advance(LEASE_SECONDS)
        assert worker.run_once() == 1
    assert receiver.accepted == [item.body]
    assert setup.get_outbox_item(item.event_id).attempts == 2


def test_unreachable_receiver_and_missing_config(sqlite_store: SqliteStore) -> None:
    clock = FakeClock()
    sqlite_store.create_wallet(make_wallet("w1"))
    sqlite_store.create_wallet(make_wallet("w2"))
    sqlite_store.set_webhook(WebhookConfig("w1", "http://127.0.0.1:9/hook", SECRET))
    down = enqueue_event(sqlite_store, clock, "w1", "decision", {})
    orphan = enqueue_event(sqlite_store, clock, "w2", "decision", {})
    with local_client() as client:
        assert worker_for(sqlite_store, clock, client).run_once() == 0
    assert sqlite_store.delivery_log(down.event_id)[0].error == "transport error: ConnectError"
    assert sqlite_store.get_outbox_item(down.event_id).status == OutboxStatus.PENDING
    assert sqlite_store.get_outbox_item(orphan.event_id).status == OutboxStatus.DEAD


def test_clock_failure_stops_theworker_for(sqlite_store: SqliteStore) -> None:
    class BrokenClock:
        def now(self) -> float:
            return float("nan")

    with local_client() as client, pytest.raises(ClockUnavailable, match="impossible time: nan"):
        WebhookWorker(sqlite_store, BrokenClock(), client, random.Random(1)).run_once()


def test_signature_scheme() -> None:
    body = b'{"a":1}'
    sig = sign_webhook(SECRET, 1_700_000_000, body)
    expected = hmac.new(SECRET, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sig == f"v1={expected}"
    verify_webhook_signature(SECRET, timestamp="1700000000", signature=sig, body=body, now=1_700_000_100, tolerance=300)
    cases = [
        ({"timestamp": "1700000000", "body": b'{"a":2}'}, "signature is invalid"),
        ({"timestamp": "1700000001"}, "signature is invalid"),
        ({"timestamp": "1699999000"}, "outside the tolerance"),
        ({"timestamp": "-5"}, "outside the tolerance"),
    ]
    for change, match in cases:
        kwargs = {"timestamp": "1700000000", "signature": sig, "body": body, **change}
        with pytest.raises(WebhookError, match=match):
            verify_webhook_signature(SECRET, now=1_700_000_100, tolerance=300, **kwargs)  # type: ignore[arg-type]
    assert BACKOFF_BASE_SECONDS / 2 <= backoff_delay(1, random.Random(0)) <= BACKOFF_BASE_SECONDS
    assert backoff_delay(50, random.Random(0)) <= BACKOFF_MAX_SECONDS
