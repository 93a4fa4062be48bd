"""DynamoDB-only store behaviour: a limit check reads the reservations of its window only (they are keyed by time),
not every reservation the table still holds for the wallet (up to a month of them before the TTL removes them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from parent_proxy.store.dynamodb_base import TTL_ATTRIBUTE
from parent_proxy.store.model import ReservationStatus
from parent_proxy.store.validation import MAX_WINDOW_SECONDS
from tests.proxy.conftest import make_wallet, moto_dynamo_store
from tests.proxy.hooked_client import CountingClient

T0 = 1_700_000_000.0
HOUR = 3600
DAY = 86_400


@pytest.fixture
def dynamo(aws_env: None) -> Iterator[tuple[Any, CountingClient]]:
    with moto_dynamo_store(CountingClient) as (store, client):
        store.create_wallet(make_wallet("w1"))
        yield store, client


def test_a_limit_check_reads_only_its_window(dynamo: tuple[Any, CountingClient]) -> None:
    store, client = dynamo
    for i in range(60):  # one reservation an hour for 60 hours, most committed, some released
        reservation = store.reserve("w1", f"r{i}", {"SOL": 10}, {}, T0 + i * HOUR)
        (store.release if i % 5 == 0 else store.commit)(reservation)
    now = T0 + 59 * HOUR + 1
    client.items_read = 0
    store.reserve("w1", "hourly", {"SOL": 1}, {("SOL", HOUR): 1_000}, now)
    assert client.items_read == 1  # r59 only (r58 is exactly one hour and one second old)
    client.items_read = 0
    assert store.spent_in_window("w1", "SOL", DAY, now) == 10 * sum(1 for i in range(36, 60) if i % 5) + 1
    assert client.items_read == 25  # the day's 24 reservations and the new one; not the other 36
    assert store.reservation_status("w1", "r0") == ReservationStatus.RELEASED  # found by id through its pointer


def test_reservations_and_request_times_outlive_the_longest_window(dynamo: tuple[Any, CountingClient]) -> None:
    """The table's TTL may delete an item as soon as its ``expires_at`` has passed: a reservation, its pointer and a
    request or denial time must outlive the longest window a limit can have (`MAX_WINDOW_SECONDS`), else a live
    reservation could vanish and the cap forget it. At a fractional time too (``int(now)`` rounds down)."""
    store, client = dynamo
    now = T0 + 0.75
    store.reserve("w1", "r1", {"SOL": 1}, {("SOL", DAY): 10}, now)
    store.record_request("w1", now)
    store.record_denial("w1", now)
    items = client.inner.query(
        TableName="waiaas-test",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "W#w1"}},
    )["Items"]
    ttls = {kind(i["sk"]["S"]): float(i[TTL_ATTRIBUTE]["N"]) for i in items if "#" in i["sk"]["S"]}
    assert sorted(ttls) == ["E#denial", "E#request", "R", "RT"]
    assert all(ttl > now + MAX_WINDOW_SECONDS for ttl in ttls.values()), ttls


def kind(sk: str) -> str:
    """``RT#<time>#<id>`` -> ``RT``, ``R#<id>`` -> ``R``, ``E#request#<time>#<nonce>`` -> ``E#request``."""
    parts = sk.split("#")
    return "#".join(parts[:2]) if parts[0] == "E" else parts[0]
