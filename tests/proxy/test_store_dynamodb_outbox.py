"""DynamoDB-only outbox behaviour (`parent_proxy.store.dynamodb_outbox_due`): a claim reads the due items it takes
or must pass over, through the ``outbox_due`` index, not the whole ``OUTBOX`` partition; one delivery in flight per
wallet holds across workers (a lease item per wallet, in the claim's transaction); an index entry that is stale
never leads to a wrong claim; items written before the index are found once per table. Items read are counted at
the boto3 seam (``ScannedCount`` of every query: what DynamoDB read, before any filter)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from parent_proxy.store.dynamodb import DynamoStore
from parent_proxy.store.model import OutboxItem, OutboxStatus
from tests.proxy.conftest import make_wallet, moto_dynamo_store
from tests.proxy.hooked_client import CountingClient, Hook, Hooked

T0 = 1_700_000_000.0
LEASE = 30.0
TABLE = "waiaas-test"


def item(event_id: str, wallet_id: str, due: float) -> OutboxItem:
    return OutboxItem(event_id, wallet_id, "decision", b'{"x":1}', created_at=T0, next_attempt_at=due)


@pytest.fixture
def counted(aws_env: None) -> Iterator[tuple[Any, CountingClient]]:
    with moto_dynamo_store(CountingClient) as (store, client):
        for wallet_id in ("w1", "w2", "w3"):
            store.create_wallet(make_wallet(wallet_id))
        yield store, client


@pytest.fixture
def hooked(aws_env: None) -> Iterator[tuple[Any, Hooked]]:
    with moto_dynamo_store(Hooked) as (store, client):
        for wallet_id in ("w1", "w2"):
            store.create_wallet(make_wallet(wallet_id))
        assert store.claim_webhooks(T0 - 1000, LEASE, 10) == []  # the store's first claim (see the last test)
        yield store, client


def test_a_claim_reads_only_the_due_items_it_takes_or_passes_over(counted: tuple[Any, CountingClient]) -> None:
    """Before: every claim read every pending item (here 154), due or not."""
    store, client = counted
    for i in range(40):  # a history of 30 delivered and 10 dead items of w3
        store.enqueue_webhook(item(f"h{i:02d}", "w3", due=T0 - 100))
        [held] = store.claim_webhooks(T0 - 100, LEASE, 1)
        if i % 4:
            store.mark_delivered(held.event_id, held.lease_id or "", now=T0 - 99, status_code=200)
        else:
            store.mark_failed(held.event_id, held.lease_id or "", now=T0 - 99, error="x", status_code=500,
                              next_attempt_at=None)  # fmt: skip
    for i in range(150):  # a backlog of pending items not due for an hour or more
        store.enqueue_webhook(item(f"later{i:03d}", f"w{i % 3 + 1}", due=T0 + 3600 + i))
    store.enqueue_webhook(item("a0", "w1", due=T0 + 1))
    store.enqueue_webhook(item("a1", "w1", due=T0 + 2))
    store.enqueue_webhook(item("b0", "w2", due=T0 + 3))
    store.enqueue_webhook(item("c0", "w3", due=T0 + 4))
    now = T0 + 100
    client.items_read = 0
    assert [c.event_id for c in store.claim_webhooks(now, LEASE, 2)] == ["a0", "b0"]
    assert client.items_read == 4  # a first page of 2 (a0, a1: w1 is taken), then a page of up to 4 (b0, c0)
    client.items_read = 0
    assert [c.event_id for c in store.claim_webhooks(now, LEASE, 10)] == ["c0"]
    assert client.items_read == 4  # a0 and b0 (leased: they keep their place), a1 (w1 in flight), c0
    [a0] = [store.get_outbox_item("a0")]
    store.mark_delivered("a0", a0.lease_id or "", now=now + 1, status_code=200)
    client.items_read = 0
    assert [c.event_id for c in store.claim_webhooks(now + 1, LEASE, 10)] == ["a1"]
    assert client.items_read == 3  # a1, b0 and c0, the due items left
    assert store.get_outbox_item("h01").status == OutboxStatus.DELIVERED
    assert store.get_outbox_item("h00").status == OutboxStatus.DEAD


def test_claims_follow_due_order_exactly_at_every_boundary(aws_env: None) -> None:
    """The index key orders by the exact due time, then event id (as SQLite's ``due`` key): each boundary at, just
    before and just after each due time claims exactly the items a scan finds due, in due order. (No 0.0: the time
    just after it, 5e-324, is below the smallest number DynamoDB stores.)"""
    dues = sorted((0.5, 1.0, 2.0, T0 - 1, T0 - 0.5, T0, T0, T0 + 1e-6, T0 + 0.25, T0 + 1, T0 + 3600.5))
    with moto_dynamo_store(lambda client: client) as (store, _):
        for i, due in enumerate(dues):
            store.create_wallet(make_wallet(f"w{i:02d}"))
            store.enqueue_webhook(item(f"e{i:02d}", f"w{i:02d}", due))
        boundaries = {*dues} | {math.nextafter(t, math.inf) for t in dues} | {math.nextafter(t, 0) for t in dues}
        for now in sorted(boundaries):  # a zero lease ends at ``now``: every later claim may take the item again
            claimed = [c.event_id for c in store.claim_webhooks(now, 0.0, 1000)]
            assert claimed == [f"e{i:02d}" for i, due in enumerate(dues) if due <= now], now


def test_two_workers_never_lease_two_items_of_one_wallet(hooked: tuple[Any, Hooked]) -> None:
    """Before: each claim read the outbox, then leased what it had read as free; a worker whose read did not show
    the wallet's other item (written after it, due earlier: the fleet's clocks differ) leased a second item of a
    wallet in flight (the protocol called this a race it allowed)."""
    store, client = hooked
    other = DynamoStore(client.inner, TABLE)  # a second worker on the same table
    store.enqueue_webhook(item("a1", "w1", due=T0 + 1))
    taken = []

    def read_then_the_other_worker_claims(real: Hook, **kwargs: Any) -> Any:
        page = real(**kwargs)  # this worker has read a1 as due, and w1 with nothing in flight
        del client.hooks["query"]
        other.enqueue_webhook(item("a0", "w1", due=T0))
        taken.extend(other.claim_webhooks(T0 + 10, LEASE, 10))
        return page

    client.hooks["query"] = read_then_the_other_worker_claims
    assert store.claim_webhooks(T0 + 10, LEASE, 10) == []
    assert [c.event_id for c in taken] == ["a0"]
    assert store.get_outbox_item("a1").attempts == 0 and store.get_outbox_item("a1").lease_id is None
    other.mark_delivered("a0", taken[0].lease_id or "", now=T0 + 11, status_code=200)
    assert [c.event_id for c in store.claim_webhooks(T0 + 11, LEASE, 10)] == ["a1"]


def test_a_finish_after_its_lease_ended_leaves_the_wallet_to_the_claim_that_holds_it(
    hooked: tuple[Any, Hooked],
) -> None:
    """A worker that marks its item after its lease ended (nobody took that item again, so the mark stands) must
    not end the delivery another claim of the wallet has in flight since."""
    store, _ = hooked
    store.enqueue_webhook(item("a0", "w1", due=T0))
    store.enqueue_webhook(item("a2", "w1", due=T0 + 1))
    [late] = store.claim_webhooks(T0, LEASE, 10)  # its worker stalls past its lease
    store.enqueue_webhook(item("a_early", "w1", due=T0 - 5))
    [current] = store.claim_webhooks(T0 + 31, LEASE, 10)
    assert (late.event_id, current.event_id) == ("a0", "a_early")
    store.mark_delivered("a0", late.lease_id or "", now=T0 + 32, status_code=200)
    assert store.get_outbox_item("a0").status == OutboxStatus.DELIVERED
    assert store.claim_webhooks(T0 + 33, LEASE, 10) == []  # a_early is still in flight: not a2
    store.mark_delivered("a_early", current.lease_id or "", now=T0 + 34, status_code=200)
    assert [c.event_id for c in store.claim_webhooks(T0 + 34, LEASE, 10)] == ["a2"]


def test_a_stale_index_entry_never_leads_to_a_wrong_claim(hooked: tuple[Any, Hooked]) -> None:
    """The index is eventually consistent: a claim may read entries of items finished, claimed or rescheduled since.
    The claim's conditions are on the items themselves: it leases none of them and changes nothing."""
    store, client = hooked
    for event_id, wallet_id, due in (("a0", "w1", T0), ("b0", "w2", T0 + 1), ("b1", "w2", T0 + 2)):
        store.enqueue_webhook(item(event_id, wallet_id, due))
    stale: list[Any] = []

    def keep_the_page(real: Hook, **kwargs: Any) -> Any:
        page = real(**kwargs)
        stale.append(page)
        return page

    client.hooks["query"] = keep_the_page
    [a0, b0] = store.claim_webhooks(T0 + 10, LEASE, 10)
    store.mark_delivered("a0", a0.lease_id or "", now=T0 + 11, status_code=200)  # finished: out of the index
    store.mark_failed("b0", b0.lease_id or "", now=T0 + 11, error="x", status_code=500, next_attempt_at=T0 + 3600)
    [b1] = store.claim_webhooks(T0 + 12, LEASE, 10)  # w2 has b1 in flight now
    before = {e: store.get_outbox_item(e) for e in ("a0", "b0", "b1")}
    client.hooks["query"] = lambda real, **kwargs: stale[0]  # the index as it was before all of that
    assert store.claim_webhooks(T0 + 40, LEASE, 10) == []  # a0 finished, b0 rescheduled, b1 leased
    assert {e: store.get_outbox_item(e) for e in ("a0", "b0", "b1")} == before
    del client.hooks["query"]
    assert b1.event_id == "b1" and store.claim_webhooks(T0 + 40, LEASE, 10) == []


def test_a_claim_answers_the_item_as_stored_even_from_a_stale_entry(hooked: tuple[Any, Hooked]) -> None:
    """An entry read while the item was leased, after its lease ended and the item was rescheduled to a time that
    is due too: same attempt count, another due time. The claim answers the item as stored, or passes it over."""
    store, client = hooked
    store.enqueue_webhook(item("c0", "w1", due=T0))
    [first] = store.claim_webhooks(T0, LEASE, 10)
    pages: list[Any] = []

    def keep_the_page(real: Hook, **kwargs: Any) -> Any:
        pages.append(real(**kwargs))
        return pages[-1]

    client.hooks["query"] = keep_the_page
    assert store.claim_webhooks(T0 + 10, LEASE, 10) == []  # c0 in flight, as this page shows
    store.mark_failed("c0", first.lease_id or "", now=T0 + 31, error="x", status_code=500, next_attempt_at=T0 + 32)
    client.hooks["query"] = lambda real, **kwargs: pages[0]  # its lease ended at T0 + 30 in this page
    claimed = store.claim_webhooks(T0 + 35, LEASE, 10)
    assert all(c == store.get_outbox_item(c.event_id) for c in claimed)
    del client.hooks["query"]
    claimed += store.claim_webhooks(T0 + 35, LEASE, 10)
    assert [(c.event_id, c.attempts, c.next_attempt_at) for c in claimed] == [("c0", 2, T0 + 32)]
    assert claimed[0] == store.get_outbox_item("c0")


def test_items_written_before_the_index_are_claimed_and_looked_for_once_per_table(
    counted: tuple[Any, CountingClient],
) -> None:
    """A pending item as a build before ``due_key`` wrote it is not in the index: the first claim on the table
    gives it its key, and no later claim (of any store) reads the partition for such items again."""
    store, client = counted
    old = {
        "pk": {"S": "OUTBOX"},
        "sk": {"S": "old1"},
        "wallet_id": {"S": "w1"},
        "event_type": {"S": "decision"},
        "body": {"B": b"{}"},
        "created_at": {"N": str(T0)},
        "status": {"S": "pending"},
        "attempts": {"N": "0"},
        "next_attempt_at": {"N": str(T0 + 5)},
        "lease_id": {"NULL": True},
        "lease_until": {"NULL": True},
    }
    client.inner.put_item(TableName=TABLE, Item=old)
    for i in range(20):
        store.enqueue_webhook(item(f"later{i}", "w2", due=T0 + 3600))
    assert store.claim_webhooks(T0, LEASE, 10) == []  # old1 is not due yet
    client.items_read = 0
    fresh = DynamoStore(client, TABLE)  # another process on the same table
    [old1] = fresh.claim_webhooks(T0 + 5, LEASE, 10)
    assert (old1.event_id, old1.attempts, old1.next_attempt_at) == ("old1", 1, T0 + 5)
    assert client.items_read == 1  # old1, through the index; the partition's 21 items are not read again
    fresh.mark_failed("old1", old1.lease_id or "", now=T0 + 6, error="x", status_code=None, next_attempt_at=T0 + 60)
    assert [c.event_id for c in fresh.claim_webhooks(T0 + 60, LEASE, 10)] == ["old1"]
