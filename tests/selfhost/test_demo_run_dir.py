"""What `waiaas demo` leaves behind (selfhost/demo.py): its default run directory, a new temporary one, holds a
throwaway owner key, unseal secret and sealed agent key. It is removed after a run that exits 0 and kept, with a
line saying what it holds, after any other; a directory given with ``--run-dir`` is never removed (the
whole-story test in test_demo.py reads its logs after the run)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pytest

from selfhost import demo, deployment
from selfhost.demo import settle_temporary_run_dir
from tests.selfhost.compose_config import REPO


def _used_run_dir(root: Path) -> Path:
    run_dir = root / "waiaas-demo-x"
    (run_dir / "secrets").mkdir(parents=True)
    (run_dir / "logs").mkdir()
    (run_dir / "owner.json").write_text("[1, 2, 3]")
    (run_dir / "secrets" / "unseal").write_text("s")
    (run_dir / "logs" / "proxy.log").write_text("l")
    return run_dir


def test_a_run_that_exits_0_removes_its_temporary_directory(tmp_path: Path) -> None:
    run_dir = _used_run_dir(tmp_path)
    lines: list[str] = []
    settle_temporary_run_dir(run_dir, demo.EXIT_OK, lines.append)
    assert not run_dir.exists()
    assert lines == [f"run directory removed: {run_dir} (pass --run-dir DIR to keep one)"]


@pytest.mark.parametrize("code", [demo.EXIT_MISBEHAVED, demo.EXIT_NOT_STARTED, demo.EXIT_STOPPED])
def test_any_other_outcome_keeps_it_for_its_logs_and_says_what_it_holds(tmp_path: Path, code: int) -> None:
    run_dir = _used_run_dir(tmp_path)
    lines: list[str] = []
    settle_temporary_run_dir(run_dir, code, lines.append)
    assert (run_dir / "logs" / "proxy.log").read_text() == "l"
    assert (run_dir / "owner.json").exists()
    assert lines == [
        f"run directory kept for its logs: {run_dir} (it holds this run's throwaway owner key and unseal secret)"
    ]


def test_a_removal_that_fails_is_said_and_raises_nothing(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "waiaas-demo-file"
    not_a_directory.write_text("x")
    lines: list[str] = []
    settle_temporary_run_dir(not_a_directory, demo.EXIT_OK, lines.append)
    assert not_a_directory.exists()
    assert len(lines) == 1 and lines[0].startswith(f"could not remove the run directory {not_a_directory}: ")
    assert lines[0].endswith("; remove it by hand")


def test_without_run_dir_a_run_that_fails_keeps_its_new_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (REPO / "selfhost" / "docker-compose.yml").read_text(encoding="utf-8")
    broken = text.replace('command: ["python", "-m", "parent_proxy"]', 'command: ["python", "-c", "exit(4)"]', 1)
    assert broken != text
    (tmp_path / "docker-compose.yml").write_text(broken, encoding="utf-8")
    monkeypatch.setattr(deployment, "COMPOSE_FILE", tmp_path / "docker-compose.yml")
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    args = argparse.Namespace(run_dir=None, port=0)
    assert demo._run(args) == demo.EXIT_NOT_STARTED
    (run_dir,) = temp_root.iterdir()
    assert run_dir.name.startswith("waiaas-demo-")
    assert (run_dir / "logs" / "proxy.log").exists()
    output = capsys.readouterr().out
    assert f"run directory kept for its logs: {run_dir}" in output
