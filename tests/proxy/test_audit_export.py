"""``waiaas audit export`` into a data bucket with object lock (moto's S3), and ``waiaas audit verify --exports`` on
what it wrote, over a log the real proxy and enclave wrote (SQLite), rewritten as a hostile parent would.

Before: nothing exported the log, and nothing a parent wrote could be checked against a record of it kept out of the
parent's reach: a log rewritten and re-chained from its start passed ``waiaas audit verify``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parent_proxy import audit_export_cli
from parent_proxy.audit_export_cli import export_new_records
from parent_proxy.audit_exports import decode_export, parse_export_name
from parent_proxy.audit_source import SqliteAuditSource
from parent_proxy.data_bucket import DataBucket, s3_client
from parent_proxy.store.model import GENESIS_PREV_HASH
from policies.cli import main
from tests.proxy.audit_log_rewrites import copy_of, read, real_log, rewrite, with_payload
from tests.proxy.locked_bucket import BUCKET, REGION, body, keys, locked_bucket
from tests.support.audit_export_runs import new_log

BUCKET_ARG = f"{BUCKET}@{REGION}"


@pytest.fixture(scope="module")
def base_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real log (a wallet, 2 signed transfers, 1 signed message), copied for each test."""
    return real_log(tmp_path_factory.mktemp("base"))


@pytest.fixture
def db(base_log: Path, tmp_path: Path) -> Path:
    return copy_of(base_log, tmp_path)


@pytest.fixture
def s3(aws_env: None) -> Iterator[Any]:
    with locked_bucket() as client:
        yield client


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def export(capsys: pytest.CaptureFixture[str], db: Path, *extra: str) -> tuple[int, str, str]:
    return run(capsys, "audit", "export", "--db", str(db), "--bucket", BUCKET_ARG, *extra)


def verify(capsys: pytest.CaptureFixture[str], db: Path, exports: Path, *extra: str) -> tuple[int, str, str]:
    return run(capsys, "audit", "verify", "--db", str(db), "--exports", str(exports), *extra)


def download(s3: Any, directory: Path, prefix: str = "audit/") -> Path:
    """What ``aws s3 cp --recursive s3://<bucket>/audit/ DIR`` leaves: each object as a file named by its key."""
    directory.mkdir(exist_ok=True)
    for key in keys(s3, prefix):
        (directory / key.removeprefix(prefix)).write_bytes(body(s3, key))
    return directory


def exported(s3: Any, prefix: str = "audit/") -> list[tuple[int, int]]:
    names = [parse_export_name(key.removeprefix(prefix)) for key in keys(s3, prefix)]
    return [(n.first_seq, n.last_seq) for n in names if n is not None]


def test_the_first_export_holds_the_log_and_the_next_only_what_was_appended(
    db: Path, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    records = read(db)
    n = len(records)
    code, out, _ = export(capsys, db)
    assert code == 0 and f"records 1-{n}, head {records[-1].hash.hex()}" in out, out
    (key,) = keys(s3, "audit/")
    assert key == f"audit/{1:020d}-{n:020d}-{records[-1].hash.hex()}.jsonl"
    lines = body(s3, key).decode().splitlines()
    assert json.loads(lines[0]) == {"format": "waiaas-audit-export-v1", "first_seq": 1, "last_seq": n, "count": n,
                                    "prev_hash": GENESIS_PREV_HASH.hex(), "head": records[-1].hash.hex()}  # fmt: skip
    assert len(lines) == n + 1 and json.loads(lines[1])["event_type"] == records[0].event_type
    name = parse_export_name(key.removeprefix("audit/"))
    assert name is not None and decode_export(key, name, body(s3, key)).records == tuple(records)

    new_log(db, 2)
    code, out, _ = export(capsys, db)
    assert code == 0 and f"records {n + 1}-{n + 2}" in out, out
    assert exported(s3) == [(1, n), (n + 1, n + 2)]
    second = next(k for k in keys(s3, "audit/") if k != key)
    assert json.loads(body(s3, second).decode().splitlines()[0])["prev_hash"] == records[-1].hash.hex()

    code, out, _ = export(capsys, db)
    assert code == 0 and f"nothing new (the log ends at seq {n + 2}, exported)" in out, out
    assert exported(s3) == [(1, n), (n + 1, n + 2)]


def test_a_long_log_is_exported_in_objects_of_at_most_the_maximum(
    db: Path, s3: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_export_cli, "MAX_RECORDS_PER_EXPORT", 3)
    n = len(read(db))
    assert export(capsys, db)[0] == 0
    ranges = exported(s3)
    assert ranges[0][0] == 1 and ranges[-1][1] == n
    assert all(last - first < 3 for first, last in ranges)
    assert all(ranges[i][1] + 1 == ranges[i + 1][0] for i in range(len(ranges) - 1))
    assert verify(capsys, db, download(s3, db.parent / "exports"))[0] == 0


def _rewritten(db: Path) -> None:
    """The hostile parent's rewrite: one record's payload changed and the whole log re-chained from genesis."""
    records = read(db)
    rewrite(db, [records[0], with_payload(records[1], forged=True), *records[2:]])


def test_the_exporter_refuses_a_history_rewritten_after_its_export(
    db: Path, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export(capsys, db)[0] == 0
    before = keys(s3, "audit/")
    _rewritten(db)
    new_log(db, 1)
    code, _, err = export(capsys, db)
    assert code == 1 and "FAILED" in err and "the history was rewritten after it was exported" in err, err
    assert keys(s3, "audit/") == before  # nothing of the rewritten history was exported


def test_the_exporter_refuses_a_log_cut_short(db: Path, s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert export(capsys, db)[0] == 0
    rewrite(db, read(db)[:-1])
    code, _, err = export(capsys, db)
    assert code == 1 and "the log was cut short" in err, err


def test_verify_with_the_exports_catches_a_rewritten_and_rechained_history(
    db: Path, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    n = len(read(db))
    assert export(capsys, db)[0] == 0
    new_log(db, 2)
    exports = download(s3, db.parent / "exports")
    code, out, _ = verify(capsys, db, exports)
    assert code == 0 and f"exports OK: 1 exports agree with the log up to seq {n}; seqs {n + 1}-{n + 2} not " \
        "exported yet" in out, out  # fmt: skip
    _rewritten(db)
    assert run(capsys, "audit", "verify", "--db", str(db))[0] == 0  # the chain alone cannot tell
    code, _, err = verify(capsys, db, exports)
    assert code == 1, err
    assert "audit chain broken at seq 2: the log's record is not the one export" in err
    assert "(the history was rewritten after it was exported)" in err


def test_verify_with_the_exports_catches_a_log_cut_short(db: Path, s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert export(capsys, db)[0] == 0
    exports = download(s3, db.parent / "exports")
    records = read(db)
    rewrite(db, records[:-2])
    code, _, err = verify(capsys, db, exports)
    assert code == 1 and f"the log ends at seq {len(records) - 2}" in err and "cut short" in err, err


def test_an_export_that_is_not_what_the_exporter_wrote_fails(
    db: Path, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export(capsys, db)[0] == 0
    exports = download(s3, db.parent / "exports")
    (path,) = exports.iterdir()
    lines = path.read_bytes().split(b"\n")
    record = json.loads(lines[2])
    record["event_type"] = "something.else"
    lines[2] = json.dumps(record).encode()
    path.write_bytes(b"\n".join(lines))
    code, _, err = verify(capsys, db, exports)
    assert code == 1 and f"FAILED: export {path.name}: its records do not chain" in err, err


def test_verify_needs_exports_to_check_against(db: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README").write_text("not an export")
    code, _, err = verify(capsys, db, empty)
    assert code == 2 and "no exports in" in err, err
    code, _, err = verify(capsys, db, tmp_path / "absent")
    assert code == 2 and "cannot read the exports directory" in err, err


def test_keys_not_named_as_exports_are_ignored(db: Path, s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    s3.put_object(Bucket=BUCKET, Key="audit/99999999999999999999-notes.jsonl", Body=b"x")
    code, _, err = export(capsys, db)
    assert code == 0 and "1 keys under s3://" in err and "are not named as exports (ignored)" in err, err
    assert exported(s3) == [(1, len(read(db)))]
    exports = download(s3, db.parent / "exports")
    code, _, err = verify(capsys, db, exports)
    assert code == 0 and "1 files not named as exports skipped: 99999999999999999999-notes.jsonl" in err, err


def test_records_another_host_exported_already_count_as_written(db: Path, s3: Any) -> None:
    """Two hosts exporting at once: the second finds the object there (412) and reports it, without error."""

    class Unlisted(DataBucket):
        def keys(self, prefix: str) -> Iterator[str]:
            return iter(())  # as if the other host's export was not listed yet

    bucket = Unlisted(s3_client(REGION), BUCKET)
    assert export_new_records(SqliteAuditSource(db), bucket, "audit/").present == 0
    again = export_new_records(SqliteAuditSource(db), bucket, "audit/")
    assert again.present == 1 and len(again.written) == 1 and len(keys(s3, "audit/")) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bucket", "Not_A_Bucket"], "--bucket must be <bucket>[@<region>]"),
        (["--bucket", f"{BUCKET}@us-east-"], "--bucket must be <bucket>[@<region>]"),  # not a region botocore takes
        (["--bucket", BUCKET_ARG, "--prefix", "audit"], "--prefix must be key segments each ending in /"),
        (["--bucket", f"waiaas-elsewhere@{REGION}"], "S3 ListObjectsV2 failed (NoSuchBucket)"),
    ],
)
def test_bad_arguments_and_an_unreachable_bucket_are_exit_2(
    db: Path, s3: Any, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = run(capsys, "audit", "export", "--db", str(db), *args)
    assert code == 2 and message in err, err
    assert keys(s3, "audit/") == []


def test_the_exported_objects_are_locked(db: Path, s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """The bucket's default retention applies to each export: the parent's role has no delete, and even a principal
    with one could not remove a version without bypassing governance retention."""
    assert export(capsys, db)[0] == 0
    (version,) = s3.list_object_versions(Bucket=BUCKET, Prefix="audit/")["Versions"]
    with pytest.raises(Exception, match="AccessDenied"):
        s3.delete_object(Bucket=BUCKET, Key=version["Key"], VersionId=version["VersionId"])
