"""The one-off move of pending outbox items written before wallet heads (`dynamodb_outbox_heads`) to that layout.

Such an item has no pointer, and may carry ``due_key`` (an entry of the due index as itself, from the builds that
claimed through the index item by item). The first claim of each store reads ``LAYOUT/OUTBOX_HEADS``; while it is
absent, the claim reads the ``OUTBOX`` partition once, gives every pending item its pointer, removes its ``due_key``,
marks its wallet as due at its earliest item (and puts the wallet's head with the latest lease still live, if the
wallet has no head: that build's lease was on the item only), then puts the layout item. Every write is idempotent
or conditional, so stores may do it at once. An item finished or rescheduled meanwhile may be left a pointer that
no longer matches it: the claim that finds it deletes it. A build without heads must not keep writing to the table
after that (its items would get no pointer); its ``W#<wallet>/OUTBOX_LEASE`` items are left, unread.
"""

from __future__ import annotations

import contextlib

from parent_proxy.store.dynamodb_attributes import get_s, n, s
from parent_proxy.store.dynamodb_base import DUE_ATTRIBUTE, ConditionFailed, Item, translate
from parent_proxy.store.dynamodb_outbox_heads import (
    NEW,
    OUTBOX_PK,
    DynamoOutboxHeads,
    Head,
    due_key,
    parse_outbox,
    pointer_item,
    wallet_key,
)

LAYOUT_KEY = ("LAYOUT", "OUTBOX_HEADS")


class DynamoOutboxLayout(DynamoOutboxHeads):
    """`_ready_heads`, run by each claim (a no-op after the store's first)."""

    _heads_ready: bool = False
    """Whether this store has seen ``LAYOUT/OUTBOX_HEADS`` (or written it)."""

    def _ready_heads(self, now: float) -> None:
        """Once per store: unless ``LAYOUT/OUTBOX_HEADS`` exists, give every pending item its pointer and take it out
        of the index, mark each wallet with pending items (and put its head with a lease still live at ``now``, if it
        has no head), then write the layout item. Every write is idempotent or conditional, so two stores may do
        it at once."""
        if self._heads_ready:
            return
        if self._get(*LAYOUT_KEY) is None:
            firsts: dict[str, str] = {}
            leases: dict[str, tuple[str, float]] = {}
            for i in self._older_pending():
                item = parse_outbox(i, get_s(i, "sk"))
                key = due_key(item.next_attempt_at, item.event_id)
                with translate():
                    self._client.put_item(
                        TableName=self._table, Item=pointer_item(item.wallet_id, item.event_id, item.next_attempt_at)
                    )
                if DUE_ATTRIBUTE in i:
                    self._unindex(item.event_id)
                firsts[item.wallet_id] = min(firsts.get(item.wallet_id, key), key)
                held = leases.get(item.wallet_id, ("", now))[1]
                if item.lease_id is not None and item.lease_until is not None and item.lease_until > held:
                    leases[item.wallet_id] = (item.lease_id, item.lease_until)  # the latest live lease
            for wallet_id, key in firsts.items():
                self._mark_older(wallet_id, key, leases.get(wallet_id))
            with translate():
                self._client.put_item(TableName=self._table, Item={"pk": s(LAYOUT_KEY[0]), "sk": s(LAYOUT_KEY[1])})
        self._heads_ready = True

    def _older_pending(self) -> list[Item]:
        """Every pending item (a read of the whole ``OUTBOX`` partition, once per table)."""
        return self._query(OUTBOX_PK)

    def _unindex(self, event_id: str) -> None:
        """Remove a pending item's own ``due_key`` (an entry of the index before heads), if it still has it."""
        with contextlib.suppress(ConditionFailed), translate():  # a refusal: finished, or unindexed by another store
            self._client.update_item(
                TableName=self._table,
                Key={"pk": s(OUTBOX_PK), "sk": s(event_id)},
                UpdateExpression="REMOVE #due",
                ConditionExpression="attribute_exists(#due)",
                ExpressionAttributeNames={"#due": DUE_ATTRIBUTE},
            )

    def _mark_older(self, wallet_id: str, key: str, lease: tuple[str, float] | None) -> None:
        """Mark the wallet as due at ``key`` unless its mark is due earlier; with a live ``lease`` from a build
        before heads, put the head carrying it, unless the wallet has one."""
        with contextlib.suppress(ConditionFailed), translate():
            self._client.update_item(
                TableName=self._table,
                Key=wallet_key(wallet_id, NEW),
                UpdateExpression="SET #due = :k, wallet_id = :w ADD version :one",
                ConditionExpression="attribute_not_exists(#due) OR #due > :k",
                ExpressionAttributeNames={"#due": DUE_ATTRIBUTE},
                ExpressionAttributeValues={":k": s(key), ":w": s(wallet_id), ":one": n(1)},
            )
        action = None if lease is None else self._head_action(wallet_id, Head(None), key, lease, None)
        if action is not None:
            with contextlib.suppress(ConditionFailed), translate():
                self._client.put_item(**action["Put"])
