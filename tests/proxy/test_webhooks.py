"""Webhook delivery against a real HTTP receiver on 127.0.0.1 that fails on purpose and checks signatures.

The receiver (`Receiver`), `serving`, `local_client`, `worker_for` and `deliver_once` are in
`tests.proxy.webhook_receiver`, shared with the other ``test_webhook_*`` modules."""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
from collections.abc import Iterator
from typing import Any

import pytest

from parent_proxy.errors import ClockUnavailable, WebhookError
from parent_proxy.store.model import OutboxStatus, WebhookConfig
from parent_proxy.store.sqlite import SqliteStore
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
from tests.proxy.webhook_receiver import SECRET, Receiver, local_client, serving, worker_for


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
    body = b'{"id":"e1","type":"decision"}'
    sig = sign_webhook(SECRET, 1_700_000_000, body)
    expected = hmac.new(SECRET, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sig == f"v1={expected}"
    event = {"event_id": "e1", "event_type": "decision"}
    verify_webhook_signature(
        SECRET, timestamp="1700000000", signature=sig, body=body, **event, now=1_700_000_100, tolerance=300
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"timestamp": "1700000000", "body": b'{"id":"e1","type":"other"}'}, "signature is invalid"),
        ({"timestamp": "1700000001"}, "signature is invalid"),
        ({"timestamp": "1699999000"}, "outside the tolerance"),
        ({"timestamp": "-5"}, "outside the tolerance"),
        ({"event_id": "e2"}, "event id or type header does not match the signed body"),
    ]
    for change, match in cases:
        kwargs = {"timestamp": "1700000000", "signature": sig, "body": body, **event, **change}
        with pytest.raises(WebhookError, match=match):
            verify_webhook_signature(SECRET, now=1_700_000_100, tolerance=300, **kwargs)
    assert BACKOFF_BASE_SECONDS / 2 <= backoff_delay(1, random.Random(0)) <= BACKOFF_BASE_SECONDS
    assert backoff_delay(50, random.Random(0)) <= BACKOFF_MAX_SECONDS
