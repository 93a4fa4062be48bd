"""An unexpected error answers the uniform 500 and leaves one line in the log, with its type only
(parent_proxy.server_errors), under the real server: ``python -m parent_proxy`` (main, serve, uvicorn.run).

Review s21 (secret hygiene): the app's handler logged only the type, but Starlette's ServerErrorMiddleware raises the
exception again after answering, and uvicorn logged "Exception in ASGI application" with the full traceback: a
store error quoting the agent token it was given put the token in the proxy's log. The fault here is injected at the
state-store seam (every ``authenticate_token`` raises an error whose message and cause carry a marker)."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from selfhost.local_stack import free_port
from tests.proxy.proxy_process import proxy_env, wait_healthy

FAULTY_PROXY = """
import sys
from parent_proxy.__main__ import main
from parent_proxy.store.sqlite import SqliteStore

def authenticate_token(self, token):
    raise RuntimeError(f"lookup failed for {token}") from KeyError(f"cause {token}")

SqliteStore.authenticate_token = authenticate_token
sys.exit(main())
"""
INTERNAL = {"error": {"code": "internal_error", "message": "internal error; nothing was signed"}}


@pytest.mark.slow
def test_an_unexpected_error_is_answered_500_and_logged_by_its_type_only(tmp_path: Path) -> None:
    marker = "MARKER" + secrets.token_hex(16)
    token = f"waiaas_{secrets.token_hex(8)}_{marker}" + "x" * (43 - len(marker))
    port = free_port()
    env = proxy_env(tmp_path / "waiaas.db", tmp_path, port)
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        proxy = subprocess.Popen([sys.executable, "-c", FAULTY_PROXY], cwd=tmp_path, env=env, stdout=out, stderr=out)
    try:
        wait_healthy(proxy, port, log)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        read = httpx.get(f"{base}/v1/wallets/w1", headers=headers, timeout=10)
        body = {"transaction": "AA==", "idempotency_key": "k1"}
        sign = httpx.post(f"{base}/v1/wallets/w1/transactions/sign", json=body, headers=headers, timeout=10)
        for answer in (read, sign):
            assert (answer.status_code, answer.json()) == (500, INTERNAL)
            assert marker not in answer.text
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(timeout=30) == 0
    finally:
        if proxy.poll() is None:
            proxy.kill()
            proxy.wait()
    text = log.read_text()
    assert marker not in text
    assert "Traceback" not in text and "Exception in ASGI application" not in text
    logged = [line.split(" ERROR ", 1)[1] for line in text.splitlines() if " ERROR " in line]
    assert logged == [
        "parent_proxy.app: unexpected error: RuntimeError (GET /v1/wallets/{wallet_id})",
        "parent_proxy.app: unexpected error: RuntimeError (POST /v1/wallets/{wallet_id}/transactions/sign)",
    ]
