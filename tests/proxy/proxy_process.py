"""A ``python -m parent_proxy`` started by a test: its environment and the wait for its ``/healthz``."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from tests.proxy.minimal_settings import OWNER

REPO = Path(__file__).resolve().parents[2]
START_SECONDS = 60.0


def proxy_env(database: Path, tmp_path: Path, port: int, **more: str) -> dict[str, str]:
    """The smallest environment of a proxy process (`tests.proxy.minimal_settings`): the SQLite state at ``database``,
    no enclave on its socket (``/healthz`` needs none), listening on ``port``, and ``more`` (``WAIAAS_WORKERS``...)."""
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "WAIAAS_STATE": f"sqlite:{database}",
        "WAIAAS_ENCLAVE": f"unix:{tmp_path / 'no-enclave.sock'}",
        "WAIAAS_OWNER_KEYS": OWNER,
        "WAIAAS_CHAIN": "litesvm",
        "WAIAAS_REQUIRE_MULTISIG": "false",
        "WAIAAS_PUBLIC_ORIGINS": "http://127.0.0.1:8080",  # no owner request is sent
        "WAIAAS_PORT": str(port),
        **more,
    }


def wait_healthy(proxy: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Return once the proxy answers ``/healthz`` 200; fail with its log if it exits or takes `START_SECONDS`."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        assert proxy.poll() is None and time.monotonic() < deadline, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
