"""``python -m parent_proxy`` stopped by SIGTERM (what ``waiaas selfhost up``, ``waiaas demo``, ``docker compose stop``
and systemd send) closes its state store and exits with status 0.

Reproduced before the change: uvicorn, after its graceful shutdown, raises the captured SIGTERM again, and with the
default handler in place the process died of it (status -15) before ``main``'s ``finally: services.store.close()``;
the worker processes of ``WAIAAS_WORKERS`` > 1 never closed their store at all. The SQLite connections were never
closed, so the write-ahead log was never checkpointed: ``waiaas.db-wal`` stayed beside ``waiaas.db`` holding the
state's latest writes (a copy of ``waiaas.db`` alone, without it, missed them).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from parent_proxy.__main__ import WEBHOOK_STOP_SECONDS
from parent_proxy.store.sqlite import SqliteStore
from selfhost.local_stack import free_port
from tests.proxy.conftest import make_wallet
from tests.proxy.proxy_process import REPO, proxy_env, wait_healthy


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_closes_the_store_and_exits_cleanly(tmp_path: Path, workers: int) -> None:
    database = tmp_path / "waiaas.db"
    store = SqliteStore(database)
    store.create_wallet(make_wallet("w1"))
    store.close()
    port = free_port()
    env = proxy_env(database, tmp_path, port, WAIAAS_WORKERS=str(workers))
    stderr = tmp_path / "stderr"
    with stderr.open("w") as err:
        proxy = subprocess.Popen([sys.executable, "-m", "parent_proxy"], cwd=REPO, env=env, stdout=err, stderr=err)
    try:
        wait_healthy(proxy, port, stderr)
        wal = database.with_name("waiaas.db-wal")
        assert wal.exists(), "the running proxy holds the state open in WAL mode"
        proxy.send_signal(signal.SIGTERM)
        code = proxy.wait(WEBHOOK_STOP_SECONDS + 10)
    finally:
        if proxy.poll() is None:
            proxy.kill()
            proxy.wait()
    assert code == 0, stderr.read_text()
    # Every connection closed: the log checkpointed into waiaas.db and removed, so the file alone is the state.
    assert not wal.exists() and not database.with_name("waiaas.db-shm").exists()
    store = SqliteStore(database)
    try:
        assert store.get_wallet("w1").wallet_id == "w1"
    finally:
        store.close()
