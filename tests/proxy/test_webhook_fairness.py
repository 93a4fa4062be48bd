"""One wallet's receiver that accepts and never answers holds up no other wallet's notifications: a claim takes one
item per wallet, the claimed items are POSTed concurrently, and `WebhookWorker.run_until` refills a lane as soon as
it is free (reproduced by review: before, one worker POSTed a batch of ten of that wallet's items one after the
other, ten seconds each, and the other wallets' events waited behind the whole backlog)."""

from __future__ import annotations

import threading
import time

from parent_proxy.store.model import OutboxItem, WebhookConfig
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.webhooks import CLAIM_BATCH, enqueue_event
from tests.proxy.conftest import FakeClock, make_wallet
from tests.proxy.webhook_receiver import SECRET, Receiver, black_hole, local_client, serving, worker_for

DEADLINE = 1.0
"""The POST deadline in these tests (production: `POST_DEADLINE_SECONDS`)."""


def _wallet(store: SqliteStore, wallet_id: str, url: str) -> None:
    store.create_wallet(make_wallet(wallet_id))
    store.set_webhook(WebhookConfig(wallet_id, url, SECRET))


def _event(store: SqliteStore, clock: FakeClock, wallet_id: str) -> OutboxItem:
    """An event due just after the previous one (items due at the same time are claimed in event id order)."""
    clock.advance(0.001)
    return enqueue_event(store, clock, wallet_id, "decision", {})


def test_one_round_is_not_held_up_by_a_wallets_backlog(sqlite_store: SqliteStore) -> None:
    """Three wallets whose receivers never answer, one with a backlog of a full batch, then a healthy wallet: one
    round delivers the healthy wallet's event and lasts one deadline, not one per hung item."""
    clock = FakeClock()
    with black_hole() as hole, serving(Receiver(0)) as receiver, local_client(DEADLINE) as client:
        for n in range(3):
            _wallet(sqlite_store, f"w-hung{n}", hole)
        _wallet(sqlite_store, "w-ok", receiver.url)
        backlog = [_event(sqlite_store, clock, "w-hung0") for _ in range(CLAIM_BATCH)]
        others = [_event(sqlite_store, clock, f"w-hung{n}") for n in (1, 2)]
        good = _event(sqlite_store, clock, "w-ok")  # due last: before, the backlog filled the batch
        started = time.monotonic()
        assert worker_for(sqlite_store, clock, client).run_once() == 1
        elapsed = time.monotonic() - started
    assert receiver.accepted == [good.body]
    assert DEADLINE <= elapsed < 2 * DEADLINE  # the hung POSTs ran side by side
    for hung in (backlog[0], *others):
        assert [a.error for a in sqlite_store.delivery_log(hung.event_id)] == ["transport error: ReadTimeout"]
    assert all(sqlite_store.get_outbox_item(i.event_id).attempts == 0 for i in backlog[1:])  # not claimed


def test_run_until_delivers_other_wallets_while_a_lane_hangs(sqlite_store: SqliteStore) -> None:
    """While the hung wallet's backlog keeps one lane busy, each new event of a healthy wallet is delivered at once,
    not at the end of a round."""
    clock = FakeClock()
    deadline = 3.0
    with black_hole() as hole, serving(Receiver(0)) as receiver, local_client(deadline) as client:
        _wallet(sqlite_store, "w-hung", hole)
        _wallet(sqlite_store, "w-ok", receiver.url)
        hung = [_event(sqlite_store, clock, "w-hung") for _ in range(5)]
        worker, stop = worker_for(sqlite_store, clock, client), threading.Event()
        options = {"poll_seconds": 0.05, "tick": lambda: None}
        thread = threading.Thread(target=worker.run_until, args=(stop,), kwargs=options)
        thread.start()
        try:
            time.sleep(0.2)  # the hung wallet's first POST is under way
            waits = []
            for _ in range(3):
                good = _event(sqlite_store, clock, "w-ok")
                sent = time.monotonic()
                while good.body not in receiver.accepted and time.monotonic() - sent < 2 * deadline:
                    time.sleep(0.01)
                waits.append(time.monotonic() - sent)
        finally:
            stop.set()
            thread.join(2 * deadline)
    assert not thread.is_alive()
    assert len(receiver.accepted) == 3 and max(waits) < 1.0, waits
    # One hung POST at a time for the hung wallet: its first item (failed when its deadline passed), no other.
    assert [sqlite_store.get_outbox_item(i.event_id).attempts for i in hung] == [1, 0, 0, 0, 0]
