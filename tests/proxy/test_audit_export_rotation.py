"""Overlapping export names below the last export, more than a run reads (`SUSPECTS_PER_RUN`): each run reads a
slice that moves on every `TURN_SECONDS`, and reports the others on a WARNING line, not FAILED
(`audit_export_names`, step 3). A name the log contradicts among them is FAILED on every run whose slice holds it,
and the slices of a host that runs at least once every two turns hold every name within `turns_to_check_all` turns.

Before: every run read every overlapping name below the last export, up to `MAX_LOG_READS` reads; past that, every
run was FAILED ("overlapping export names not checked"). Two hosts that export at once with a record appended
between their reads leave two overlapping names the log confirms, so about 480 such honest races made every later
run of every host FAILED, for ever: `AuditExportFailed` stayed in alarm and a real rewrite raised no new alarm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cdk.user_data import AUDIT_EXPORT_MINUTES
from parent_proxy import audit_export_cli, audit_export_names
from parent_proxy.audit_export_names import check_export_names, suspects_of_turn, turns_to_check_all
from parent_proxy.audit_exports import ExportName, encode_export
from parent_proxy.audit_source import SqliteAuditSource
from parent_proxy.store.model import AuditRecord
from tests.proxy.locked_bucket import BUCKET
from tests.support.audit_export_runs import aws, export, new_log

PREFIX = "audit/"
WHERE = f"s3://{BUCKET}/{PREFIX}"


def raced(records: list[AuditRecord], races: int) -> list[ExportName]:
    """The export names of ``races`` honest races over ``records`` (seqs from 1), then one export with no race: in
    each race one host wrote seqs a to a+1 and the other, which read one record more, a to a+2."""
    names, a = [], 1
    for _ in range(races):
        names += [encode_export(records[a - 1 : last])[0] for last in (a + 1, a + 2)]
        a += 3
    return [*names, encode_export(records[a - 1 : a + 1])[0]]


def test_honest_races_never_make_a_run_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    races = 520
    with aws(monkeypatch) as s3:
        db = new_log(tmp_path / "log.db", 3 * races + 2)
        records = SqliteAuditSource(db).read_all()
        for name in raced(records, races):
            records_of = records[name.first_seq - 1 : name.last_seq]
            s3.put_object(Bucket=BUCKET, Key=PREFIX + name.file_name(), Body=encode_export(records_of)[1])
        warning = f"audit export: WARNING: 540 of the 1040 export names under {WHERE} that overlap another below " \
            "the last export were not checked against the log in this run (a run checks 500, in turn: each one " \
            "at least once in any 6 timer intervals)\n"  # fmt: skip
        for turn in range(7):  # a run each turn, a record appended before each
            new_log(db, 1)
            monkeypatch.setattr(audit_export_cli, "current_turn", lambda turn=turn: turn)
            code, out, err = export(db, PREFIX)
            assert (code, err) == (0, warning), err
            assert f"records {3 * races + 3 + turn}-{3 * races + 3 + turn}" in out, out


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(audit_export_names, "SUSPECTS_PER_RUN", 4)
    yield 4


def schedules(first: int, length: int) -> Iterator[list[int]]:
    """Every set of turns in ``first`` .. ``first + length - 1`` of a host that runs at least once every two turns."""

    def on_from(runs: list[int]) -> Iterator[list[int]]:
        if runs[-1] >= first + length - 2:
            yield runs
        for gap in (1, 2):
            if runs[-1] + gap < first + length:
                yield from on_from([*runs, runs[-1] + gap])

    for start in (first, first + 1):
        yield from on_from([start])


@pytest.mark.usefixtures("small_slices")
def test_a_name_the_log_contradicts_among_many_overlaps_is_failed_by_the_runs_that_read_it(tmp_path: Path) -> None:
    db = new_log(tmp_path / "log.db", 3 * 8 + 2)
    names = raced(SqliteAuditSource(db).read_all(), 8)
    planted = ExportName(4, 5, b"\x01" * 32)  # below the last export, overlapping the second race
    every = turns_to_check_all(17)  # 16 raced names and the planted one
    assert every == 10
    failed = set()
    for turn in range(30):
        checked = check_export_names(SqliteAuditSource(db), [*names, planted], turn)
        assert (checked.last, checked.suspects, checked.unchecked) == (names[-1], 17, 13)
        assert [c.name for c in checked.contradicted] in ([], [planted])
        if checked.contradicted:
            failed.add(turn)
            assert "the log's record at seq 5 is not the one it ends with" in checked.contradicted[0].reason
    for first in range(30 - every + 1):
        missed = [runs for runs in schedules(first, every) if not failed.intersection(runs)]
        assert missed == [], (first, missed[:1], sorted(failed))


@pytest.mark.usefixtures("small_slices")
@pytest.mark.parametrize("count", range(5, 23))
def test_the_slices_of_any_two_turns_apart_runs_cover_every_suspect(count: int) -> None:
    suspects = [ExportName(seq, seq, bytes(32)) for seq in range(count)]
    every = turns_to_check_all(count)
    for first in range(2 * count):
        for runs in schedules(first, every):
            read = {name for turn in runs for name in suspects_of_turn(suspects, turn)}
            assert read == set(suspects), (count, runs)
        assert all(len(suspects_of_turn(suspects, turn)) == 4 for turn in range(first, first + every))


def test_up_to_a_slice_every_run_reads_every_suspect(small_slices: int) -> None:
    suspects = [ExportName(seq, seq, bytes(32)) for seq in range(small_slices)]
    assert all(suspects_of_turn(suspects, turn) == suspects for turn in range(5))
    assert turns_to_check_all(small_slices) == 1


def test_a_turn_is_the_hosts_timer_interval() -> None:
    assert audit_export_names.TURN_SECONDS == AUDIT_EXPORT_MINUTES * 60
