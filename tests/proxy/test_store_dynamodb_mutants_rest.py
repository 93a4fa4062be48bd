"""DynamoDB adapter details (`dynamodb`, `dynamodb_owner_changes`, `dynamodb_message_marks`, `dynamodb_base`), tests
found missing by mutation testing: a token item keeps its creation time; a new approval whose message mark keeps
going stale is sent three times, then refused as the store being unavailable; every read is strongly consistent;
any 5xx answer leaves a transaction's outcome unknown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from parent_proxy.errors import StoreUnavailable
from parent_proxy.store.dynamodb_base import unanswered
from parent_proxy.store.dynamodb_message_marks import StaleMark, mark_attempts
from tests.proxy.conftest import make_wallet, moto_dynamo_store
from tests.proxy.hooked_client import Hook, Hooked

T0 = 1_700_000_000.0


@pytest.fixture
def dynamo(aws_env: None) -> Iterator[tuple[Any, Hooked]]:
    with moto_dynamo_store(Hooked) as (store, client):
        store.create_wallet(make_wallet("w1"))
        yield store, client


def test_a_token_item_keeps_its_wallet_and_creation_time(dynamo: tuple[Any, Hooked]) -> None:
    store, client = dynamo
    issued = store.issue_token("w1", T0 + 0.5)
    item = client.get_item(TableName="waiaas-test", Key={"pk": {"S": f"T#{issued.token_id}"}, "sk": {"S": "TOKEN"}})
    assert (item["Item"]["wallet_id"], item["Item"]["created_at"]) == ({"S": "w1"}, {"N": "1700000000.5"})


def stale_until(attempt: int) -> tuple[list[dict[str, str | None]], Any]:
    """A new approval's write whose mark is stale (naming ``a<n>``, its n-th attempt) before attempt ``attempt``."""
    seen: list[dict[str, str | None]] = []

    def write(replacing: dict[str, str | None]) -> str:
        seen.append(dict(replacing))
        if len(seen) < attempt:
            raise StaleMark("new", f"a{len(seen)}")
        return "written"

    return seen, write


def test_a_mark_stale_twice_is_replaced_on_the_third_attempt() -> None:
    seen, write = stale_until(3)
    assert mark_attempts(write) == "written"
    assert seen == [{}, {"new": "a1"}, {"new": "a2"}]  # each attempt replaces the holder the one before read


def test_a_mark_stale_three_times_is_unavailable() -> None:
    seen, write = stale_until(4)
    with pytest.raises(StoreUnavailable, match=r"the mark of this message kept changing; nothing was written$"):
        mark_attempts(write)
    assert len(seen) == 3


def test_every_read_is_strongly_consistent(dynamo: tuple[Any, Hooked]) -> None:
    """An eventually consistent read may miss a write just made (a limit check would undercount its window)."""
    store, client = dynamo
    reads: list[tuple[str, Any]] = []

    def recorded(name: str) -> Hook:
        def hook(real: Hook, **kwargs: Any) -> Any:
            reads.append((name, kwargs.get("ConsistentRead")))
            return real(**kwargs)

        return hook

    client.hooks.update(get_item=recorded("get_item"), query=recorded("query"))
    store.get_wallet("w1")
    store.retired_agent_keys("w1")
    assert {name for name, _ in reads} == {"get_item", "query"}
    assert all(consistent is True for _, consistent in reads)


@pytest.mark.parametrize(("status", "unknown"), [(500, True), (499, False)])
def test_any_5xx_answer_leaves_a_transaction_unknown(status: int, unknown: bool) -> None:
    error = ClientError(
        {
            "Error": {"Code": "Unlisted"},
            "ResponseMetadata": {
                "RequestId": "",
                "HostId": "",
                "HTTPStatusCode": status,
                "HTTPHeaders": {},
                "RetryAttempts": 0,
            },
        },
        "TransactWriteItems",
    )
    assert unanswered(error) is unknown
