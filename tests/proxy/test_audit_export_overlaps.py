"""Two hosts whose export timers run at the same moment, a record appended between their reads of the log: the one
that writes second lists the keys again just before its first put, finds the other's export covering the first seq
it would write, and writes nothing rather than a second export over the same seqs (`audit_export_cli`). Overlapping
names below the last export (honest races that still happen, between that second listing and the put; keys planted
there) are read in a rotating slice past `SUSPECTS_PER_RUN`, the others reported on a WARNING line
(`audit_export_names`, step 3).

Before: the second host wrote its own export beside the other's (4-5 beside 4-6), both confirmed by the log, and
every later run of every host read both names again; past `MAX_LOG_READS` of such reads (about 480 races) every run
was FAILED ("overlapping export names not checked"), for ever, with nothing planted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.audit_export_cli import export_new_records
from parent_proxy.audit_exports import ExportName, parse_export_name
from parent_proxy.audit_source import SqliteAuditSource
from parent_proxy.clock import SystemClock
from parent_proxy.data_bucket import DataBucket
from parent_proxy.store.dynamodb import DynamoStore, create_table
from policies.cli import main
from tests.proxy.audit_log_rewrites import copy_of, read
from tests.proxy.locked_bucket import BUCKET, REGION, keys, locked_bucket
from tests.support.audit_export_runs import RaceClient, aws, export, new_log, use_client

PREFIX = "audit/"
WHERE = f"s3://{BUCKET}/{PREFIX}"
TABLE = "waiaas-state"


def overtaken(first: int, last: int) -> str:
    return f"audit export: OK: nothing written: another host exported records {first}-{last} after this run listed " \
        "the keys (the next run checks that export against the log like any other, and goes on after the last one " \
        "the log confirms)\n"  # fmt: skip


def ranges(s3: Any) -> list[tuple[int, int]]:
    names = [parse_export_name(k.removeprefix(PREFIX)) for k in keys(s3, PREFIX)]
    return sorted((n.first_seq, n.last_seq) for n in names if n is not None)


def test_an_export_another_host_wrote_meanwhile_is_not_overlapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other host read a record this run did not (its SQLite source read the log before record 6 landed)."""
    with aws(monkeypatch) as s3:
        db = new_log(tmp_path / "log.db", 3)
        assert export(db, PREFIX)[0] == 0
        new_log(db, 2)  # 4 and 5: this run reads them

        def other_host() -> None:  # after this run listed and read: record 6 lands, another host's timer run
            new_log(db, 1)
            with pytest.MonkeyPatch.context() as patch:
                use_client(patch, RaceClient(s3))
                assert export(db, PREFIX)[:2] == (0, f"audit export: OK: 1 exports to {WHERE}: records 4-6, head "
                                                     f"{read(db)[-1].hash.hex()}\n")  # fmt: skip

        client = RaceClient(s3, meanwhile=other_host, at_list=2)
        use_client(monkeypatch, client)
        assert export(db, PREFIX) == (0, overtaken(4, 6), "")
        assert client.lists == 2 and client.puts == []
        assert ranges(s3) == [(1, 3), (4, 6)]
        # The next run goes on after the other host's export.
        use_client(monkeypatch, RaceClient(s3))
        new_log(db, 1)
        code, out, err = export(db, PREFIX)
        assert (code, err) == (0, "") and "records 7-7" in out, out
        assert ranges(s3) == [(1, 3), (4, 6), (7, 7)]


def test_an_export_of_fewer_records_another_host_wrote_meanwhile_is_gone_on_after_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other host read fewer records than this run (its read came before record 6): the log this run read
    confirms the other host's export, and this run writes nothing; the next run exports 6 on its own."""
    with aws(monkeypatch) as s3:
        db = new_log(tmp_path / "log.db", 3)
        assert export(db, PREFIX)[0] == 0
        new_log(db, 2)
        elsewhere = tmp_path / "other"
        elsewhere.mkdir()
        other_log = copy_of(db, elsewhere)  # the log up to 5, as the other host read it
        new_log(db, 1)  # this run reads 4-6

        def other_host() -> None:
            export_new_records(SqliteAuditSource(other_log), DataBucket(s3, BUCKET), PREFIX)

        client = RaceClient(s3, meanwhile=other_host, at_list=2)
        use_client(monkeypatch, client)
        assert export(db, PREFIX) == (0, overtaken(4, 5), "")
        assert client.puts == [] and ranges(s3) == [(1, 3), (4, 5)]
        use_client(monkeypatch, RaceClient(s3))
        code, out, err = export(db, PREFIX)
        assert (code, err) == (0, "") and "records 6-6" in out, out
        assert ranges(s3) == [(1, 3), (4, 5), (6, 6)]


@pytest.fixture
def table(aws_env: None) -> Iterator[tuple[Any, AuditLog]]:
    """The data bucket and the state table (moto's), and the proxy's audit log on that table."""
    import boto3

    with locked_bucket() as s3:
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_table(dynamodb, TABLE)
        yield s3, AuditLog(DynamoStore(dynamodb, TABLE), SystemClock())


def export_state(capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """One run as the cloud hosts' unit runs it: the log of the state table."""
    code = main(["audit", "export", "--state", f"dynamodb:{TABLE}@{REGION}", "--bucket", f"{BUCKET}@{REGION}"])
    out, err = capsys.readouterr()
    return code, out, err


def test_on_the_state_table_the_log_confirms_the_other_hosts_export(
    table: tuple[Any, AuditLog], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cloud hosts' log: the record the other host read after this run's read is in the table this run reads
    the other export's last seq from."""
    s3, log = table
    for i in range(3):
        log.append("test.appended", {"n": i})
    assert export_state(capsys)[0] == 0
    for i in range(2):
        log.append("test.appended", {"n": i})

    def other_host() -> None:
        log.append("test.appended", {"n": 6})
        with pytest.MonkeyPatch.context() as patch:
            use_client(patch, RaceClient(s3))
            code, out, err = export_state(capsys)
            assert code == 0 and "records 4-6" in out, (out, err)

    client = RaceClient(s3, meanwhile=other_host, at_list=2)
    use_client(monkeypatch, client)
    assert export_state(capsys) == (0, overtaken(4, 6), "")
    assert client.puts == [] and ranges(s3) == [(1, 3), (4, 6)]


def test_a_key_that_appears_meanwhile_holds_up_one_run_at_most(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key planted between the two listings: one with another head at a seq the log holds does not stop the put;
    one past the log's end (which a source that read the log once cannot tell from another host's export of records
    appended since) holds up that run only. The runs after report both, and export everything."""
    with aws(monkeypatch) as s3:
        db = new_log(tmp_path / "log.db", 3)
        assert export(db, PREFIX)[0] == 0
        new_log(db, 2)
        other_head = PREFIX + ExportName(4, 5, b"\x01" * 32).file_name()
        put = RaceClient(s3, meanwhile=lambda: s3.put_object(Bucket=BUCKET, Key=other_head, Body=b"x"), at_list=2)
        use_client(monkeypatch, put)
        code, out, err = export(db, PREFIX)
        assert (code, err) == (0, "") and "records 4-5" in out, out
        assert len(put.puts) == 1 and ranges(s3) == [(1, 3), (4, 5), (4, 5)]

        new_log(db, 2)
        past_end = PREFIX + ExportName(6, 10**6, b"\x02" * 32).file_name()
        held_up = RaceClient(s3, meanwhile=lambda: s3.put_object(Bucket=BUCKET, Key=past_end, Body=b"x"), at_list=2)
        use_client(monkeypatch, held_up)
        code, out, err = export(db, PREFIX)
        assert (code, out) == (1, overtaken(6, 10**6)), (out, err)
        assert err.startswith(f"audit export: FAILED: 1 keys under {WHERE} named as exports contradict the log")
        assert f"{other_head}: the log's record at seq 5 is not the one it ends with" in err, err
        assert held_up.puts == []

        use_client(monkeypatch, RaceClient(s3))
        code, out, err = export(db, PREFIX)
        assert code == 1 and "records 6-7" in out, (out, err)
        assert err.startswith(f"audit export: FAILED: 2 keys under {WHERE} named as exports contradict the log")
        assert other_head in err and past_end in err
        assert ranges(s3) == [(1, 3), (4, 5), (4, 5), (6, 7), (6, 10**6)]
