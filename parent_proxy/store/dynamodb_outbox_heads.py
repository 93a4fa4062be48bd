"""How the DynamoDB outbox is claimed at a cost that does not grow with any wallet's backlog: the due index holds at
most two entries per wallet, never the items themselves.

Items. A pending item is ``OUTBOX/<event id>`` (moved to ``O#<event>/ITEM`` when finished), and beside it a pointer
``W#<wallet>/OUTBOX#<due key>`` (`due_key`: the 16 hex digits of `time_key` of ``next_attempt_at``, ``#``, the event
id; its string order is the order of (``next_attempt_at``, event id), exactly, the order of SQLite's ``due`` key).
A strongly consistent query of the wallet's ``OUTBOX#`` pointers, one item long, finds its earliest pending item.
The pointer is written with the item, moved by a reschedule and deleted by a finish, each in the item's transaction.

Wallets. ``OUTBOX_WALLETS/<wallet>#HEAD`` (the head) carries the due key of the wallet's earliest pending item as
``due_key``, held back to the end of the wallet's pause (``paused_until``, absent when none: set by a finish that
reschedules a failed item, `validation_outbox.wallet_pause_until`, cleared by any other finish and by a claim; `held`),
the wallet's delivery in flight (``lease_id``, ``lease_until``; absent when none) and a ``version`` that each of its
writes bumps and requires as read (optimistic concurrency: claims and finishes of one wallet serialise on it). It is
written by claims and finishes, never by an enqueue: an enqueue cannot lower a head's due time inside the signing
transaction it belongs to without a condition that could refuse that transaction. An enqueue therefore writes
``OUTBOX_WALLETS/<wallet>#NEW`` (the newcomer mark) unconditionally: ``due_key = if_not_exists(due_key, <key>)`` and
``version + 1``, where the key is the item's `due_key` at the earlier of its creation and due times. The mark says "this
wallet has items the head may not show, none due before ``due_key``": the first enqueue since the last fold sets it, and
the items enqueued after it were created later (and are due no earlier than created, as the proxy's are). A claim that
reaches the wallet folds the mark into the head and deletes it (only if its version is still the one read before the
pointers were queried, so an item enqueued meanwhile keeps its mark). The table's index `OUTBOX_DUE_INDEX` (HASH ``pk``,
RANGE ``due_key``) holds the heads and marks only, so it has at most two entries per wallet with pending items.

A claim queries the index for entries due at ``now`` in due order (a page of the batch size, larger pages only while it
passes entries over) and, for each wallet reached: skips it if the entry shows a live lease; else reads the head and
mark (one consistent query), the earliest pointer and its item (consistent reads); then, in one transaction, leases the
item (only if its attempts and due time are those read and it has no live lease), puts the head with the lease (only if
its version is the one read and no lease was live) and deletes the mark. If the earliest item is not due, or the head's
pause is not over (a mark reached the claim), the claim folds the mark into the head (the head's ``due_key`` is that
item's, held back by the pause) and goes on. It reads entries of wallets it takes, of wallets in flight and of skipped
wallets only: nothing of a wallet's backlog but its first item. Before, a claim read the index entry of every due
pending item until it had its batch: one wallet's backlog of N due items made every claim read N items, and draining it
N^2.

A finish (`dynamodb_outbox`) reads the head and the wallet's first two pointers, and in its transaction clears the lease
if it is still the head's (a finish after its lease ended leaves another claim's), moves the head to the earliest item
left (or deletes it with the last), sets or clears the pause and requires the head's version; if another claim or finish
of the wallet moved the head meanwhile, the finish is sent again from fresh reads. An item enqueued meanwhile is covered
by its mark.

Order. The index orders wallets by the earlier of head and mark, which for the proxy's items (due when created) is
their earliest item, as on SQLite; a wallet whose newcomers are due after their creation is reached at the creation
time, and the claim folds the mark and passes on (an item created, by a clock behind, before an earlier enqueue's
creation time waits for that time at most). The index is eventually consistent, which is safe: an entry is only a
candidate, every decision is taken on consistent reads and conditional writes, so a stale entry can only make a
claim pass a wallet over (a later claim takes it).

Older items. A pending item written before this layout has no pointer: the first claim of each store moves such
items over, once per table (`dynamodb_outbox_layout`). A pointer whose item has been finished or rescheduled since
(only a race with that move can leave one) is deleted by the claim that finds it (`_drop_pointer`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from parent_proxy.errors import StoreUnavailable
from parent_proxy.store.dynamodb_attributes import get_b, get_f, get_i, get_opt_f, get_opt_s, get_s, n, s
from parent_proxy.store.dynamodb_base import (
    CONDITION_FAILED,
    DUE_ATTRIBUTE,
    OUTBOX_DUE_INDEX,
    ConditionFailed,
    DynamoBase,
    Item,
    new_write_id,
    translate,
)
from parent_proxy.store.model import OutboxItem, OutboxStatus
from parent_proxy.store.sqlite_time import time_key

OUTBOX_PK = "OUTBOX"
WALLETS_PK = "OUTBOX_WALLETS"
POINTER_PREFIX = "OUTBOX#"
HEAD = "HEAD"
NEW = "NEW"
PAUSE_ATTRIBUTE = "paused_until"
"""The head's end of the wallet's pause (`validation_outbox.wallet_pause_until`), absent when none."""
MAX_PAGE = 1000
"""The largest page a claim reads from the index (the batch size is at most 1000 too)."""


def due_key(next_attempt_at: float, event_id: str) -> str:
    return f"{time_key(next_attempt_at).hex()}#{event_id}"


def due_bound(now: float) -> str:
    """Above every `due_key` due at ``now`` and below every other (``$`` follows ``#``; the hex has fixed width)."""
    return f"{time_key(now).hex()}$"


def pointer_key(wallet_id: str, key: str) -> Item:
    """The key of the pointer to the pending item whose `due_key` is ``key``."""
    return {"pk": s(f"W#{wallet_id}"), "sk": s(POINTER_PREFIX + key)}


def pointer_due(pointer: Item) -> str:
    """The `due_key` a pointer is stored under."""
    return get_s(pointer, "sk")[len(POINTER_PREFIX) :]


def wallet_key(wallet_id: str, kind: str) -> Item:
    """The key of the wallet's head (`HEAD`) or newcomer mark (`NEW`)."""
    return {"pk": s(WALLETS_PK), "sk": s(f"{wallet_id}#{kind}")}


def pointer_item(wallet_id: str, event_id: str, next_attempt_at: float) -> Item:
    """The pointer to a pending item, with its due time (which tells a pointer left behind: `_drop_pointer`)."""
    return {
        **pointer_key(wallet_id, due_key(next_attempt_at, event_id)),
        "event_id": s(event_id),
        "next_attempt_at": n(next_attempt_at),
    }


def parse_outbox(i: Item, event_id: str) -> OutboxItem:
    return OutboxItem(
        event_id,
        get_s(i, "wallet_id"),
        get_s(i, "event_type"),
        get_b(i, "body"),
        get_f(i, "created_at"),
        OutboxStatus(get_s(i, "status")),
        get_i(i, "attempts"),
        get_f(i, "next_attempt_at"),
        get_opt_s(i, "lease_id"),
        get_opt_f(i, "lease_until"),
    )


@dataclass(frozen=True)
class Head:
    """A wallet's head as read (None where the item does not exist): the key it is due at (`held`), its lease, the
    end of its pause."""

    version: int | None
    due: str | None = None
    lease_id: str | None = None
    lease_until: float | None = None
    paused_until: float | None = None

    def leased_at(self, now: float) -> bool:
        return self.lease_until is not None and self.lease_until > now

    def paused_at(self, now: float) -> bool:
        return self.paused_until is not None and self.paused_until > now


def held(first: str, paused_until: float | None) -> str:
    """The key a head whose earliest item's `due_key` is ``first`` is due at: that key, held back to the end of the
    wallet's pause (the same event id, so the string order is that of the times)."""
    if paused_until is None:
        return first
    return max(first, due_key(paused_until, first.partition("#")[2]))


def _head(item: Item | None) -> Head:
    if item is None:
        return Head(None)
    lease = (get_opt_s(item, "lease_id"), get_opt_f(item, "lease_until"))
    return Head(get_i(item, "version"), get_s(item, DUE_ATTRIBUTE), *lease, get_opt_f(item, PAUSE_ATTRIBUTE))


class DynamoOutboxHeads(DynamoBase):
    """The outbox's pointers, heads and marks: their reads, the actions that write them, and the claim of one
    wallet's earliest item."""

    # -- actions --------------------------------------------------------------------------------------------
    def _mark_action(self, wallet_id: str, key: str) -> Any:
        """The enqueue's unconditional write of the wallet's newcomer mark (see the module docstring)."""
        return {
            "Update": {
                "TableName": self._table,
                "Key": wallet_key(wallet_id, NEW),
                "UpdateExpression": "SET #due = if_not_exists(#due, :k), wallet_id = :w ADD version :one",
                "ExpressionAttributeNames": {"#due": DUE_ATTRIBUTE},
                "ExpressionAttributeValues": {":k": s(key), ":w": s(wallet_id), ":one": n(1)},
            }
        }

    def _head_action(
        self, wallet_id: str, read: Head, first: str | None, lease: tuple[str, float] | None, paused: float | None
    ) -> Any:
        """Write the head as due at ``first`` (the earliest item's key; None: the wallet has no pending item, the
        head goes) held back to ``paused`` (the end of the wallet's pause; None: none), with ``lease``, only if it is
        still as ``read``; None if that changes nothing."""
        if read.version is None and first is None:
            return None
        due = None if first is None else held(first, paused)
        kept = None if read.lease_id is None else (read.lease_id, read.lease_until)
        if (due, lease, paused) == (read.due, kept, read.paused_until):
            return None
        condition: dict[str, Any] = (
            {"ConditionExpression": "attribute_not_exists(pk)"}
            if read.version is None
            else {"ConditionExpression": "version = :v", "ExpressionAttributeValues": {":v": n(read.version)}}
        )
        key = wallet_key(wallet_id, HEAD)
        if due is None:
            return {"Delete": {"TableName": self._table, "Key": key, **condition}}
        item = {**key, "wallet_id": s(wallet_id), DUE_ATTRIBUTE: s(due), "version": n((read.version or 0) + 1)}
        if lease is not None:
            item.update(lease_id=s(lease[0]), lease_until=n(lease[1]))
        if paused is not None:
            item[PAUSE_ATTRIBUTE] = n(paused)
        return {"Put": {"TableName": self._table, "Item": item, **condition}}

    def _unmark_action(self, wallet_id: str, mark: Item) -> Any:
        """Delete the wallet's newcomer mark, only if no enqueue has written it since it was read."""
        return {
            "Delete": {
                "TableName": self._table,
                "Key": wallet_key(wallet_id, NEW),
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": mark["version"]},
            }
        }

    # -- reads ----------------------------------------------------------------------------------------------
    def _due_entries(self, now: float, first_page: int) -> Iterator[Item]:
        """The heads and marks due at ``now`` as the index holds them, in due order, read page by page."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": OUTBOX_DUE_INDEX,
            "KeyConditionExpression": "pk = :pk AND #due < :bound",
            "ExpressionAttributeNames": {"#due": DUE_ATTRIBUTE},
            "ExpressionAttributeValues": {":pk": s(WALLETS_PK), ":bound": s(due_bound(now))},
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

    def _wallet_heads(self, wallet_id: str) -> tuple[Head, Item | None]:
        """The wallet's head and newcomer mark, read consistently (one query)."""
        items = {get_s(i, "sk").rpartition("#")[2]: i for i in self._query(WALLETS_PK, prefix=f"{wallet_id}#")}
        return _head(items.get(HEAD)), items.get(NEW)

    def _first_pointers(self, wallet_id: str, count: int) -> list[Item]:
        """The pointers to the wallet's first ``count`` pending items, in due order (consistent)."""
        return self._query(f"W#{wallet_id}", prefix=POINTER_PREFIX, limit=count)

    # -- claims -------------------------------------------------------------------------------------------------
    def _claim(self, now: float, lease_seconds: float, limit: int, skip: frozenset[str]) -> list[OutboxItem]:
        """`Store.claim_webhooks`, its arguments checked: the wallets the index shows due, in due order, each tried
        once (`_claim_wallet`). A store failure after some items were leased hands those over (else they would sit
        leased, unsent, until their lease ends)."""
        claimed: list[OutboxItem] = []
        seen = set(skip)  # wallets skipped, claimed, found in flight, or tried in this claim: one try each
        try:
            for entry in self._due_entries(now, limit):
                wallet_id = get_s(entry, "wallet_id")
                if wallet_id in seen:
                    continue
                seen.add(wallet_id)
                if "lease_until" in entry and get_f(entry, "lease_until") > now:
                    continue  # a head in flight as the index saw it (its condition would refuse the claim too)
                item = self._claim_wallet(wallet_id, now, now + lease_seconds)
                if item is not None:
                    claimed.append(item)
                    if len(claimed) == limit:
                        break
        except StoreUnavailable:
            if not claimed:
                raise
        return claimed

    def _claim_wallet(self, wallet_id: str, now: float, until: float) -> OutboxItem | None:
        """Lease the wallet's earliest pending item if it is due and the wallet has nothing in flight, and fold its
        newcomer mark into its head; None if there is nothing to lease (or another claim or write got there first:
        a later claim tries again)."""
        head, mark = self._wallet_heads(wallet_id)
        if head.leased_at(now):
            return None
        pointers = self._first_pointers(wallet_id, 1)
        pointer = pointers[0] if pointers else None
        first = None if pointer is None else pointer_due(pointer)
        if pointer is None or get_f(pointer, "next_attempt_at") > now or head.paused_at(now):
            self._fold(wallet_id, head, mark, first)
            return None
        event_id = get_s(pointer, "event_id")
        stored = self._get(OUTBOX_PK, event_id)
        if stored is None or get_f(stored, "next_attempt_at") != get_f(pointer, "next_attempt_at"):
            self._drop_pointer(pointer)
            return None
        item = parse_outbox(stored, event_id)
        lease_id = new_write_id()
        lease = self._head_action(wallet_id, head, first, (lease_id, until), None)  # a pause reached is over
        actions = [self._take_action(item, lease_id, now, until), lease]
        try:
            try:
                self._transact([*actions, *([] if mark is None else [self._unmark_action(wallet_id, mark)])])
            except ConditionFailed as exc:
                if mark is None or CONDITION_FAILED in exc.reasons[:2]:
                    raise
                self._transact(actions)  # only the mark moved (an enqueue): it stays, for the item it covers
        except ConditionFailed:
            return None
        return replace(item, attempts=item.attempts + 1, lease_id=lease_id, lease_until=until)

    def _take_action(self, item: OutboxItem, lease_id: str, now: float, until: float) -> Any:
        """Lease ``item`` (as read), only if its attempts and due time are still those read and it has no live lease
        (one leased by a build before heads carries its lease on the item alone)."""
        return {
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

    def _fold(self, wallet_id: str, head: Head, mark: Item | None, first: str | None) -> None:
        """Nothing of the wallet is due (or it is paused): its head becomes due at ``first`` (its earliest item;
        None: it has none), held back by its pause, and its newcomer mark goes, each only if unchanged since read. A
        refusal leaves both to a later claim."""
        kept = None if head.lease_id is None else (head.lease_id, head.lease_until or 0.0)
        action = self._head_action(wallet_id, head, first, kept, head.paused_until)
        actions = [a for a in (action, None if mark is None else self._unmark_action(wallet_id, mark)) if a]
        if actions:
            with contextlib.suppress(ConditionFailed):
                self._transact(actions)

    def _drop_pointer(self, pointer: Item) -> None:
        """Delete a pointer whose item is no longer pending at the pointer's due time (only if that still holds)."""
        gone = {
            "ConditionCheck": {
                "TableName": self._table,
                "Key": {"pk": s(OUTBOX_PK), "sk": pointer["event_id"]},
                "ConditionExpression": "attribute_not_exists(pk) OR next_attempt_at <> :n",
                "ExpressionAttributeValues": {":n": pointer["next_attempt_at"]},
            }
        }
        drop = {"Delete": {"TableName": self._table, "Key": {"pk": pointer["pk"], "sk": pointer["sk"]}}}
        with contextlib.suppress(ConditionFailed):
            self._transact([gone, drop])
