"""DynamoDB-only outbox behaviour (`parent_proxy.store.dynamodb_outbox_heads`): a claim reads the heads of the
wallets it takes or must pass over, through the ``outbox_due`` index, and of each wallet it takes only the first
item, never a backlog; one delivery in flight per wallet holds across workers (the lease is on the wallet's head, in
the claim's transaction); an item enqueued while its wallet's head is later, or while a claim is under way, is not
lost (the newcomer mark); a stale index entry never leads to a wrong claim; items written before heads are found
once per table, their wallets due at their earliest item (a mark due earlier kept). Items read are counted at the
boto3 seam (``ScannedCount`` of every query: what DynamoDB read, before any filter; and every item ``get_item``
found)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import pytest

from parent_proxy.store.dynamodb import DynamoStore
from parent_proxy.store.dynamodb_outbox_heads import pointer_item
from parent_proxy.store.model import OutboxItem, OutboxStatus
from parent_proxy.store.validation_outbox import WALLET_PAUSE_CAP_SECONDS
from tests.proxy.conftest import make_wallet, moto_dynamo_store
from tests.proxy.hooked_client import CountingClient, Hook, Hooked

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

T0 = 1_700_000_000.0
LEASE = 30.0
TABLE = "waiaas-test"


def item(event_id: str, wallet_id: str, due: float) -> OutboxItem:
    return OutboxItem(event_id, wallet_id, "decision", b'{"x":1}', created_at=T0, next_attempt_at=due)


def reads(client: CountingClient) -> int:
    """Items read since the last call (and reset)."""
    total = client.items_read + client.items_got
    client.items_read = client.items_got = 0
    return total


@pytest.fixture
def counted(aws_env: None) -> Iterator[tuple[Any, CountingClient]]:
    with moto_dynamo_store(CountingClient) as (store, client):
        for wallet_id in ("w1", "w2", "w3"):
            store.create_wallet(make_wallet(wallet_id))
        assert store.claim_webhooks(T0 - 1000, LEASE, 10) == []  # the store's first claim (see the last test)
        yield store, client


@pytest.fixture
def hooked(aws_env: None) -> Iterator[tuple[Any, Hooked]]:
    with moto_dynamo_store(Hooked) as (store, client):
        for wallet_id in ("w1", "w2"):
            store.create_wallet(make_wallet(wallet_id))
        assert store.claim_webhooks(T0 - 1000, LEASE, 10) == []
        yield store, client


def _index_query(kwargs: dict[str, Any]) -> bool:
    return "IndexName" in kwargs


def test_a_wallets_backlog_costs_a_claim_nothing(counted: tuple[Any, CountingClient]) -> None:
    """A receiver that fails at once, with 150 due items queued for it: before, every claim paged through the index
    entry of every due item (150 items read per claim, N^2/2 to drain a backlog of N); now a claim reads the index
    entries of the wallets it reaches, their head and mark, their first pointer and that item."""
    store, client = counted
    for i in range(150):
        store.enqueue_webhook(item(f"a{i:05d}", "w1", due=T0 + i))
    store.enqueue_webhook(item("b0", "w2", due=T0 + 200))
    now = T0 + 300
    reads(client)
    first = store.claim_webhooks(now, LEASE, 10)
    assert [c.event_id for c in first] == ["a00000", "b0"]
    assert reads(client) == 8  # two index entries (the marks), then per wallet: its marks, a pointer, the item
    store.mark_delivered("b0", first[1].lease_id or "", now=now, status_code=200)
    reads(client)
    lease = first[0].lease_id or ""
    for k in range(1, 4):
        failed = now + 100 * k
        store.mark_failed(f"a{k - 1:05d}", lease, now=failed, error="HTTP 500", status_code=500,
                          next_attempt_at=failed + 3600)  # fmt: skip
        assert reads(client) == 4  # the item, the head, the wallet's first two pointers
        assert store.claim_webhooks(failed + WALLET_PAUSE_CAP_SECONDS - 1, LEASE, 10) == []  # the wallet's pause
        reads(client)
        [claimed] = store.claim_webhooks(failed + WALLET_PAUSE_CAP_SECONDS, LEASE, 10)
        assert claimed.event_id == f"a{k:05d}"
        assert reads(client) == 4  # the head's index entry, the head, a pointer, the item
        lease = claimed.lease_id or ""


def test_items_not_due_and_finished_items_are_never_read(counted: tuple[Any, CountingClient]) -> None:
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
    assert store.claim_webhooks(T0, LEASE, 10) == []  # each wallet's mark is folded into its head (due later)
    store.enqueue_webhook(item("a0", "w1", due=T0 + 1))
    store.enqueue_webhook(item("a1", "w1", due=T0 + 2))
    store.enqueue_webhook(item("b0", "w2", due=T0 + 3))
    store.enqueue_webhook(item("c0", "w3", due=T0 + 4))
    now = T0 + 100
    reads(client)
    assert [c.event_id for c in store.claim_webhooks(now, LEASE, 2)] == ["a0", "b0"]
    assert reads(client) == 10  # a page of 2 entries (w1's and w2's marks), then per wallet: its head and mark,
    # its first pointer, that item
    assert [c.event_id for c in store.claim_webhooks(now, LEASE, 10)] == ["c0"]
    assert reads(client) == 7  # w3's mark, the heads of w1 and w2 (leased: passed over), then 4 reads for w3
    [a0] = [store.get_outbox_item("a0")]
    store.mark_delivered("a0", a0.lease_id or "", now=now + 1, status_code=200)
    reads(client)
    assert [c.event_id for c in store.claim_webhooks(now + 1, LEASE, 10)] == ["a1"]
    assert reads(client) == 6  # the heads of w1, w2 and w3 (two leased), then w1's head, first pointer, item
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


def test_an_item_enqueued_while_its_wallets_head_is_later_goes_out_at_once(hooked: tuple[Any, Hooked]) -> None:
    """An enqueue does not write the head (it could not lower it without a condition that might refuse the
    signing transaction it is part of): its newcomer mark puts the wallet in the index at the new item's time."""
    store, _ = hooked
    store.enqueue_webhook(item("a0", "w1", due=T0))
    [a0] = store.claim_webhooks(T0, LEASE, 10)
    store.mark_failed("a0", a0.lease_id or "", now=T0 + 1, error="x", status_code=500, next_attempt_at=T0 + 3600)
    assert store.claim_webhooks(T0 + 5, LEASE, 10) == []  # w1's head is due in an hour (its pause ends at T0 + 61)
    store.enqueue_webhook(item("a1", "w1", due=T0 + 70))
    assert [c.event_id for c in store.claim_webhooks(T0 + 70, LEASE, 10)] == ["a1"]


def test_an_item_enqueued_during_a_claim_keeps_its_mark(hooked: tuple[Any, Hooked]) -> None:
    """The claim deletes the wallet's mark only if no enqueue wrote it since the claim read it; one that did makes
    the claim lease without deleting it, so the new item (due before the head the claim writes) is not hidden."""
    store, client = hooked
    other = DynamoStore(client.inner, TABLE)  # a signing request on another process
    store.enqueue_webhook(item("a0", "w1", due=T0))
    store.enqueue_webhook(item("a2", "w1", due=T0 + 3600))
    [a0] = store.claim_webhooks(T0, LEASE, 10)
    store.mark_failed("a0", a0.lease_id or "", now=T0 + 1, error="x", status_code=500, next_attempt_at=T0 + 7200)
    store.enqueue_webhook(item("a1", "w1", due=T0 + 3000))  # the mark: w1 is due at T0 + 3000
    sent: list[int] = []

    def enqueue_first(real: Hook, **kwargs: Any) -> Any:
        sent.append(len(kwargs["TransactItems"]))
        if len(sent) == 1:  # the claim has read the mark and a1's pointer: a3, due earlier, arrives
            other.enqueue_webhook(item("a3", "w1", due=T0 + 3001))
        return real(**kwargs)

    client.hooks["transact_write_items"] = enqueue_first
    [a1] = store.claim_webhooks(T0 + 3001, LEASE, 10)
    del client.hooks["transact_write_items"]
    assert (a1.event_id, sent) == ("a1", [3, 2])  # lease, head, mark refused; then lease and head alone
    store.mark_delivered("a1", a1.lease_id or "", now=T0 + 3002, status_code=200)
    assert [c.event_id for c in store.claim_webhooks(T0 + 3002, LEASE, 10)] == ["a3"]


def test_two_workers_never_lease_two_items_of_one_wallet(hooked: tuple[Any, Hooked]) -> None:
    """A worker whose index read did not show the wallet's other item (written after it, due earlier: the fleet's
    clocks differ) and that another worker leased meanwhile: the head's lease, read consistently and required by
    the claim's transaction, stops it."""
    store, client = hooked
    other = DynamoStore(client.inner, TABLE)  # a second worker on the same table
    store.enqueue_webhook(item("a1", "w1", due=T0 + 1))
    taken = []

    def read_then_the_other_worker_claims(real: Hook, **kwargs: Any) -> Any:
        page = real(**kwargs)  # this worker has read w1 as due, with nothing in flight
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
    not end the delivery another claim of the wallet has in flight since; here that claim lands between the
    finish's reads and its transaction, which is refused for the head it moved and sent again from fresh reads."""
    store, client = hooked
    other = DynamoStore(client.inner, TABLE)
    store.enqueue_webhook(item("a0", "w1", due=T0))
    store.enqueue_webhook(item("a2", "w1", due=T0 + 1))
    [late] = store.claim_webhooks(T0, LEASE, 10)  # its worker stalls past its lease
    store.enqueue_webhook(item("a_early", "w1", due=T0 - 5))
    current: list[OutboxItem] = []

    def the_other_claim_first(real: Hook, **kwargs: Any) -> Any:
        if not current:
            current.extend(other.claim_webhooks(T0 + 31, LEASE, 10))
        return real(**kwargs)

    client.hooks["transact_write_items"] = the_other_claim_first
    store.mark_delivered("a0", late.lease_id or "", now=T0 + 32, status_code=200)
    del client.hooks["transact_write_items"]
    assert [(c.event_id, c.attempts) for c in current] == [("a_early", 1)]
    assert store.get_outbox_item("a0").status == OutboxStatus.DELIVERED
    assert store.claim_webhooks(T0 + 33, LEASE, 10) == []  # a_early is still in flight: not a2
    store.mark_delivered("a_early", current[0].lease_id or "", now=T0 + 34, status_code=200)
    assert [c.event_id for c in store.claim_webhooks(T0 + 34, LEASE, 10)] == ["a2"]


def test_a_stale_index_entry_never_leads_to_a_wrong_claim(hooked: tuple[Any, Hooked]) -> None:
    """The index is eventually consistent: a claim may read entries of wallets whose items were finished, claimed
    or rescheduled since. Every decision is taken on consistent reads and conditional writes: the claim leases
    nothing and changes no item."""
    store, client = hooked
    for event_id, wallet_id, due in (("a0", "w1", T0), ("b0", "w2", T0 + 1), ("b1", "w2", T0 + 2)):
        store.enqueue_webhook(item(event_id, wallet_id, due))
    stale: list[Any] = []

    def keep_the_page(real: Hook, **kwargs: Any) -> Any:
        page = real(**kwargs)
        if _index_query(kwargs):
            stale.append(page)
        return page

    client.hooks["query"] = keep_the_page
    [a0, b0] = store.claim_webhooks(T0 + 10, LEASE, 10)
    store.mark_delivered("a0", a0.lease_id or "", now=T0 + 11, status_code=200)  # w1 has nothing left
    store.mark_failed("b0", b0.lease_id or "", now=T0 + 11, error="x", status_code=500, next_attempt_at=T0 + 3600)
    [b1] = store.claim_webhooks(T0 + 71, LEASE, 10)  # w2 has b1 in flight now (its pause over)
    before = {e: store.get_outbox_item(e) for e in ("a0", "b0", "b1")}
    client.hooks["query"] = lambda real, **kwargs: stale[0] if _index_query(kwargs) else real(**kwargs)
    assert store.claim_webhooks(T0 + 100, LEASE, 10) == []  # a0 finished, b0 rescheduled, b1 leased
    assert {e: store.get_outbox_item(e) for e in ("a0", "b0", "b1")} == before
    del client.hooks["query"]
    assert b1.event_id == "b1" and store.claim_webhooks(T0 + 40, LEASE, 10) == []


def test_a_pointer_left_behind_is_dropped(hooked: tuple[Any, Hooked]) -> None:
    """A pointer whose item is no longer pending at its time (only a race with the one-off indexing of older items
    can leave one) would head its wallet for ever: the claim that finds it deletes it, and the wallet goes on."""
    store, client = hooked
    ghost = pointer_item("w1", "ghost", T0 - 5)
    client.inner.put_item(TableName=TABLE, Item=ghost)
    store.enqueue_webhook(item("a0", "w1", due=T0))
    assert store.claim_webhooks(T0, LEASE, 10) == []
    assert "Item" not in client.inner.get_item(TableName=TABLE, Key={"pk": ghost["pk"], "sk": ghost["sk"]})
    assert [c.event_id for c in store.claim_webhooks(T0, LEASE, 10)] == ["a0"]


def _older_item(event_id: str, wallet_id: str, due: float, **extra: Any) -> dict[str, Any]:
    """A pending item as a build before heads wrote it (no pointer; ``due_key`` since that build's index)."""
    return {
        "pk": {"S": "OUTBOX"},
        "sk": {"S": event_id},
        "wallet_id": {"S": wallet_id},
        "event_type": {"S": "decision"},
        "body": {"B": b"{}"},
        "created_at": {"N": str(T0)},
        "status": {"S": "pending"},
        "attempts": {"N": "0"},
        "next_attempt_at": {"N": str(due)},
        "lease_id": {"NULL": True},
        "lease_until": {"NULL": True},
        **extra,
    }


def test_items_written_before_heads_are_claimed_and_looked_for_once_per_table(aws_env: None) -> None:
    """Pending items as older builds wrote them (with and without ``due_key``, one under a live lease): the first
    claim on the table gives them pointers, takes them out of the index and marks their wallets (w2's head carries
    the live lease); no later claim of any store reads the ``OUTBOX`` partition again."""
    with moto_dynamo_store(CountingClient) as (store, client):
        for wallet_id in ("w1", "w2"):
            store.create_wallet(make_wallet(wallet_id))
        older = (
            _older_item("old1", "w1", T0 + 5),
            _older_item("old0", "w1", T0 + 6, due_key={"S": "x"}),
            _older_item("busy", "w2", T0, attempts={"N": "1"}, lease_id={"S": "L"}, lease_until={"N": str(T0 + 20)}),
            _older_item("next", "w2", T0 + 1, due_key={"S": "y"}),
        )
        for i in older:
            client.inner.put_item(TableName=TABLE, Item=i)
        for n in range(20):
            store.enqueue_webhook(item(f"later{n}", "w1", due=T0 + 3600))
        assert store.claim_webhooks(T0, LEASE, 10) == []  # old1 is not due yet, w2 is in flight
        assert all("due_key" not in client.inner.get_item(TableName=TABLE, Key={"pk": i["pk"], "sk": i["sk"]})["Item"]
                   for i in older)  # fmt: skip
        fresh = DynamoStore(cast("DynamoDBClient", client), TABLE)  # another process on the same table
        reads(client)
        [old1] = fresh.claim_webhooks(T0 + 5, LEASE, 10)
        assert (old1.event_id, old1.attempts, old1.next_attempt_at) == ("old1", 1, T0 + 5)
        assert (
            reads(client) == 7
        )  # the layout item; w2's head (in flight) and mark, w1's mark; w1's mark, pointer, item
        fresh.mark_failed("old1", old1.lease_id or "", now=T0 + 6, error="x", status_code=None, next_attempt_at=T0 + 60)
        claimed = fresh.claim_webhooks(T0 + 60, LEASE, 10)  # busy's lease (an older build's) and w1's pause ended
        assert [(c.event_id, c.attempts) for c in claimed] == [("busy", 2), ("old0", 1)]
        assert fresh.claim_webhooks(T0 + 61, LEASE, 10) == []  # both wallets in flight


@pytest.mark.parametrize(
    "newcomer", [None, 1.0, 60.0], ids=["alone", "a-newer-item-due-before", "a-newer-item-due-after"]
)
def test_a_wallet_with_items_written_before_heads_is_due_at_its_earliest(aws_env: None, newcomer: float | None) -> None:
    """No head and no lease, with or without a newcomer mark (an item enqueued by this build before the move): the
    one-off move marks the wallet as due at its earliest older item (found in any order) unless the mark is due
    earlier, so a claim at the earliest of all takes it; a store reads the layout item once."""
    with moto_dynamo_store(Hooked) as (store, client):
        store.create_wallet(make_wallet("w1"))
        for event_id, due in (("old1", T0 + 100), ("old0", T0 + 5), ("old2", T0 + 50)):
            client.inner.put_item(TableName=TABLE, Item=_older_item(event_id, "w1", due))
        if newcomer is not None:
            at = T0 + newcomer
            store.enqueue_webhook(OutboxItem("new", "w1", "decision", b"{}", created_at=at, next_attempt_at=at))
        first, expected = (T0 + 5, "old0") if newcomer is None or newcomer > 5 else (T0 + newcomer, "new")
        got: list[str] = []

        def logged(real: Hook, **kwargs: Any) -> Any:
            got.append(kwargs["Key"]["pk"]["S"])
            return real(**kwargs)

        client.hooks["get_item"] = logged
        assert store.claim_webhooks(first - 0.5, LEASE, 10) == []
        assert got.count("LAYOUT") == 1
        assert [c.event_id for c in store.claim_webhooks(first, LEASE, 10)] == [expected]
        assert got.count("LAYOUT") == 1  # once per store


def test_an_item_enqueued_during_the_move_keeps_its_earlier_mark(aws_env: None) -> None:
    """The move marks a wallet at its earliest older item only if no mark is due earlier: an item another process
    enqueues after the move read the ``OUTBOX`` partition (its mark due before the older items) is not hidden
    until the older items are due."""
    with moto_dynamo_store(Hooked) as (store, client):
        store.create_wallet(make_wallet("w1"))
        other = DynamoStore(client.inner, TABLE)
        client.inner.put_item(TableName=TABLE, Item=_older_item("old0", "w1", T0 + 5))
        enqueued: list[str] = []

        def enqueue_first(real: Hook, **kwargs: Any) -> Any:
            if kwargs["Key"]["sk"]["S"] == "w1#NEW" and not enqueued:
                enqueued.append("new")
                other.enqueue_webhook(
                    OutboxItem("new", "w1", "decision", b"{}", created_at=T0 + 1, next_attempt_at=T0 + 1)
                )
            return real(**kwargs)

        client.hooks["update_item"] = enqueue_first
        assert store.claim_webhooks(T0, LEASE, 10) == []
        del client.hooks["update_item"]
        assert enqueued == ["new"]
        assert [c.event_id for c in store.claim_webhooks(T0 + 1, LEASE, 10)] == ["new"]
