"""How the DynamoDB outbox is claimed without reading it whole: a sparse index of pending items by due time, and
one item per wallet that marks its delivery in flight.

Due items. A pending item (``OUTBOX/<event id>``) carries ``due_key`` = `due_key` (the 16 hex digits of
`time_key` of ``next_attempt_at``, ``#``, the event id): its string order is the order of (``next_attempt_at``,
event id), exactly, the order of SQLite's ``due`` column (`sqlite_outbox_due`). The item's every write sets it
with the due time (enqueue, reschedule; a claim leaves it, so a leased item keeps its place and a lease that ends
gives the wallet back its earliest item, as on SQLite); a finished item moves to ``O#<event>/ITEM`` without it. The
table's global secondary index `OUTBOX_DUE_INDEX` (HASH ``pk``, RANGE ``due_key``, all attributes projected)
therefore holds the pending items only, and a claim queries it for ``due_key`` below ``<time key of now>$``: the
due items in due order, a page of the batch size first, larger pages (twice as large each, at most 1000) only
while it skips. It skips what SQLite's scan passes over: the items of a wallet already in flight (its backlog of
due items, and the leased item itself) and a wallet's items after its first. Items not yet due and finished items
are never read (before: the whole ``OUTBOX`` partition at every claim).

Wallets in flight. ``W#<wallet>/OUTBOX_LEASE`` holds the event id, lease id and ``lease_until`` of the wallet's item
under lease. A claim is one transaction: the item's lease (only if its attempts and due time are still those read
and it has no live lease) and the put of the wallet's lease item (only if there is none or its lease has ended). A
finish deletes that item in the transaction that clears the item's lease, if it is still this lease's; if not (this
lease ended and another claim of the wallet holds it), the finish is sent again without it. So "none of a wallet
with a delivery in flight" is one condition on one item: exact, like SQLite's write lock (before, a claim read the
partition and then leased what it had read as free: two claims racing could each lease an item of one wallet). A
claim resent by botocore after a lost answer carries the same ``ClientRequestToken`` and DynamoDB answers it as
applied (the lease is the caller's).

Why an index and not pointer items. A pointer per pending item under a partition keyed by due time (like the
reservations' ``RT#``/``R#`` pair in `dynamodb_limits`) would be read strongly consistently, but every write that
changes an item's due time or status would have to move its pointer in the same transaction, and a read would
still need the item itself. The index is kept by DynamoDB from the item's own attribute, in the same write, so
nothing can forget it. It is eventually consistent, and that is safe here: an entry is only a candidate. The
claim's conditions are on the base item (attempts and ``next_attempt_at`` as read, no live lease) and on the
wallet's lease item, so a stale entry can only make a claim pass an item over (a later claim takes it), never
lease an item that was claimed, rescheduled or finished, nor a second item of a wallet. Because the conditions pin
the version read, the claimed item is built from the entry read (its other fields never change) with no read
after the write. An item just enqueued or rescheduled may reach the index a moment later. The index has one
partition key value (``OUTBOX``), so it takes the outbox writes the base partition ``OUTBOX`` takes already: no new
hot spot, and no new limit on the outbox's write rate.

Items written before ``due_key`` (no deployment had any: docs/status.md) are not in the index. The first claim of
each store reads ``LAYOUT/OUTBOX_DUE``; while it is absent, the claim gives every pending item without ``due_key``
its key (one read of the ``OUTBOX`` partition, conditional writes) and then puts it, so such items are claimed,
not lost, at the cost of one item read per process afterwards. A build without the index must not keep writing to
the table after that (its new items would not be indexed); their leases have no lease item either, so such a
wallet's next claim may overlap one delivery still in flight from the older build.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from parent_proxy.store.dynamodb_base import (
    DUE_ATTRIBUTE,
    OUTBOX_DUE_INDEX,
    ConditionFailed,
    DynamoBase,
    Item,
    get_f,
    get_s,
    n,
    s,
    translate,
)
from parent_proxy.store.model import OutboxItem
from parent_proxy.store.sqlite_time import time_key

OUTBOX_PK = "OUTBOX"
LEASE_SK = "OUTBOX_LEASE"
LAYOUT_KEY = ("LAYOUT", "OUTBOX_DUE")
MAX_PAGE = 1000
"""The largest page a claim reads from the index (the batch size is at most 1000 too)."""


def due_key(next_attempt_at: float, event_id: str) -> str:
    return f"{time_key(next_attempt_at).hex()}#{event_id}"


def due_bound(now: float) -> str:
    """Above every `due_key` due at ``now`` and below every other (``$`` follows ``#``; the hex has fixed width)."""
    return f"{time_key(now).hex()}$"


def lease_key(wallet_id: str) -> Item:
    return {"pk": s(f"W#{wallet_id}"), "sk": s(LEASE_SK)}


class DynamoOutboxDue(DynamoBase):
    """The due index's reads, the claim transaction and the one-off indexing of older items."""

    _outbox_indexed: bool = False
    """Whether this store has seen ``LAYOUT/OUTBOX_DUE`` (or written it)."""

    def _due_items(self, now: float, first_page: int) -> Iterator[Item]:
        """The pending items due at ``now`` as the index holds them, in due order, read page by page as iterated."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": OUTBOX_DUE_INDEX,
            "KeyConditionExpression": "pk = :pk AND #due < :bound",
            "ExpressionAttributeNames": {"#due": DUE_ATTRIBUTE},
            "ExpressionAttributeValues": {":pk": s(OUTBOX_PK), ":bound": s(due_bound(now))},
        }
        page_size = first_page
        while True:
            with translate():
                page = self._client.query(**request, Limit=page_size)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            page_size = min(2 * page_size, MAX_PAGE)

    def _lease(self, item: OutboxItem, lease_id: str, now: float, until: float) -> None:
        """Lease ``item`` (as read from the index) and mark its wallet in flight, in one transaction. Raises
        `ConditionFailed`; ``reasons[0]``: the item changed since it was read; ``reasons[1]``: the wallet has a
        delivery in flight."""
        take = {
            "Update": {
                "TableName": self._table,
                "Key": {"pk": s(OUTBOX_PK), "sk": s(item.event_id)},
                "UpdateExpression": "SET attempts = :next, lease_id = :l, lease_until = :u",
                "ConditionExpression": "attempts = :seen AND next_attempt_at = :due"
                " AND (attribute_type(lease_until, :null) OR lease_until <= :now)",
                "ExpressionAttributeValues": {
                    ":next": n(item.attempts + 1),
                    ":seen": n(item.attempts),
                    ":due": n(item.next_attempt_at),
                    ":l": s(lease_id),
                    ":u": n(until),
                    ":now": n(now),
                    ":null": s("NULL"),
                },
            }
        }
        mark = {
            **lease_key(item.wallet_id),
            "event_id": s(item.event_id),
            "lease_id": s(lease_id),
            "lease_until": n(until),
        }
        in_flight = {
            "Put": {
                "TableName": self._table,
                "Item": mark,
                "ConditionExpression": "attribute_not_exists(pk) OR lease_until <= :now",
                "ExpressionAttributeValues": {":now": n(now)},
            }
        }
        self._transact([take, in_flight])

    def _release_action(self, wallet_id: str, lease_id: str) -> Any:
        """The transaction action that ends the wallet's delivery in flight, only if it is ``lease_id``'s."""
        return {
            "Delete": {
                "TableName": self._table,
                "Key": lease_key(wallet_id),
                "ConditionExpression": "lease_id = :l",
                "ExpressionAttributeValues": {":l": s(lease_id)},
            }
        }

    def _index_older_items(self) -> None:
        """Once per store: unless ``LAYOUT/OUTBOX_DUE`` exists, give every pending item without ``due_key`` its key
        (only if its due time is still the one read), then write it."""
        if self._outbox_indexed:
            return
        if self._get(*LAYOUT_KEY) is None:
            for i in self._unindexed():
                event_id, due = get_s(i, "sk"), get_f(i, "next_attempt_at")
                try:
                    with translate():
                        self._client.update_item(
                            TableName=self._table,
                            Key={"pk": s(OUTBOX_PK), "sk": s(event_id)},
                            UpdateExpression="SET #due = :k",
                            ConditionExpression="attribute_not_exists(#due) AND next_attempt_at = :n",
                            ExpressionAttributeNames={"#due": DUE_ATTRIBUTE},
                            ExpressionAttributeValues={":k": s(due_key(due, event_id)), ":n": n(due)},
                        )
                except ConditionFailed:
                    continue  # finished or rescheduled meanwhile (a reschedule writes the key)
            with translate():
                self._client.put_item(TableName=self._table, Item={"pk": s(LAYOUT_KEY[0]), "sk": s(LAYOUT_KEY[1])})
        self._outbox_indexed = True

    def _unindexed(self) -> list[Item]:
        """Key and due time of every pending item without ``due_key`` (a read of the whole ``OUTBOX`` partition)."""
        items: list[Item] = []
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "FilterExpression": "attribute_not_exists(#due)",
            "ProjectionExpression": "sk, next_attempt_at",
            "ExpressionAttributeNames": {"#due": DUE_ATTRIBUTE},
            "ExpressionAttributeValues": {":pk": s(OUTBOX_PK)},
            "ConsistentRead": True,
        }
        while True:
            with translate():
                page = self._client.query(**request)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
