"""DynamoDB idempotency records (`dynamodb_idempotency`), tests found missing by mutation testing: the table's TTL
attribute of a claim lets DynamoDB delete the record only once it can no longer hold its key; a key given up between
a refused claim and its read is still reported in progress (`begin_idempotent`'s claim, and `begin_signing`'s)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from parent_proxy.errors import IdempotencyInProgress
from parent_proxy.store.dynamodb_base import TTL_ATTRIBUTE
from parent_proxy.store.validation import IDEMPOTENCY_RETENTION_SECONDS
from tests.proxy.conftest import make_wallet, moto_dynamo_store
from tests.proxy.hooked_client import Hook, Hooked

T0 = 1_700_000_000.0
H1 = hashlib.sha256(b"request one").digest()


@pytest.fixture
def dynamo(aws_env: None) -> Iterator[tuple[Any, Hooked]]:
    with moto_dynamo_store(Hooked) as (store, client):
        store.create_wallet(make_wallet("w1"))
        yield store, client


def raw_record(client: Any, key: str) -> dict[str, Any]:
    item: dict[str, Any] = client.get_item(TableName="waiaas-test", Key={"pk": {"S": "W#w1"}, "sk": {"S": f"I#{key}"}})[
        "Item"
    ]
    return item


@pytest.mark.parametrize("now", [T0, T0 + 0.75], ids=["whole", "fractional"])
def test_a_claim_expires_from_the_table_the_first_whole_second_after_its_retention(
    dynamo: tuple[Any, Hooked], now: float
) -> None:
    """DynamoDB may delete an item once its ``expires_at`` has passed: a completed record holds its key (and replays
    its answer) for `IDEMPOTENCY_RETENTION_SECONDS`, so the TTL must not fall before that, nor later than the first
    whole second after it (the table would keep dead records)."""
    store, client = dynamo
    assert store.begin_idempotent("w1", "k1", H1, now) is None
    store.complete_idempotent("w1", "k1", H1, b"answer")
    ttl = float(raw_record(client, "k1")[TTL_ATTRIBUTE]["N"])
    assert now + IDEMPOTENCY_RETENTION_SECONDS < ttl <= now + IDEMPOTENCY_RETENTION_SECONDS + 1
    assert ttl == int(ttl)


def test_a_key_given_up_between_a_refused_claim_and_its_read_is_in_progress(dynamo: tuple[Any, Hooked]) -> None:
    """The claim's conditional put is refused (the first request holds the key), then the first request gives the
    key up before the refused claim reads the record: the second request has no claim, so it is told the key is in
    progress (its client retries), never handed the key as if it had claimed it."""
    store, client = dynamo
    assert store.begin_idempotent("w1", "k1", H1, T0) is None

    def put_item(real: Hook, **kwargs: Any) -> Any:
        try:
            return real(**kwargs)
        finally:
            store.abandon_idempotent("w1", "k1", H1)

    client.hooks["put_item"] = put_item
    with pytest.raises(IdempotencyInProgress, match="idempotency key 'k1': the first request has not completed"):
        store.begin_idempotent("w1", "k1", H1, T0 + 1)
    del client.hooks["put_item"]
    assert store.lookup_idempotent("w1", "k1", H1, T0 + 1) is None  # free: the refused claim wrote nothing


def test_a_signing_whose_claim_lost_to_a_request_that_then_gave_up_is_in_progress(dynamo: tuple[Any, Hooked]) -> None:
    """`begin_signing` read the key free; a rival request claimed it before this one's transaction, whose claim then
    failed; the rival gave the key up before this one read it again. As for `begin_idempotent` (above): this request
    holds no claim, so it is told the key is in progress, with nothing written, never handed the key."""
    store, client = dynamo

    def get_item(real: Hook, **kwargs: Any) -> Any:
        found = real(**kwargs)
        if kwargs["Key"]["sk"]["S"] == "I#k1":  # this request's read: free; the rival claims now
            del client.hooks["get_item"]
            assert store.begin_idempotent("w1", "k1", H1, T0) is None
        return found

    def transact_write_items(real: Hook, **kwargs: Any) -> Any:
        try:
            return real(**kwargs)  # refused: the rival holds the key
        finally:
            del client.hooks["transact_write_items"]
            store.abandon_idempotent("w1", "k1", H1)

    client.hooks.update(get_item=get_item, transact_write_items=transact_write_items)
    with pytest.raises(IdempotencyInProgress, match="idempotency key 'k1': the first request has not completed"):
        store.begin_signing("w1", "k1", H1, request_id="r1", amounts={}, limits={}, now=T0)
    assert client.hooks == {}  # both hooks ran
    assert store.lookup_idempotent("w1", "k1", H1, T0) is None  # free: nothing of this request was written
    assert store.count_requests("w1", 0.0) == 0
