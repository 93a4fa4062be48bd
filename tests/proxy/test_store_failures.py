"""An unreachable or broken backend raises StoreUnavailable (the API maps it to 503), chained to the cause."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from botocore.config import Config

from parent_proxy.errors import InvalidInput, StoreUnavailable
from parent_proxy.store.sqlite import SqliteStore
from tests.proxy.conftest import make_wallet


def test_sqlite_unopenable_path(tmp_path: Path) -> None:
    # The writer lock file beside the database is opened first (`sqlite_writer_lock`): its error names it.
    with pytest.raises(StoreUnavailable, match="unavailable: cannot open its writer lock: No such") as info:
        SqliteStore(tmp_path / "missing-dir" / "state.db")
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert not (tmp_path / "missing-dir").exists()
    with pytest.raises(InvalidInput, match="path: must be a file path"):
        SqliteStore(":memory:")


def test_sqlite_locked_past_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path, busy_timeout=0.05)
    store.create_wallet(make_wallet("w1"))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with pytest.raises(StoreUnavailable, match="database is locked"):
            store.reserve("w1", "r1", {"SOL": 1}, {("SOL", 60): 10}, 1.0)
    finally:
        blocker.rollback()
        blocker.close()
    store.reserve("w1", "r1", {"SOL": 1}, {("SOL", 60): 10}, 1.0)  # nothing was recorded before
    store.close()


def test_sqlite_unknown_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreUnavailable, match="unknown schema version 99"):
        SqliteStore(path)


@pytest.mark.usefixtures("aws_env")
def test_dynamodb_unreachable_endpoint() -> None:
    import boto3

    from parent_proxy.store.dynamodb import DynamoStore

    client = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        config=Config(retries={"max_attempts": 1}, connect_timeout=0.5, read_timeout=0.5),
    )
    store = DynamoStore(client, "waiaas")
    with pytest.raises(StoreUnavailable, match="dynamodb store unavailable: EndpointConnectionError"):
        store.get_wallet("w1")
    store.close()


@pytest.mark.usefixtures("aws_env")
def test_dynamodb_missing_table() -> None:
    import boto3
    from moto import mock_aws

    from parent_proxy.store.dynamodb import DynamoStore

    with mock_aws():
        store = DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), "no-such-table")
        with pytest.raises(StoreUnavailable, match="ResourceNotFoundException"):
            store.create_wallet(make_wallet("w1"))
