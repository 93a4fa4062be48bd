"""`python -m selfhost.list_wallets`: the wallets, agent keys and candidates of a state, read without changing it
(docs/selfhost.md, Restore: a backup older than a wallet loses it, so the restored state is compared with the one
it replaced)."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from parent_proxy.store import sqlite_agent_keys
from parent_proxy.store.model import AgentKeyCandidate, Wallet
from parent_proxy.store.sqlite import SqliteStore
from tests.selfhost.compose_config import REPO


def _key() -> bytes:
    return Ed25519PrivateKey.generate().public_key().public_bytes_raw()


def _list(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "selfhost.list_wallets", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_it_lists_each_wallet_with_its_agent_key_and_candidate_and_changes_nothing(tmp_path: Path) -> None:
    database = tmp_path / "waiaas.db"
    owner, agents, candidate = _key(), {"w2": _key(), "w1": _key()}, _key()
    store = SqliteStore(database)
    for wallet_id, agent in agents.items():
        store.create_wallet(Wallet(wallet_id, agent, owner, agent, sealed_key=b"sealed " + wallet_id.encode()))
    store.close()
    with sqlite3.connect(database) as conn:
        sqlite_agent_keys.set_candidate_in(
            conn, AgentKeyCandidate("w2", agents["w2"], candidate, sealed_key=b"sealed candidate", created_at=1.0)
        )
    conn.close()
    conn = sqlite3.connect(database)
    assert conn.execute("PRAGMA journal_mode = DELETE").fetchone() == ("delete",)  # as a backup copy is (Backup)
    conn.close()
    before = hashlib.sha256(database.read_bytes()).hexdigest()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["waiaas.db", "waiaas.db-writer"]  # the store that made it left its writer lock file

    result = _list(str(database))

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"w1 {Pubkey.from_bytes(agents['w1'])} -",
        f"w2 {Pubkey.from_bytes(agents['w2'])} {Pubkey.from_bytes(candidate)}",
    ]
    assert "sealed" not in result.stdout
    assert hashlib.sha256(database.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files  # no journal, -wal, -shm or lock file made


def test_a_file_that_is_not_a_state_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing, other = tmp_path / "missing.db", tmp_path / "other.db"
    sqlite3.connect(other).close()
    for path in (missing, other):
        result = _list(str(path))
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr.startswith(f"list_wallets: {path}: cannot be read as a WAIaaS state (")
        assert result.stderr.count("\n") == 1
    assert not missing.exists()
    assert _list().returncode == 2
