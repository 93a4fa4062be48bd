"""A stopping proxy gives the webhook POSTs in flight a bounded grace: a receiver that answers within it is recorded
(delivered once, in the delivery log), one that does not keeps its lease and gets the event again later, and the
stop takes the grace, not the POST deadline.

Reproduced before the change (tests below, and the same with a 2 s receiver by hand): ``python -m parent_proxy``
stopped by SIGTERM, with one worker or several, died within a second while a POST was in flight (uvicorn re-raises
the signal after its own shutdown, and nothing waited for the daemon webhook thread): the receiver answered 200 to
a closed connection, the item stayed leased with no attempt recorded, and the event was sent again 40 s later."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from parent_proxy.__main__ import WEBHOOK_STOP_SECONDS
from parent_proxy.store.model import OutboxItem, OutboxStatus, WebhookConfig
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.webhooks import LEASE_SECONDS, enqueue_event
from selfhost.local_stack import free_port
from tests.proxy.conftest import FakeClock, make_wallet
from tests.proxy.proxy_process import REPO, proxy_env
from tests.proxy.webhook_receiver import (
    SECRET,
    Receiver,
    hung_receiver,
    local_client,
    serving,
    wait_until,
    worker_for,
)

WAIT = 10.0
"""How long the test waits for what a correct worker does within milliseconds (or, for the stop, within the
grace): only a broken one runs into it."""
HANG_UP_DEADLINE = 60.0
"""The POST deadline here: the hung POST outlasts the test's stop by far, until its receiver hangs up at the end."""


def _wallet_event(store: SqliteStore, clock: FakeClock, wallet_id: str, url: str) -> OutboxItem:
    store.create_wallet(make_wallet(wallet_id))
    store.set_webhook(WebhookConfig(wallet_id, url, SECRET))
    clock.advance(0.001)
    return enqueue_event(store, clock, wallet_id, "decision", {})


def _log(store: SqliteStore, item: OutboxItem) -> list[tuple[int, bool, int | None]]:
    return [(a.attempt, a.delivered, a.status_code) for a in store.delivery_log(item.event_id)]


def test_stop_records_what_answers_within_the_grace_and_leaves_the_rest_to_its_lease(sqlite_store: SqliteStore) -> None:
    """Two POSTs in flight at stop: the one answered within the grace (its receiver answers as the grace begins) is
    recorded delivered, once; the hung one is left after the grace (before: `run_until` waited for it to run into
    its deadline and recorded a failure), keeps its lease, and is claimed again when the lease ends."""
    clock = FakeClock()
    grace, answer, stop = 2.0, threading.Event(), threading.Event()
    late = Receiver(0, answer_when=answer)
    with hung_receiver() as hole, serving(late), local_client(HANG_UP_DEADLINE) as client:
        answered = _wallet_event(sqlite_store, clock, "w-late", late.url)
        hung = _wallet_event(sqlite_store, clock, "w-hung", hole.url)
        worker = worker_for(sqlite_store, clock, client)

        def tick() -> None:  # the last wake-up before the grace: the late receiver answers only now
            if stop.is_set():
                answer.set()

        options = {"poll_seconds": 0.05, "tick": tick, "grace_seconds": grace}
        thread = threading.Thread(target=worker.run_until, args=(stop,), kwargs=options)
        thread.start()
        under_way = wait_until(lambda: late.requests == 1 and hole.open == 1, WAIT)
        stopped = time.monotonic()
        stop.set()
        thread.join(WAIT)  # a stop that waited for the hung POST would last its whole deadline
        took = time.monotonic() - stopped
        assert under_way and answer.is_set() and not thread.is_alive()
        assert took >= grace and hole.open == 1, took  # the grace was given; the hung POST is still under way
        assert late.requests == 1 and late.accepted == [answered.body]
        assert sqlite_store.get_outbox_item(answered.event_id).status == OutboxStatus.DELIVERED
        assert _log(sqlite_store, answered) == [(1, True, 200)]
        left = sqlite_store.get_outbox_item(hung.event_id)
        assert (left.status, left.attempts, left.lease_until) == (OutboxStatus.PENDING, 1, clock.now() + LEASE_SECONDS)
        assert _log(sqlite_store, hung) == []
        clock.advance(LEASE_SECONDS)  # nothing lost: once the lease ends the item is claimed again
        assert [(i.event_id, i.attempts) for i in sqlite_store.claim_webhooks(clock.now(), LEASE_SECONDS, 10)] == [
            (hung.event_id, 2)
        ]
    for lane in threading.enumerate():  # the hung POST's lane ends once its receiver has hung up
        if lane.name.startswith("webhook-post"):
            lane.join(WAIT)
            assert not lane.is_alive()
    assert _log(sqlite_store, hung) == []  # its late failure did not count: the lease had been taken over


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_stopping_proxy_waits_for_the_post_in_flight(tmp_path: Path, workers: int) -> None:
    """SIGTERM to ``python -m parent_proxy`` (one process, or uvicorn's supervisor of ``WAIAAS_WORKERS``) while a
    receiver takes 1 s to answer: the process stops after the answer, which is recorded, and sends nothing again."""
    store = SqliteStore(tmp_path / "state.db")
    try:
        with serving(Receiver(0, delay_seconds=1.0)) as receiver:
            item = _wallet_event(store, FakeClock(time.time()), "w1", receiver.url)
            more = {"WAIAAS_WORKERS": str(workers), "WAIAAS_WEBHOOK_ALLOW_PRIVATE": "true"}
            env = proxy_env(tmp_path / "state.db", tmp_path, free_port(), **more)
            with (tmp_path / "stderr").open("w") as stderr:
                proxy = subprocess.Popen(
                    [sys.executable, "-m", "parent_proxy"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr
                )
            try:
                wait_until(lambda: receiver.requests == 1 or proxy.poll() is not None, 60.0)
                assert receiver.requests == 1, (tmp_path / "stderr").read_text()
                proxy.send_signal(signal.SIGTERM)
                proxy.wait(WEBHOOK_STOP_SECONDS + 10)
            finally:
                if proxy.poll() is None:
                    proxy.kill()
                    proxy.wait()
            assert receiver.accepted == [item.body]
        assert store.get_outbox_item(item.event_id).status == OutboxStatus.DELIVERED
        assert _log(store, item) == [(1, True, 200)]
    finally:
        store.close()
