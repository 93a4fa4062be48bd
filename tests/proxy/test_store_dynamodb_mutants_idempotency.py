"""DynamoDB idempotency records (`dynamodb_idempotency`), tests found missing by mutation testing: the table's TTL
attribute of a claim lets DynamoDB delete the record only once it can no longer hold its key."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from parent_proxy.store.dynamodb_base import TTL_ATTRIBUTE
from parent_proxy.store.validation import IDEMPOTENCY_RETENTION_SECONDS
from tests.proxy.conftest import make_wallet, moto_dynamo_store

T0 = 1_700_000_000.0
H1 = hashlib.sha256(b"request one").digest()


@pytest.fixture
def dynamo(aws_env: None) -> Iterator[tuple[Any, Any]]:
    with moto_dynamo_store(lambda client: client) as (store, client):
        store.create_wallet(make_wallet("w1"))
        yield store, client


def raw_record(client: Any, key: str) -> dict[str, Any]:
    item: dict[str, Any] = client.get_item(TableName="waiaas-test", Key={"pk": {"S": "W#w1"}, "sk": {"S": f"I#{key}"}})[
        "Item"
    ]
    return item


@pytest.mark.parametrize("now", [T0, T0 + 0.75], ids=["whole", "fractional"])
def test_a_claim_expires_from_the_table_the_first_whole_second_after_its_retention(
    dynamo: tuple[Any, Any], now: float
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
