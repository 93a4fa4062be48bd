"""One wallet's receiver that accepts and never answers holds up no other wallet's notifications: a claim takes one
item per wallet, the claimed items are POSTed concurrently, and `WebhookWorker.run_until` refills a lane as soon as
it is free (reproduced by review: before, one worker POSTed a batch of ten of that wallet's items one after the
other, ten seconds each, and the other wallets' events waited behind the whole backlog). Nor do ten of them: slow
receivers share at most `SLOW_LANES` lanes (`parent_proxy.webhook_lanes`; measured before, scaled from a 0.5 s
deadline: with ten hung wallets holding 20 events each, another wallet's event waited 180-203 s, and with one new
event per hung wallet every 10 s, 25-98 s and growing; the exponential backoff is per item, so a wallet with events
queued always has one due).

The hung receivers here hold every POST until the test makes them hang up (`HungReceiver.release`), so the tests
check what happened while POSTs hung (how many were under way at once, which events arrived meanwhile), never how
long anything took: a loaded machine makes them slower, not wrong."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from parent_proxy.store.model import OutboxItem, WebhookConfig
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.store.validation_outbox import WALLET_PAUSE_CAP_SECONDS
from parent_proxy.webhook_lanes import SlowWallets, lane_claims
from parent_proxy.webhooks import CLAIM_BATCH, LANES, LEASE_SECONDS, SLOW_LANES, WebhookWorker, enqueue_event
from tests.proxy.conftest import FakeClock, make_wallet
from tests.proxy.webhook_receiver import SECRET, Receiver, hung_receiver, local_client, serving, wait_until, worker_for

WAIT = 10.0
"""How long a test waits for what a correct worker does within milliseconds (a delivery, a POST started): only a
broken worker runs into it, and the test then fails."""
HANG_UP_DEADLINE = 60.0
"""The POST deadline where the hung receivers hang up themselves (`HungReceiver.release`): no POST runs into it, so
a hung POST lasts until the test ends it, and the tests check what happened meanwhile (events and counts), never
how long anything took."""


def _wallet(store: SqliteStore, wallet_id: str, url: str) -> None:
    store.create_wallet(make_wallet(wallet_id))
    store.set_webhook(WebhookConfig(wallet_id, url, SECRET))


def _event(store: SqliteStore, clock: FakeClock, wallet_id: str) -> OutboxItem:
    """An event due just after the previous one (items due at the same time are claimed in event id order)."""
    clock.advance(0.001)
    return enqueue_event(store, clock, wallet_id, "decision", {})


def _accepted(receiver: Receiver, body: bytes) -> Callable[[], bool]:
    """Whether ``receiver`` has accepted ``body`` yet."""
    return lambda: body in receiver.accepted


def _healthy_deliveries(store: SqliteStore, clock: FakeClock, receiver: Receiver) -> int:
    """Three events of the healthy wallet ``w-ok``, one after the other, each waited for (`WAIT`): how many reached
    ``receiver``."""
    for delivered in range(3):
        good = _event(store, clock, "w-ok")
        if not wait_until(_accepted(receiver, good.body), WAIT):
            return delivered
    return 3


def _errors(store: SqliteStore, item: OutboxItem) -> list[str | None]:
    return [attempt.error for attempt in store.delivery_log(item.event_id)]


def test_one_round_is_not_held_up_by_a_wallets_backlog(sqlite_store: SqliteStore) -> None:
    """Three wallets whose receivers never answer, one with a backlog of a full batch, then a healthy wallet: one
    round delivers the healthy wallet's event, and its three hung POSTs are under way at the same time (so the
    round lasts one deadline, not one per hung item); the backlog's other items are not claimed."""
    clock = FakeClock()
    with hung_receiver() as hole, serving(Receiver(0)) as receiver, local_client(HANG_UP_DEADLINE) as client:
        for n in range(3):
            _wallet(sqlite_store, f"w-hung{n}", hole.url)
        _wallet(sqlite_store, "w-ok", receiver.url)
        backlog = [_event(sqlite_store, clock, "w-hung0") for _ in range(CLAIM_BATCH)]
        others = [_event(sqlite_store, clock, f"w-hung{n}") for n in (1, 2)]
        good = _event(sqlite_store, clock, "w-ok")  # due last: before, the backlog filled the batch
        worker, delivered = worker_for(sqlite_store, clock, client), []
        round_ = threading.Thread(target=lambda: delivered.append(worker.run_once()))
        round_.start()
        side_by_side = wait_until(lambda: hole.open == 3, WAIT)  # one at a time, it would never be more than 1
        hole.release()  # the receivers hang up: the round ends
        round_.join(WAIT)
    assert side_by_side and hole.connections == 3
    assert delivered == [1] and receiver.accepted == [good.body]
    for hung in (backlog[0], *others):  # one failed attempt each
        assert _errors(sqlite_store, hung) == ["transport error: RemoteProtocolError"]  # closed without an answer
    assert all(sqlite_store.get_outbox_item(i.event_id).attempts == 0 for i in backlog[1:])  # not claimed


def test_run_until_delivers_other_wallets_while_a_lane_hangs(sqlite_store: SqliteStore) -> None:
    """While the hung wallet's POST keeps one lane busy, each new event of a healthy wallet is delivered: all three
    before that POST ends (before the fix, at the end of a round: after the hung POST)."""
    clock = FakeClock()
    with hung_receiver() as hole, serving(Receiver(0)) as receiver, local_client(HANG_UP_DEADLINE) as client:
        _wallet(sqlite_store, "w-hung", hole.url)
        _wallet(sqlite_store, "w-ok", receiver.url)
        hung = [_event(sqlite_store, clock, "w-hung") for _ in range(5)]
        worker, stop = worker_for(sqlite_store, clock, client), threading.Event()
        options = {"poll_seconds": 0.05, "tick": lambda: None}
        thread = threading.Thread(target=worker.run_until, args=(stop,), kwargs=options)
        thread.start()
        try:
            hanging = wait_until(lambda: hole.open == 1, WAIT)  # the hung wallet's first POST is under way
            delivered = _healthy_deliveries(sqlite_store, clock, receiver)
            meanwhile = (hole.open, hole.connections, _errors(sqlite_store, hung[0]))
            hole.release()  # the hung POST fails now, once
            wait_until(lambda: _errors(sqlite_store, hung[0]) != [], WAIT)
        finally:
            stop.set()
            hole.release()
            thread.join(WAIT)
    assert not thread.is_alive()
    assert hanging and delivered == 3 and meanwhile == (1, 1, [])
    # One hung POST at a time for the hung wallet: its first item (failed when its receiver hung up), no other.
    assert [sqlite_store.get_outbox_item(i.event_id).attempts for i in hung] == [1, 0, 0, 0, 0]


def test_ten_hung_receivers_keep_to_the_slow_lanes(sqlite_store: SqliteStore) -> None:
    """Ten wallets whose receivers never answer, each with events queued before anything else: their first POSTs
    take every lane (nothing is known of them yet) and fail slowly (their receivers hang up after the POSTs have
    taken the worker's slow time: a POST that runs into the deadline is such a POST); from then on they hold
    `SLOW_LANES` lanes, and each event of a healthy wallet goes out while those are still hung. Before, the ten took
    every lane again as each POST ended (their queued events due first), and the healthy event waited for one of
    them to end. Each failed POST pauses its wallet (`Store.mark_failed`): the store's clock is moved past the
    pauses once the first round has failed, as the time a real clock would have let pass."""
    clock = FakeClock()
    slow_seconds = 0.5
    with hung_receiver() as hole, serving(Receiver(0)) as receiver, local_client(HANG_UP_DEADLINE) as client:
        hung = [f"w-hung{n}" for n in range(LANES)]
        for wallet_id in hung:
            _wallet(sqlite_store, wallet_id, hole.url)
        _wallet(sqlite_store, "w-ok", receiver.url)
        queued = [_event(sqlite_store, clock, wallet_id) for _ in range(3) for wallet_id in hung]
        worker = WebhookWorker(sqlite_store, clock, client, random.Random(7), slow_post_seconds=slow_seconds)
        stop = threading.Event()
        options = {"poll_seconds": 0.1, "tick": lambda: None}
        thread = threading.Thread(target=worker.run_until, args=(stop,), kwargs=options)
        thread.start()
        try:
            first_round = wait_until(lambda: hole.open == LANES, WAIT)
            time.sleep(slow_seconds)  # every POST under way has now taken at least the slow time (a lower bound)
            hole.release()
            recorded = wait_until(lambda: all(_errors(sqlite_store, i) for i in queued[:LANES]), WAIT)
            clock.advance(WALLET_PAUSE_CAP_SECONDS)  # the ten wallets' pauses are over
            second_round = wait_until(lambda: hole.connections >= LANES + SLOW_LANES, WAIT)
            delivered = _healthy_deliveries(sqlite_store, clock, receiver)
            meanwhile = (hole.open, hole.connections)
        finally:
            stop.set()
            hole.release()
            thread.join(WAIT)
    assert not thread.is_alive()
    assert first_round and recorded and second_round
    assert delivered == 3 and meanwhile == (SLOW_LANES, LANES + SLOW_LANES)


def test_a_claim_gives_slow_wallets_at_most_their_share(sqlite_store: SqliteStore) -> None:
    """`lane_claims` over the store: slow wallets' items due first take at most ``slow_free`` of the free lanes, the
    other wallets' items the rest; a claim that cannot exceed the share is one plain claim."""
    clock = FakeClock()
    slow = [f"w-slow{n}" for n in range(6)]
    for wallet_id in [*slow, "w-a", "w-b", "w-c"]:
        _wallet(sqlite_store, wallet_id, "https://hooks.example.com/x")
        _event(sqlite_store, clock, wallet_id)
    calls: list[tuple[int, frozenset[str]]] = []

    def claim(limit: int, skip: frozenset[str]) -> list[OutboxItem]:
        calls.append((limit, skip))
        return sqlite_store.claim_webhooks(clock.now(), LEASE_SECONDS, limit, skip_wallets=skip)

    def wallets(free: int, slow_free: int, maybe_slow: list[str]) -> list[str]:
        items = lane_claims(claim, free=free, slow_free=slow_free, maybe_slow=frozenset(maybe_slow))
        return [item.wallet_id for item in items]

    assert wallets(8, 2, slow) == ["w-slow0", "w-slow1", "w-a", "w-b", "w-c"]
    assert calls == [(2, frozenset()), (6, frozenset(slow))]  # open to all for the slow share, then skipping them
    assert wallets(4, 0, slow) == []  # the slow share is used up: only other wallets, and none is due
    assert calls[2:] == [(4, frozenset(slow))]
    assert wallets(3, 3, slow) == ["w-slow2", "w-slow3", "w-slow4"]  # cannot exceed the share: one plain claim
    assert calls[3:] == [(3, frozenset())]
    assert wallets(0, 5, slow) == [] and len(calls) == 4  # no free lane: no claim


def test_slow_wallets_are_remembered_for_a_while_whatever_they_answer_meanwhile() -> None:
    memory = SlowWallets(slow_seconds=5.0, remember_seconds=100.0)
    memory.record("w-quick", took=4.9, now=10.0)
    memory.record("w-hung", took=10.0, now=10.0)
    assert memory.current(10.0) == {"w-hung"} and memory.is_slow("w-hung", 10.0)
    memory.record("w-hung", took=0.1, now=50.0)  # one quick answer between hangs wins no ordinary lane back
    assert memory.current(109.9) == {"w-hung"}
    assert memory.current(110.0) == frozenset() and not memory.is_slow("w-hung", 110.0)
