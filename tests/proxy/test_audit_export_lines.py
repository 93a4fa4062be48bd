"""What ``waiaas audit export`` prints on each of its paths: one line that starts with a fixed marker, which the
deployment's alarms match (tests/cdk/test_audit_export_alarms.py evaluates their filters on these same runs).

Before: an exit 2 (a bad argument, a log or a bucket that cannot be used) printed its message after ``audit export:``
with no marker to tell it from the other lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from parent_proxy.audit_export_cli import ERROR_MARKER, FAILED_MARKER, OK_MARKER, WARNING_MARKER
from tests.support.audit_export_runs import Printed, every_path

EXPECTED = {
    "first export": 0,
    "nothing new": 0,
    "keys not named as exports": 0,
    "another host exported meanwhile": 0,
    "overlapping names left for later runs": 0,
    "log cut short": 1,
    "history rewritten": 1,
    "another object under the export's name": 1,
    "bad --bucket": 2,
    "bad --prefix": 2,
    "no such bucket": 2,
    "no log": 2,
    "a conflict that does not clear": 2,
    "the read-back refused": 2,
}


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Printed]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        runs = every_path(Path(tmp_path_factory.mktemp("runs")), monkeypatch)
    return {run.case: run for run in runs}


def test_every_path_ran_with_its_exit_code(printed: dict[str, Printed]) -> None:
    assert {case: run.code for case, run in printed.items()} == EXPECTED


@pytest.mark.parametrize("case", [case for case, code in EXPECTED.items() if code == 0])
def test_a_run_that_succeeds_prints_one_ok_line(printed: dict[str, Printed], case: str) -> None:
    run = printed[case]
    assert len(run.out) == 1 and run.out[0].startswith(OK_MARKER), run
    assert all(line.startswith(WARNING_MARKER) for line in run.err), run
    assert len(run.err) == (case in ("keys not named as exports", "overlapping names left for later runs")), run


@pytest.mark.parametrize("case", [case for case, code in EXPECTED.items() if code != 0])
def test_a_run_that_fails_prints_one_marked_line_and_nothing_else(printed: dict[str, Printed], case: str) -> None:
    run = printed[case]
    marker = FAILED_MARKER if run.code == 1 else ERROR_MARKER
    assert run.out == [] and len(run.err) == 1 and run.err[0].startswith(marker), run
    other = ERROR_MARKER if run.code == 1 else FAILED_MARKER
    assert other not in run.err[0] and OK_MARKER not in run.err[0]
