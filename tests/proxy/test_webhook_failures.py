"""Deliveries that fail before any HTTP exchange are failed attempts like the others, and the retry budget
outlasts a day-long receiver outage. Real receivers on 127.0.0.1 (tests/proxy/webhook_receiver.py)."""

from __future__ import annotations

import logging
import random

import pytest

from parent_proxy.store.model import OutboxStatus, WebhookConfig
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.webhooks import LEASE_SECONDS, MAX_ATTEMPTS, backoff_delay, enqueue_event
from tests.proxy.conftest import FakeClock, make_wallet
from tests.proxy.webhook_receiver import SECRET, Receiver, local_client, serving, worker_for

DAY = 86_400.0


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("https://hooks.example:abc/", "request error: InvalidURL"),  # httpx refuses to build the request
        ("http://a..b/", "transport error: ConnectError"),  # IDNA refuses the name (UnicodeError) at resolution
    ],
)
def test_an_unusable_url_is_a_failed_attempt_and_holds_up_no_other_wallet(
    sqlite_store: SqliteStore, caplog: pytest.LogCaptureFixture, url: str, error: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="parent_proxy")
    clock = FakeClock()
    with serving(Receiver(0)) as receiver, local_client() as client:
        for wallet, target in (("w-bad", url), ("w-ok", receiver.url)):
            sqlite_store.create_wallet(make_wallet(wallet))
            sqlite_store.set_webhook(WebhookConfig(wallet, target, SECRET))  # the store takes any http(s) text
        bad = enqueue_event(sqlite_store, clock, "w-bad", "decision", {})
        clock.advance(0.001)
        good = enqueue_event(sqlite_store, clock, "w-ok", "decision", {})  # claimed after the bad one, same batch
        worker = worker_for(sqlite_store, clock, client)
        assert worker.run_once() == 1
        assert receiver.accepted == [good.body]
        log = sqlite_store.delivery_log(bad.event_id)
        assert [(a.attempt, a.delivered, a.status_code, a.error) for a in log] == [(1, False, None, error)]
        assert sqlite_store.get_outbox_item(bad.event_id).status == OutboxStatus.PENDING  # retried with backoff
        for _ in range(MAX_ATTEMPTS + 2):
            clock.advance(DAY)
            worker.run_once()
    done = sqlite_store.get_outbox_item(bad.event_id)
    assert (done.status, done.attempts) == (OutboxStatus.DEAD, MAX_ATTEMPTS)
    assert len(sqlite_store.delivery_log(bad.event_id)) == MAX_ATTEMPTS
    assert "hooks.example" not in caplog.text and "a..b" not in caplog.text


def test_an_item_claimed_with_no_attempts_left_goes_dead_unsent(sqlite_store: SqliteStore) -> None:
    clock = FakeClock()
    with serving(Receiver(0)) as receiver, local_client() as client:
        sqlite_store.create_wallet(make_wallet("w1"))
        sqlite_store.set_webhook(WebhookConfig("w1", receiver.url, SECRET))
        item = enqueue_event(sqlite_store, clock, "w1", "decision", {})
        for _ in range(MAX_ATTEMPTS):  # each time a worker claims it and dies before marking it
            claimed = sqlite_store.claim_webhooks(clock.now(), LEASE_SECONDS, 10)
            assert [c.event_id for c in claimed] == [item.event_id]
            clock.advance(LEASE_SECONDS)
        assert worker_for(sqlite_store, clock, client).run_once() == 0
    assert receiver.requests == 0
    done = sqlite_store.get_outbox_item(item.event_id)
    assert (done.status, done.attempts) == (OutboxStatus.DEAD, MAX_ATTEMPTS + 1)
    log = sqlite_store.delivery_log(item.event_id)
    assert [(a.attempt, a.delivered, a.error) for a in log] == [(MAX_ATTEMPTS + 1, False, "no attempts left")]


class _Extreme(random.Random):
    """Every jitter at the low or the high end of its range."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def test_the_retry_budget_spans_one_to_two_days() -> None:
    waits = {high: sum(backoff_delay(n, _Extreme(high)) for n in range(1, MAX_ATTEMPTS)) for high in (False, True)}
    assert waits[False] >= DAY and waits[True] <= 2.1 * DAY


def test_an_event_survives_a_day_long_receiver_outage(sqlite_store: SqliteStore) -> None:
    clock = FakeClock()
    with serving(Receiver(fail_first=10**6)) as receiver, local_client() as client:
        sqlite_store.create_wallet(make_wallet("w1"))
        sqlite_store.set_webhook(WebhookConfig("w1", receiver.url, SECRET))
        item = enqueue_event(sqlite_store, clock, "w1", "decision", {})
        worker = worker_for(sqlite_store, clock, client)
        while (current := sqlite_store.get_outbox_item(item.event_id)).status == OutboxStatus.PENDING:
            clock.t = current.next_attempt_at
            if clock.t >= item.created_at + DAY:  # the receiver is back exactly one day after the event
                receiver.fail_first = 0
            worker.run_once()
    assert current.status == OutboxStatus.DELIVERED and receiver.accepted == [item.body]
