"""DynamoDB outbox (`dynamodb_outbox`, `dynamodb_outbox_heads`), tests found missing by mutation testing: a finish
that lost its lease keeps the lease another claim put on the wallet's head since; a claim whose transaction is
refused for its item or head leases nothing, hands nothing over and is not sent again; a finish refused only for the
wallet's head is sent again from fresh reads, and is unavailable when the head keeps moving; a pointer left at
another time of its still pending item is dropped; a paused wallet leaves the index until its pause ends; a
rescheduled item's cleared lease is a NULL DynamoDB accepts; a fold that changes nothing of the head does not
write it; the items' keys are those of the layout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from parent_proxy.errors import StoreUnavailable
from parent_proxy.store.dynamodb import DynamoStore
from parent_proxy.store.dynamodb_base import OUTBOX_DUE_INDEX
from parent_proxy.store.dynamodb_outbox import FINISH_ATTEMPTS
from parent_proxy.store.dynamodb_outbox_heads import pointer_item
from parent_proxy.store.model import OutboxItem, OutboxStatus
from parent_proxy.store.sqlite_time import time_key
from parent_proxy.store.validation_outbox import WALLET_PAUSE_CAP_SECONDS
from tests.proxy.conftest import make_wallet, moto_dynamo_store
from tests.proxy.hooked_client import Hook, Hooked

T0 = 1_700_000_000.0
LEASE = 30.0
TABLE = "waiaas-test"


def item(event_id: str, due: float) -> OutboxItem:
    return OutboxItem(event_id, "w1", "decision", b'{"x":1}', created_at=T0 - 100, next_attempt_at=due)


@pytest.fixture
def hooked(aws_env: None) -> Iterator[tuple[Any, Hooked]]:
    with moto_dynamo_store(Hooked) as (store, client):
        store.create_wallet(make_wallet("w1"))
        assert store.claim_webhooks(T0 - 1000, LEASE, 10) == []  # the store's first claim (the one-off layout move)
        yield store, client


def head_refused(times: int) -> tuple[Hook, list[int]]:
    """A transact_write_items hook: the first ``times`` sends are cancelled for their last action alone (a finish's
    head, moved by another claim or finish of the wallet), the rest go through. Returns the hook and its sends."""
    sends: list[int] = []

    def hook(real: Hook, **kwargs: Any) -> Any:
        count = len(kwargs["TransactItems"])
        sends.append(count)
        if len(sends) > times:
            return real(**kwargs)
        codes = ["None"] * (count - 1) + ["ConditionalCheckFailed"]
        raise ClientError(
            {
                "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
                "CancellationReasons": [{"Code": c} for c in codes],
            },
            "TransactWriteItems",
        )

    return hook, sends


def test_a_late_finish_keeps_the_lease_of_the_claim_in_flight(hooked: tuple[Any, Hooked]) -> None:
    """A worker fails its item after its lease ended (nobody took that item again, so the finish stands) while
    another claim of the wallet has an earlier item in flight: the finish writes the head (the wallet's pause) but
    keeps that claim's lease on it, so an item enqueued since, due earlier still, waits for that delivery after the
    pause as well (one delivery in flight per wallet)."""
    store, client = hooked
    other = DynamoStore(client.inner, TABLE)
    store.enqueue_webhook(item("a0", T0))
    [late] = store.claim_webhooks(T0, LEASE, 10)  # its worker stalls past its lease
    store.enqueue_webhook(item("a_early", T0 - 5))
    [current] = other.claim_webhooks(T0 + 31, 1000.0, 10)  # in flight until T0 + 1031
    failed = T0 + 32
    store.mark_failed("a0", late.lease_id or "", now=failed, error="x", status_code=500, next_attempt_at=failed + 3600)
    assert (current.event_id, store.get_outbox_item("a0").attempts) == ("a_early", 1)
    store.enqueue_webhook(item("a_earlier", T0 - 10))  # its pointer is now the wallet's first
    assert store.claim_webhooks(failed + WALLET_PAUSE_CAP_SECONDS, LEASE, 10) == []  # a_early is in flight
    other.mark_delivered("a_early", current.lease_id or "", now=T0 + 100, status_code=200)
    assert [c.event_id for c in store.claim_webhooks(T0 + 100, LEASE, 10)] == ["a_earlier"]


@pytest.mark.parametrize("earlier", [False, True], ids=["the-same-item", "an-earlier-item"])
def test_a_claim_refused_for_its_item_or_head_leases_nothing_and_is_not_sent_again(
    hooked: tuple[Any, Hooked], earlier: bool
) -> None:
    """Another worker takes the item, or an item of the wallet enqueued since (due earlier), between this claim's
    reads and its transaction: the transaction is refused for the item or the wallet's head (not for the newcomer
    mark alone), so the claim hands nothing over and does not send it again without the mark."""
    store, client = hooked
    other = DynamoStore(client.inner, TABLE)
    store.enqueue_webhook(item("a0", T0))
    taken: list[OutboxItem] = []
    sends: list[int] = []

    def the_other_worker_first(real: Hook, **kwargs: Any) -> Any:
        sends.append(len(kwargs["TransactItems"]))
        if not taken:
            if earlier:
                other.enqueue_webhook(item("a_early", T0 - 5))
            taken.extend(other.claim_webhooks(T0, LEASE, 10))
        return real(**kwargs)

    client.hooks["transact_write_items"] = the_other_worker_first
    assert store.claim_webhooks(T0, LEASE, 10) == []
    del client.hooks["transact_write_items"]
    assert (sends, [c.event_id for c in taken]) == ([3], ["a_early" if earlier else "a0"])  # lease, head and mark
    if earlier:
        assert store.get_outbox_item("a0") == item("a0", T0)


def test_a_finish_refused_for_the_head_alone_is_sent_again(hooked: tuple[Any, Hooked]) -> None:
    store, client = hooked
    store.enqueue_webhook(item("a0", T0))
    [a0] = store.claim_webhooks(T0, LEASE, 10)
    client.hooks["transact_write_items"], sends = head_refused(times=1)
    store.mark_delivered("a0", a0.lease_id or "", now=T0 + 1, status_code=200)
    assert len(sends) == 2
    assert store.get_outbox_item("a0").status == OutboxStatus.DELIVERED


def test_a_finish_whose_head_keeps_moving_is_unavailable_and_writes_nothing(hooked: tuple[Any, Hooked]) -> None:
    store, client = hooked
    store.enqueue_webhook(item("a0", T0))
    [a0] = store.claim_webhooks(T0, LEASE, 10)
    client.hooks["transact_write_items"], sends = head_refused(times=1000)
    with pytest.raises(StoreUnavailable, match="outbox item a0: the wallet's head kept moving"):
        store.mark_delivered("a0", a0.lease_id or "", now=T0 + 1, status_code=200)
    assert len(sends) == FINISH_ATTEMPTS
    del client.hooks["transact_write_items"]
    assert store.get_outbox_item("a0") == a0
    assert store.delivery_log("a0") == []


def test_a_pointer_left_at_another_time_of_its_pending_item_is_dropped(hooked: tuple[Any, Hooked]) -> None:
    """A pointer whose item is still pending, but due at another time (rescheduled while the one-off move of older
    items ran), is dropped as one whose item is gone is: else it would head its wallet for ever."""
    store, client = hooked
    store.enqueue_webhook(item("a0", T0))
    stale = pointer_item("w1", "a0", T0 - 5)
    client.inner.put_item(TableName=TABLE, Item=stale)
    assert store.claim_webhooks(T0, LEASE, 10) == []
    assert "Item" not in client.inner.get_item(TableName=TABLE, Key={"pk": stale["pk"], "sk": stale["sk"]})
    assert [c.event_id for c in store.claim_webhooks(T0, LEASE, 10)] == ["a0"]


def test_a_rescheduled_item_stores_its_lease_as_an_enqueued_item_does(hooked: tuple[Any, Hooked]) -> None:
    """As DynamoDB takes them: a NULL attribute is ``{"NULL": True}`` (it refuses ``False``)."""
    store, client = hooked
    store.enqueue_webhook(item("a0", T0))
    key = {"pk": {"S": "OUTBOX"}, "sk": {"S": "a0"}}
    enqueued = client.inner.get_item(TableName=TABLE, Key=key)["Item"]
    [a0] = store.claim_webhooks(T0, LEASE, 10)
    store.mark_failed("a0", a0.lease_id or "", now=T0 + 1, error="x", status_code=500, next_attempt_at=T0 + 60)
    rescheduled = client.inner.get_item(TableName=TABLE, Key=key)["Item"]
    lease = ("lease_id", "lease_until")
    assert [rescheduled[a] for a in lease] == [enqueued[a] for a in lease] == [{"NULL": True}] * 2


def test_a_paused_wallet_is_not_in_the_index_until_its_pause_ends(hooked: tuple[Any, Hooked]) -> None:
    """The head of a wallet paused by a failed attempt is due at the end of the pause, even with items due before it:
    a claim during the pause reads nothing of the wallet (the index shows nothing due), not its head on every claim."""
    store, client = hooked
    store.enqueue_webhook(item("a0", T0))
    store.enqueue_webhook(item("a1", T0 + 1))
    [a0] = store.claim_webhooks(T0, LEASE, 10)
    store.mark_failed("a0", a0.lease_id or "", now=T0 + 2, error="x", status_code=500, next_attempt_at=T0 + 3600)
    assert store.claim_webhooks(T0 + 3, LEASE, 10) == []  # the first claim since the failure folds w1's mark
    requests: list[tuple[str, int]] = []

    def logged(name: str) -> Hook:
        def hook(real: Hook, **kwargs: Any) -> Any:
            answer = real(**kwargs)
            requests.append((kwargs.get("IndexName", name), len(answer.get("Items", [answer.get("Item")]))))
            return answer

        return hook

    client.hooks.update(query=logged("query"), get_item=logged("get_item"))
    assert store.claim_webhooks(T0 + 2 + WALLET_PAUSE_CAP_SECONDS - 1, LEASE, 10) == []
    assert requests == [(OUTBOX_DUE_INDEX, 0)]
    requests.clear()
    assert [c.event_id for c in store.claim_webhooks(T0 + 2 + WALLET_PAUSE_CAP_SECONDS, LEASE, 10)] == ["a1"]
    assert requests[0] == (OUTBOX_DUE_INDEX, 1)


def test_a_fold_that_leaves_the_head_as_it_is_writes_only_the_marks_deletion(hooked: tuple[Any, Hooked]) -> None:
    """An item enqueued after the wallet's head (due later than it, created earlier than now) marks the wallet as due
    at its creation: the claim that reaches it finds nothing due, and deletes the mark without writing the head (a
    write would bump its version, refusing the finishes and claims of the wallet that read it before)."""
    store, client = hooked
    store.enqueue_webhook(item("a0", T0 + 10))
    assert store.claim_webhooks(T0, LEASE, 10) == []  # folds the mark: the head is due at a0
    store.enqueue_webhook(item("a1", T0 + 20))  # created at T0 - 100: its mark is due before a0
    sends: list[int] = []

    def counted(real: Hook, **kwargs: Any) -> Any:
        sends.append(len(kwargs["TransactItems"]))
        return real(**kwargs)

    client.hooks["transact_write_items"] = counted
    assert store.claim_webhooks(T0, LEASE, 10) == []
    assert sends == [1]
    sends.clear()
    assert store.claim_webhooks(T0, LEASE, 10) == []  # the wallet is out of the index until a0 is due
    assert sends == []
    assert [c.event_id for c in store.claim_webhooks(T0 + 10, LEASE, 10)] == ["a0"]


def test_the_outbox_items_are_stored_under_the_keys_of_the_layout(hooked: tuple[Any, Hooked]) -> None:
    """The key layout of `dynamodb_outbox_heads` (tables written by earlier builds are read by later ones): the
    pending item, its pointer, the wallet's newcomer mark, then after a claim the wallet's head with the lease."""
    store, client = hooked
    store.enqueue_webhook(item("a0", T0))
    key = f"{time_key(T0).hex()}#a0"
    keys = {(i["pk"]["S"], i["sk"]["S"]): i for i in client.inner.scan(TableName=TABLE)["Items"]}
    assert keys[("OUTBOX", "a0")]["wallet_id"] == {"S": "w1"}
    assert keys[("W#w1", f"OUTBOX#{key}")]["event_id"] == {"S": "a0"}
    assert keys[("OUTBOX_WALLETS", "w1#NEW")]["due_key"] == {"S": f"{time_key(T0 - 100).hex()}#a0"}  # created
    [a0] = store.claim_webhooks(T0, LEASE, 10)
    keys = {(i["pk"]["S"], i["sk"]["S"]): i for i in client.inner.scan(TableName=TABLE)["Items"]}
    assert ("OUTBOX_WALLETS", "w1#NEW") not in keys
    assert ("LAYOUT", "OUTBOX_HEADS") in keys  # the one-off move of items written before heads is done
    head = keys[("OUTBOX_WALLETS", "w1#HEAD")]
    assert (head["due_key"], head["lease_id"], head["wallet_id"]) == ({"S": key}, {"S": a0.lease_id}, {"S": "w1"})
