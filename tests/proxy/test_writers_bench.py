"""`python -m parent_proxy.writers_bench` runs both rounds (two writer processes each) and prints its summary line;
bad arguments stop it before anything runs. Its figures are not checked here (benchmarks print, tests do not
time)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parent_proxy import writers_bench

SUMMARY = re.compile(
    r"sqlite-writers p50_ms=[0-9.]+ p99_ms=[0-9.]+ baseline_p50_ms=[0-9.]+ baseline_p99_ms=[0-9.]+ ratio_p99=[0-9.]+"
)


def test_both_rounds_write_and_the_last_line_is_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert writers_bench.main(["--seconds", "0.3", "--work-us", "50", "--state-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert SUMMARY.fullmatch(lines[-1])
    counts = [int(m.group(1)) for line in lines[:2] if (m := re.search(r"writes=(\d+) ", line))]
    assert len(counts) == 2 and min(counts) > 0
    assert list(tmp_path.iterdir()) == []  # its databases went with its temporary directory


@pytest.mark.parametrize("argv", [["--seconds", "0"], ["--work-us", "-1"], ["--seconds", "soon"]])
def test_bad_arguments_stop_it(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        writers_bench.main([*argv, "--state-dir", str(tmp_path)])
    assert stopped.value.code == 2
    assert "sqlite-writers" not in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
