"""Moto under concurrent writers: without `tests.fakes.moto_serial` a transaction's table copy races the writers."""

import sys
import threading
import time
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.usefixtures("aws_credentials")


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads every 10 microseconds, so the race shows within a second instead of once per CI run."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def test_transactions_and_puts_from_several_threads_all_succeed(frequent_thread_switches: None) -> None:
    import boto3
    from moto import mock_aws

    import tests.fakes.moto_serial  # noqa: F401  (the root conftest imports it too)

    errors: list[str] = []
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        for k in range(1500):  # a table big enough that copying it spans many thread switches
            client.put_item(TableName="t", Item={"pk": {"S": f"pre-{k}"}})
        deadline = time.monotonic() + 1.5
        written = [0, 0, 0, 0]

        def put(lane: int) -> None:
            while time.monotonic() < deadline and not errors:
                try:
                    client.put_item(TableName="t", Item={"pk": {"S": f"{lane}-{written[lane]}"}})
                except Exception as error:  # any failure is the finding
                    errors.append(repr(error))
                written[lane] += 1

        def transact() -> None:
            while time.monotonic() < deadline and not errors:
                item = {"pk": {"S": f"tx-{written[3]}"}}
                try:
                    client.transact_write_items(TransactItems=[{"Put": {"TableName": "t", "Item": item}}])
                except Exception as error:
                    errors.append(repr(error))
                written[3] += 1

        threads = [threading.Thread(target=put, args=(lane,)) for lane in range(3)]
        threads.append(threading.Thread(target=transact))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        count = client.scan(TableName="t", Select="COUNT")["Count"]
    assert errors == []
    assert written[3] > 0 and min(written[:3]) > 0
    assert count == 1500 + sum(written)
