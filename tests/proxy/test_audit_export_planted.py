"""Keys named as exports that the exporter did not write: the host role may put any new key under ``audit/``, so a
taken-over host (or its role's credentials used elsewhere) can plant one. The exporter goes on after the highest
export the log confirms, and reports every key the log contradicts on every run (`audit_export_names`).

Before: the exporter took the key with the highest last seq as the last export whatever it named, so one planted key
past the log's end, or at the last export's range with another head, made every later run of every host FAILED with
nothing exported again (object lock keeps the planted key a year)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from parent_proxy import audit_export_cli, audit_export_names
from parent_proxy.audit_exports import ExportName, parse_export_name
from parent_proxy.audit_source import SqliteAuditSource
from policies.cli import main
from tests.proxy.audit_log_rewrites import read, rewrite, with_payload
from tests.proxy.locked_bucket import BUCKET, body, keys
from tests.support.audit_export_runs import aws, export, new_log

PREFIX = "audit/"
WHERE = f"s3://{BUCKET}/{PREFIX}"
JUNK = b"not an export\n"


def plant(s3: Any, name: ExportName, content: bytes = JUNK) -> str:
    """What the host role may do: a put with If-None-Match under audit/ (the bucket policy's only demand)."""
    key = PREFIX + name.file_name()
    s3.put_object(Bucket=BUCKET, Key=key, Body=content, IfNoneMatch="*")
    return key


def ranges(s3: Any, *leave_out: str) -> list[tuple[int, int]]:
    names = [parse_export_name(k.removeprefix(PREFIX)) for k in keys(s3, PREFIX) if k not in leave_out]
    return sorted((n.first_seq, n.last_seq) for n in names if n is not None)


def head(db: Path) -> bytes:
    return SqliteAuditSource(db).read_all()[-1].hash


def verify_exports(s3: Any, db: Path, directory: Path) -> int:
    """``waiaas audit verify --exports`` on the objects under the prefix, downloaded into ``directory``."""
    directory.mkdir()
    for key in keys(s3, PREFIX):
        (directory / key.removeprefix(PREFIX)).write_bytes(body(s3, key))
    return main(["audit", "verify", "--db", str(db), "--exports", str(directory)])


PLANTED: dict[str, Callable[[int], ExportName]] = {
    "beyond the log": lambda n: ExportName(1, 2**63 - 1, b"\x00" * 32),
    "the last range, a head that sorts first": lambda n: ExportName(1, n, b"\x00" * 32),
    "the first seq alone, another head": lambda n: ExportName(1, 1, b"\x00" * 32),
}


@pytest.mark.parametrize("planted", PLANTED.values(), ids=PLANTED.keys())
def test_a_planted_key_is_failed_on_every_run_while_the_exports_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], planted: Any
) -> None:
    with aws(monkeypatch) as s3:
        db = new_log(tmp_path / "log.db", 3)
        assert export(db, PREFIX)[0] == 0
        key = plant(s3, planted(3))
        for _ in range(3):  # three later timer runs, records appended before each
            new_log(db, 2)
            code, out, err = export(db, PREFIX)
            assert code == 1, err
            assert out.startswith("audit export: OK: 1 exports to") and out.count("\n") == 1, out
            assert f"head {head(db).hex()}" in out
            assert err.startswith(f"audit export: FAILED: 1 keys under {WHERE} named as exports contradict the log; "
                                  "the export went on after the last one the log confirms (audit/")  # fmt: skip
            assert err.count("\n") == 1 and f"{key}: " in err, err
        # Every record exported, in consecutive ranges; the planted object is as it was put.
        assert ranges(s3, key) == [(1, 3), (4, 5), (6, 7), (8, 9)]
        assert body(s3, key) == JUNK
        # `audit verify --exports` flags it by name.
        capsys.readouterr()
        code = verify_exports(s3, db, tmp_path / "exports")
        assert code == 1 and f"export {key.removeprefix(PREFIX)}: not an export" in capsys.readouterr().err


def test_a_key_the_log_contradicts_stays_failed_once_later_exports_pass_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A history rewritten above the last export the log still confirms: the rewritten records are exported (under
    other keys: nothing is replaced), and the export they contradict is FAILED on every run, also once later exports
    end above it."""
    with aws(monkeypatch) as s3:
        db = new_log(tmp_path / "log.db", 3)
        assert export(db, PREFIX)[0] == 0
        new_log(db, 2)
        assert export(db, PREFIX)[0] == 0
        (honest,) = [k for k in keys(s3, PREFIX) if "-00000000000000000005-" in k]
        records = read(db)
        rewrite(db, [*records[:3], with_payload(records[3], forged=True), *records[4:]])
        for _ in range(3):
            new_log(db, 1)
            code, out, err = export(db, PREFIX)
            assert code == 1 and "audit export: OK: 1 exports" in out, (out, err)
            assert f"{honest}: the log's record at seq 5 is not the one it ends with (the history was rewritten " \
                "after it was exported" in err  # fmt: skip
        assert ranges(s3) == [(1, 3), (4, 5), (4, 6), (7, 7), (8, 8)]


def test_a_key_planted_at_the_next_range_with_the_right_head_pins_the_log_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key with the log's head but not the export's content: the exporter goes on after it (the name alone pins
    every record up to its seq), `audit verify --exports` flags its content, and a later rewrite of those records
    contradicts it on every run."""
    with aws(monkeypatch) as s3:
        db = new_log(tmp_path / "log.db", 3)
        assert export(db, PREFIX)[0] == 0
        new_log(db, 2)
        key = plant(s3, ExportName(4, 5, head(db)))
        assert export(db, PREFIX) == (0, "audit export: OK: nothing new (the log ends at seq 5, exported)\n", "")
        records = read(db)
        rewrite(db, [*records[:3], with_payload(records[3], forged=True), *records[4:]])
        new_log(db, 1)
        for _ in range(2):
            code, _, err = export(db, PREFIX)
            assert code == 1 and f"{key}: the log's record at seq 5 is not the one it ends with" in err, err
        assert ranges(s3, key) == [(1, 3), (4, 6)]
        capsys.readouterr()
        code = verify_exports(s3, db, tmp_path / "exports")
        assert code == 1 and f"export {key.removeprefix(PREFIX)}: not an export" in capsys.readouterr().err


def test_many_keys_past_the_log_end_cost_a_binary_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    original = SqliteAuditSource.records_after

    def counted(self: SqliteAuditSource, seq: int, limit: int) -> list[Any]:
        if limit == 1:
            reads.append(seq)
        return original(self, seq, limit)

    with aws(monkeypatch) as s3:
        db = new_log(tmp_path / "log.db", 3)
        assert export(db, PREFIX)[0] == 0
        planted = [plant(s3, ExportName(1, 1000 + i, bytes([i]) * 32)) for i in range(64)]
        new_log(db, 2)
        monkeypatch.setattr(SqliteAuditSource, "records_after", counted)
        code, out, err = export(db, PREFIX)
        assert code == 1 and "records 4-5" in out, (out, err)
        assert f"64 keys under {WHERE} named as exports contradict the log" in err and "and 59 more" in err, err
        assert sum(k in err for k in planted) == audit_export_cli.MAX_NAMED
        assert len(reads) <= 8, reads  # log2(65) + 1, not one read a key


def test_more_keys_than_a_run_lists_is_failed_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_export_cli, "MAX_LISTED_KEYS", 3)
    with aws(monkeypatch) as s3:
        db = new_log(tmp_path / "log.db", 3)
        for i in range(4):
            s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}notes-{i}.txt", Body=b"x")
        code, out, err = export(db, PREFIX)
        assert (code, out) == (1, ""), out
        assert err == f"audit export: FAILED: more than 3 keys under {PREFIX}, more than a run lists; nothing was " \
            "written (keys there that are not this exporter's: docs/deploy.md)\n"  # fmt: skip
        assert ranges(s3) == []


def test_more_names_to_check_than_a_run_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys within the log's range, each with another head: below the last export, past `SUSPECTS_PER_RUN` a run
    reads a slice of them (FAILED for those it reads, a WARNING for the rest; the next turn reads others); above it,
    past `MAX_LOG_READS` the walk down stops (FAILED, nothing written)."""
    monkeypatch.setattr(audit_export_names, "MAX_LOG_READS", 4)
    monkeypatch.setattr(audit_export_names, "SUSPECTS_PER_RUN", 2)
    with aws(monkeypatch) as s3:
        db = new_log(tmp_path / "log.db", 8)
        assert export(db, PREFIX)[0] == 0
        below = [plant(s3, ExportName(1, seq, b"\x01" * 32)) for seq in (2, 3, 4, 5, 6)]
        named: set[str] = set()
        for turn in range(6):  # from the second run on, the export 1-8 is below the last one too: 6 overlapping
            new_log(db, 1)
            monkeypatch.setattr(audit_export_cli, "current_turn", lambda turn=turn: turn)
            code, out, err = export(db, PREFIX)
            assert code == 1 and f"records {9 + turn}-{9 + turn}" in out, (out, err)
            warning, failed = err.splitlines()
            unread, overlapping, every = (3, 5, 6) if turn == 0 else (4, 6, 7)
            assert warning == f"audit export: WARNING: {unread} of the {overlapping} export names under {WHERE} that " \
                "overlap another below the last export were not checked against the log in this run (a run checks " \
                f"2, in turn: each one at least once in any {every} timer intervals)"  # fmt: skip
            assert failed.startswith(f"audit export: FAILED: {sum(k in failed for k in below)} keys under {WHERE} "
                                     "named as exports contradict the log")  # fmt: skip
            named.update(k for k in below if k in failed)
        assert named == set(below)
        new_log(db, 4)  # 9-18 in the log, exported up to 14
        above = [plant(s3, ExportName(15, seq, b"\x01" * 32)) for seq in (15, 16, 17, 18)]
        code, out, err = export(db, PREFIX)
        assert (code, out) == (1, ""), out
        assert err == "audit export: FAILED: more than 4 reads of the log to find the last export the log confirms " \
            "among 16 export names; nothing was written\n"  # fmt: skip
        assert ranges(s3, *below, *above) == [(1, 8), *((seq, seq) for seq in range(9, 15))]
