"""Two hosts exporting the same records at once: the object this run is about to write appears between its listing
(and its check of the last export) and its put. The other host's run is the real exporter on the same log; S3 is
moto's, with the 409 S3 answers while another conditional write to the key is under way added at the client
(`tests.support.audit_export_runs.RaceClient`), since moto never answers it.

Before: an object found under the key (S3's 412) counted as written without a look at it, whatever it held; a 409
ended the run with exit 2 until the next timer run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parent_proxy import audit_export_cli, data_bucket
from parent_proxy.audit_export_cli import export_new_records
from parent_proxy.audit_exports import encode_export
from parent_proxy.audit_source import SqliteAuditSource
from parent_proxy.data_bucket import DataBucket
from tests.proxy.locked_bucket import BUCKET, body, keys, locked_bucket
from tests.support.audit_export_runs import RaceClient, export, export_key, new_log, use_client

PREFIX = "audit/"


@pytest.fixture
def s3(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(data_bucket, "CONFLICT_RETRY_SECONDS", 0.0)
    with locked_bucket() as client:
        yield client


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return new_log(tmp_path / "state.db", 5)


def other_host(s3: Any, db: Path) -> None:
    """Another host's export of the same log, complete, into the same bucket."""
    export_new_records(SqliteAuditSource(db), DataBucket(s3, BUCKET), PREFIX)


def export_key_of(db: Path, first: int, last: int) -> tuple[str, bytes]:
    """The key and bytes of the export of seqs ``first``-``last`` of the log of ``db``."""
    records = [r for r in SqliteAuditSource(db).read_all() if first <= r.seq <= last]
    name, encoded = encode_export(records)
    return PREFIX + name.file_name(), encoded


@pytest.mark.parametrize("conflicts", [0, 1, 2], ids=["412", "409 then 412", "409 twice then 412"])
def test_an_export_another_host_wrote_meanwhile_counts_as_written(
    s3: Any, db: Path, monkeypatch: pytest.MonkeyPatch, conflicts: int
) -> None:
    client = RaceClient(s3, meanwhile=lambda: other_host(s3, db), conflicts=conflicts)
    use_client(monkeypatch, client)
    key, expected = export_key(db, PREFIX)
    head = SqliteAuditSource(db).read_all()[-1].hash.hex()
    code, out, err = export(db, PREFIX)
    assert (code, err) == (0, ""), err
    assert out == f"audit export: OK: 1 exports to s3://{BUCKET}/{PREFIX} (1 there already, the same bytes: another " \
        f"host exported them): records 1-5, head {head}\n"  # fmt: skip
    assert client.puts == [key] * (conflicts + 1) and client.reads == [key]  # read back once the put met it
    assert keys(s3, PREFIX) == [key] and body(s3, key) == expected


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(lambda b: b.replace(b"appended", b"appendee", 1), id="same size, other bytes"),
        pytest.param(lambda b: b + b"\n", id="one byte more"),
        pytest.param(lambda b: b"not an export", id="not an export"),
    ],
)
@pytest.mark.parametrize("conflicts", [0, 1], ids=["412", "409 then 412"])
def test_another_object_under_the_export_name_fails_and_nothing_more_is_written(
    s3: Any, db: Path, monkeypatch: pytest.MonkeyPatch, other: Any, conflicts: int
) -> None:
    """The run's second object (of three) meets another object under its name: FAILED naming it, the first object
    stays, the third is never written, the other object is left as it was."""
    monkeypatch.setattr(audit_export_cli, "MAX_RECORDS_PER_EXPORT", 2)
    records = SqliteAuditSource(db).read_all()
    second, wanted = export_key_of(db, records[2].seq, records[3].seq)
    foreign = other(wanted)
    client = RaceClient(
        s3, at_put=2, conflicts=conflicts,
        meanwhile=lambda: s3.put_object(Bucket=BUCKET, Key=second, Body=foreign),
    )  # fmt: skip
    use_client(monkeypatch, client)
    code, out, err = export(db, PREFIX)
    assert (code, out) == (1, ""), out
    assert err == f"audit export: FAILED: s3://{BUCKET}/{second} holds an object other than the one this put would " \
        f"write ({'of the same size, other bytes' if len(foreign) == len(wanted) else 'of another size'}): not the " \
        "export of these records, which another host would have written byte for byte; nothing more was " \
        "written\n"  # fmt: skip
    assert len(keys(s3, PREFIX)) == 2 and second in keys(s3, PREFIX)  # the first export, and the other object
    assert body(s3, second) == foreign
    assert client.puts[-1] == second and client.reads == [second]


def test_a_conflict_that_does_not_clear_is_exit_2_after_a_few_attempts(
    s3: Any, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = RaceClient(s3, conflicts=100)
    use_client(monkeypatch, client)
    code, out, err = export(db, PREFIX)
    assert (code, out) == (2, "")
    assert err == "audit export: ERROR: S3 PutObject failed (ConditionalRequestConflict)\n"
    assert len(client.puts) == data_bucket.CONFLICT_ATTEMPTS and keys(s3, PREFIX) == []


def test_an_object_met_but_not_readable_is_exit_2(s3: Any, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host cannot tell whether the object there is its export: the next run (which lists it) goes on."""
    key, encoded = export_key(db, PREFIX)
    client = RaceClient(s3, meanwhile=lambda: other_host(s3, db), refuse_read="AccessDenied")
    use_client(monkeypatch, client)
    code, out, err = export(db, PREFIX)
    assert (code, out, err) == (2, "", "audit export: ERROR: S3 GetObject failed (AccessDenied)\n")
    assert keys(s3, PREFIX) == [key] and body(s3, key) == encoded


def test_the_waits_between_attempts_double(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr("parent_proxy.data_bucket.time.sleep", waits.append)
    client = RaceClient(None, conflicts=100)  # S3 answers 409 to every put; nothing reaches a bucket
    with pytest.raises(data_bucket.BucketUnavailable, match="ConditionalRequestConflict"):
        DataBucket(client, BUCKET).put_new(PREFIX + "x", b"x", content_type="text/plain")
    assert waits == [0.5, 1.0, 2.0] and len(client.puts) == data_bucket.CONFLICT_ATTEMPTS == 4
