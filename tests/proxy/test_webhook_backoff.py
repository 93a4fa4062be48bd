"""A receiver that fails at once is not hammered: a failed attempt pauses its wallet (`Store.mark_failed`, the head
held back until the item's retry, at most `WALLET_PAUSE_CAP_SECONDS` later), so the worker sends it one attempt per
pause, not each queued event back to back. Measured before (100,000 events queued for such a receiver): 26,000
failed POSTs in 20 s, each queued event once; the backoff was per event, so the wallet's next event was due at once.
Real receivers on 127.0.0.1 (tests/proxy/webhook_receiver.py), the store's clock moved by hand, on both stores."""

from __future__ import annotations

from parent_proxy.store.model import OutboxItem, OutboxStatus, WebhookConfig
from parent_proxy.store.protocol import Store
from parent_proxy.store.validation_outbox import WALLET_PAUSE_CAP_SECONDS
from parent_proxy.webhooks import enqueue_event
from tests.proxy.conftest import FakeClock, make_wallet
from tests.proxy.webhook_receiver import SECRET, Receiver, local_client, serving, worker_for


def _wallet(store: Store, wallet_id: str, url: str) -> None:
    store.create_wallet(make_wallet(wallet_id))
    store.set_webhook(WebhookConfig(wallet_id, url, SECRET))


def _event(store: Store, clock: FakeClock, wallet_id: str) -> OutboxItem:
    """An event due just after the previous one (items due at the same time are claimed in event id order)."""
    clock.advance(0.001)
    return enqueue_event(store, clock, wallet_id, "decision", {})


def test_a_failing_receiver_gets_one_attempt_per_pause_not_one_per_event(store: Store) -> None:
    """Twenty events queued for a receiver that always answers 500: each round of the worker at one time sends it
    at most one, and the next goes when that attempt's pause ends (here its event's first backoff, 1-2 s), not
    before; meanwhile another wallet's events go out at once. Before: one failed POST per round, 20 in 20 rounds."""
    clock = FakeClock()
    with serving(Receiver(10_000)) as failing, serving(Receiver(0)) as healthy, local_client() as client:
        _wallet(store, "w-down", failing.url)
        _wallet(store, "w-ok", healthy.url)
        queued = [_event(store, clock, "w-down") for _ in range(20)]
        worker = worker_for(store, clock, client)
        for step in range(3):
            for _ in range(5):  # five rounds at this time, each with a new event of the healthy wallet
                good = _event(store, clock, "w-ok")
                assert worker.run_once() == 1
                assert good.body in healthy.accepted  # not held back by the other wallet's pause
            assert failing.requests == step + 1
            failed = store.get_outbox_item(queued[step].event_id)  # the earliest due event: each in turn
            assert (failed.status, failed.attempts) == (OutboxStatus.PENDING, 1)
            attempted_at = store.delivery_log(failed.event_id)[-1].at
            pause_ends = min(failed.next_attempt_at, attempted_at + WALLET_PAUSE_CAP_SECONDS)
            clock.t = pause_ends - 0.01
            worker.run_once()
            assert failing.requests == step + 1  # still paused
            clock.t = pause_ends
    assert [store.get_outbox_item(i.event_id).attempts for i in queued[3:]] == [0] * 17


def test_an_event_with_a_long_backoff_holds_its_wallet_back_by_the_cap_at_most(store: Store) -> None:
    """A receiver that rejects one event seven times: that event's next retry is 64-128 s away, but the wallet's
    events queued meanwhile wait only `WALLET_PAUSE_CAP_SECONDS`; the delivery that follows clears the pause, so the
    next event goes in the same round."""
    clock = FakeClock()
    with serving(Receiver(7)) as receiver, local_client() as client:
        _wallet(store, "w1", receiver.url)
        rejected = _event(store, clock, "w1")
        worker = worker_for(store, clock, client)
        for attempt in range(1, 8):
            assert worker.run_once() == 0
            current = store.get_outbox_item(rejected.event_id)
            assert current.attempts == attempt
            if attempt < 7:
                clock.t = current.next_attempt_at
        failed_at = clock.t
        assert current.next_attempt_at - failed_at > WALLET_PAUSE_CAP_SECONDS
        later = [_event(store, clock, "w1") for _ in range(2)]
        assert worker.run_once() == 0
        clock.t = failed_at + WALLET_PAUSE_CAP_SECONDS - 0.01
        assert worker.run_once() == 0 and receiver.requests == 7
        clock.t = failed_at + WALLET_PAUSE_CAP_SECONDS
        assert worker.run_once() == 1  # the cap, not the event's backoff
        assert worker.run_once() == 1  # no pause after a delivery
    assert receiver.accepted == [later[0].body, later[1].body]
    assert store.get_outbox_item(rejected.event_id).status == OutboxStatus.PENDING
