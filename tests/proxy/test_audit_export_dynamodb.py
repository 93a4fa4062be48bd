"""``waiaas audit export`` and ``waiaas audit verify --state dynamodb:...`` on the cloud deployment's log: the state
table's audit partition (moto's DynamoDB), the exports in a data bucket with object lock (moto's S3).

Before: ``waiaas audit verify`` read only a SQLite file, so the cloud log could not be verified at all, and nothing
exported it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parent_proxy.audit import AuditLog, iter_audit_records, record_hash
from parent_proxy.clock import SystemClock
from parent_proxy.store.dynamodb import DynamoStore, create_table
from parent_proxy.store.model import AuditRecord
from policies.cli import main
from tests.proxy.locked_bucket import BUCKET, REGION, body, keys, locked_bucket

TABLE = "waiaas-state"
STATE = f"dynamodb:{TABLE}@{REGION}"


@pytest.fixture
def cloud(aws_env: None) -> Iterator[tuple[DynamoStore, Any, Any]]:
    """A state table holding a short log, the data bucket, and the DynamoDB and S3 clients."""
    import boto3

    with locked_bucket() as s3:
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_table(dynamodb, TABLE)
        store = DynamoStore(dynamodb, TABLE)
        log = AuditLog(store, SystemClock())
        for i in range(5):
            log.append("test.event", {"n": i, "text": "é"}, wallet_id="w1" if i % 2 else None)
        yield store, dynamodb, s3


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _download(s3: Any, directory: Path) -> Path:
    directory.mkdir()
    for key in keys(s3, "audit/"):
        (directory / key.removeprefix("audit/")).write_bytes(body(s3, key))
    return directory


def _put_record(dynamodb: Any, store: DynamoStore, record: AuditRecord) -> None:
    """Overwrite the item of ``record`` as a parent with the table's write access can (no condition)."""
    (_, put) = store._audit_actions(record, "rewritten")
    dynamodb.put_item(TableName=TABLE, Item=put["Put"]["Item"])


def test_the_cloud_log_is_exported_and_verified_against_its_exports(
    cloud: tuple[DynamoStore, Any, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store, dynamodb, s3 = cloud
    records = list(iter_audit_records(store))
    code, out, err = run(capsys, "audit", "export", "--state", STATE, "--bucket", f"{BUCKET}@{REGION}")
    assert code == 0 and f"records 1-5, head {records[-1].hash.hex()}" in out, err
    exports = _download(s3, tmp_path / "exports")
    code, out, err = run(capsys, "audit", "verify", "--state", STATE, "--exports", str(exports))
    assert code == 0 and "OK: 5 records" in out and "exports OK: 1 exports agree with the log up to seq 5" in out, err

    # The table rewritten from seq 3 on, re-chained and the head moved: the chain verifies, the exports do not.
    prev = records[1].hash
    for record in records[2:]:
        changed = dataclasses.replace(record, event_type="test.forged", prev_hash=prev, hash=b"")
        prev = record_hash(changed)
        _put_record(dynamodb, store, dataclasses.replace(changed, hash=prev))
    assert run(capsys, "audit", "verify", "--state", STATE)[0] == 0
    code, _, err = run(capsys, "audit", "verify", "--state", STATE, "--exports", str(exports))
    assert code == 1 and "audit chain broken at seq 3: the log's record is not the one export" in err, err
    code, _, err = run(capsys, "audit", "export", "--state", STATE, "--bucket", f"{BUCKET}@{REGION}")
    assert code == 1 and "the history was rewritten after it was exported" in err, err


def test_an_audit_item_of_the_wrong_shape_fails_without_a_traceback(
    cloud: tuple[DynamoStore, Any, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    store, dynamodb, _ = cloud
    (_, put) = store._audit_actions(list(iter_audit_records(store))[2], "x")
    item = dict(put["Put"]["Item"])
    del item["hash"]
    dynamodb.put_item(TableName=TABLE, Item=item)
    code, _, err = run(capsys, "audit", "verify", "--state", STATE)
    assert code == 1 and "FAILED: audit chain broken at seq 1: an audit item after seq 0 has the wrong shape" in err


def test_items_out_of_order_fail_rather_than_loop(
    cloud: tuple[DynamoStore, Any, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An item whose seq is below its place in the partition: a reader paging by seq would read the same page for
    ever."""
    from parent_proxy import audit_source

    store, dynamodb, _ = cloud
    monkeypatch.setattr(audit_source, "PAGE_RECORDS", 2)
    second = list(iter_audit_records(store))[1]
    (_, put) = store._audit_actions(second, "x")
    # Seq 2 stored where seq 4 belongs: pages of two from seq 2 on are (3, 2), and "after 2" again (3, 2) ...
    item = {**put["Put"]["Item"], "sk": {"S": f"R#{4:020d}"}}
    dynamodb.put_item(TableName=TABLE, Item=item)
    code, _, err = run(capsys, "audit", "verify", "--state", STATE)
    assert code == 1 and "out of order" in err, err


def test_a_table_that_cannot_be_read_is_unreadable(aws_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    with locked_bucket():
        code, _, err = run(capsys, "audit", "verify", "--state", f"dynamodb:absent-table@{REGION}")
    assert code == 2 and "the audit log of table absent-table cannot be read" in err, err
    code, _, err = run(capsys, "audit", "verify", "--state", "postgres:somewhere")
    assert code == 2 and "--state must be dynamodb:<table>[@<region>] or sqlite:/absolute/path" in err, err
