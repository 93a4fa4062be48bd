"""``waiaas selfhost reseal`` on a real state database (SqliteStore) holding wallets sealed by the signer's own
``LocalSealer``: the success path, every refusal (the database bytes and every blob unchanged), a crash while the
new blobs are computed and one inside the store transaction (nothing written), and no secret, derived key or agent
key in the output, the logs, the error messages or the audit log.

The signer itself loading the resealed wallets and signing is in test_reseal_live.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_app.errors import KeyDerivationError
from enclave_app.sealing import LocalSealer, SealBinding, seal_agent_key
from parent_proxy.audit import AuditLog, iter_audit_records, verify_audit_chain
from parent_proxy.clock import SystemClock
from parent_proxy.errors import StoreUnavailable
from parent_proxy.store import sqlite_sealed_keys
from parent_proxy.store.model import AgentKeyCandidate
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.store.state_changes import SetAgentKeyCandidate
from policies.cli import main
from selfhost import paths, reseal
from tests.selfhost.compose_config import REPO
from tests.selfhost.reseal_world import (
    WALLETS,
    World,
    assert_nothing_secret,
    audit_log,
    binding,
    make_world,
    opens,
    refused,
    secret_file,
)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


# ------------------------------------------------------------------------------------------------ success


def test_reseal_moves_every_wallet_to_the_new_secret(
    world: World, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = world.wallets()
    assert main(world.args()) == 0
    out, err = capsys.readouterr()
    after = world.wallets()
    old, new = LocalSealer(world.old), LocalSealer(world.new)
    for wallet_id in WALLETS:
        # The same key, now opening with the new secret only, under the same binding; nothing else changed.
        assert opens(new, after[wallet_id]) == world.seeds[wallet_id]
        assert opens(old, after[wallet_id]) is None
        assert after[wallet_id].sealed_key != before[wallet_id].sealed_key
        assert {**vars(after[wallet_id]), "sealed_key": b""} == {**vars(before[wallet_id]), "sealed_key": b""}
    store = SqliteStore(world.database)
    records = list(iter_audit_records(store))
    store.close()
    verify_audit_chain(records)
    assert [(r.event_type, r.wallet_id) for r in records] == [("wallets.resealed", None)]
    assert json.loads(records[0].payload) == {"wallets": list(WALLETS), "count": len(WALLETS)}
    assert "resealed 4 wallets" in out and "audit record 1 (wallets.resealed)" in out and not err
    assert f"only with {world.new_file}: put it in place of {world.old_file} before starting the services" in out
    for wallet_id in WALLETS:
        assert f"{wallet_id}: resealed" in out
    assert_nothing_secret(world, out, err, caplog.text, world.database.read_bytes())


def test_reseal_takes_an_explicit_old_secret_file_and_a_stale_signer_socket(world: World, tmp_path: Path) -> None:
    """A socket file whose process is gone (the signer stopped uncleanly) is not a running signer."""
    moved = secret_file(tmp_path / "old_elsewhere", world.old)
    world.old_file.chmod(0o600)
    world.old_file.unlink()
    stale = world.root / "socket" / "signer.sock"
    stale.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(stale))
    assert stale.exists()
    assert main(world.args("--old-secret-file", str(moved))) == 0
    assert all(opens(LocalSealer(world.new), w) is not None for w in world.wallets().values())


def test_reseal_without_wallets_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "empty"
    secret_file(root / "secrets" / paths.UNSEAL_SECRET_NAME, secrets.token_bytes(32))
    (root / "state").mkdir()
    SqliteStore(root / "state" / "waiaas.db").close()
    database = (root / "state" / "waiaas.db").read_bytes()
    new = secret_file(tmp_path / "new", secrets.token_bytes(32))
    assert main(["selfhost", "reseal", "--state-dir", str(root), "--new-secret-file", str(new)]) == 0
    assert "no wallets: nothing to reseal" in capsys.readouterr().out
    assert (root / "state" / "waiaas.db").read_bytes() == database


# ------------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    "case",
    [
        (None, 0o400, "No such file or directory"),
        (b"", 0o400, "empty"),
        (b"\n", 0o400, "empty"),
        (b"fifteen bytes!!", 0o400, "shorter than 16 bytes, the signer's minimum"),
        (b"fifteen bytes!!\r\n", 0o400, "shorter than 16 bytes"),  # 17 bytes in the file, 15 for the signer
        (b"a secret that is long enough", 0o440, r"readable by group or others \(mode 0440; chmod 0400 it\)"),
        (b"a secret that is long enough", 0o404, "readable by group or others"),
    ],
    ids=["missing", "empty", "newline-only", "short", "short-after-strip", "group-readable", "world-readable"],
)
def test_a_bad_new_secret_file_is_refused(
    world: World, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, case: tuple[Any, int, str]
) -> None:
    content, mode, match = case
    world.new_file.chmod(0o600)
    world.new_file.unlink()
    if content is not None:
        secret_file(world.new_file, content, mode)
    err = refused(world, capsys, caplog, world.args(), 2)
    assert f"--new-secret-file {world.new_file}: " in err
    assert re.search(match, err), err


def test_the_new_secret_equal_to_the_old_is_refused(
    world: World, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Equal as the signer reads them: the same bytes with another line ending are the same secret."""
    world.new_file.chmod(0o600)
    secret_file(world.new_file, world.old + b"\r\n")
    assert "the new secret is the old secret" in refused(world, capsys, caplog, world.args(), 2)


def test_a_missing_old_secret_is_refused(
    world: World, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    world.old_file.chmod(0o600)
    world.old_file.unlink()
    err = refused(world, capsys, caplog, world.args(), 2)
    assert f"--old-secret-file {world.old_file}: No such file" in err


def test_a_wrong_old_secret_is_refused_naming_the_first_wallet(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    wrong = secret_file(tmp_path / "wrong", secrets.token_bytes(32))
    err = refused(world, capsys, caplog, world.args("--old-secret-file", str(wrong)), 1)
    assert "wallet w-a: its sealed key does not open with the old secret (wrong --old-secret-file" in err


def _rewrite_blob(world: World, wallet_id: str, blob: bytes) -> None:
    store = SqliteStore(world.database)
    with store._write() as conn:  # a test-side edit of the stored state, as a damaged backup would have it
        conn.execute("UPDATE wallets SET sealed_key = ? WHERE wallet_id = ?", (blob, wallet_id))
    store.close()


def test_one_blob_under_another_secret_is_refused_and_no_other_wallet_changes(
    world: World, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """w-a opens and is resealed in memory first; w-c does not open: nothing of either is written."""
    wallet = world.wallets()["w-c"]
    other = LocalSealer(secrets.token_bytes(32))
    key = Ed25519PrivateKey.from_private_bytes(world.seeds["w-c"])
    _rewrite_blob(world, "w-c", seal_agent_key(other, key, binding(wallet)))
    err = refused(world, capsys, caplog, world.args(), 1)
    assert "wallet w-c: its sealed key does not open with the old secret" in err


def test_a_blob_of_another_wallet_is_refused(
    world: World, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The binding is checked as the signer checks it: w-a's blob stored for w-b does not open for w-b."""
    _rewrite_blob(world, "w-b", world.wallets()["w-a"].sealed_key)
    assert "wallet w-b: its sealed key does not open" in refused(world, capsys, caplog, world.args(), 1)


def test_a_blob_holding_another_key_than_the_pinned_one_is_refused(
    world: World, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A blob that opens (right secret, right binding) to a key that is not the wallet's agent key."""
    wallet = world.wallets()["w-d"]
    forged = LocalSealer(world.old).seal(os.urandom(32), binding(wallet))
    _rewrite_blob(world, "w-d", forged)
    err = refused(world, capsys, caplog, world.args(), 1)
    assert "wallet w-d: its sealed key opens with the old secret to a key other than the wallet's agent" in err


@pytest.fixture
def listening_signer(world: World) -> Iterator[Path]:
    path = world.root / "socket" / "signer.sock"
    path.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        yield path


def test_a_running_signer_is_refused(
    world: World, listening_signer: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    err = refused(world, capsys, caplog, world.args(), 1)
    assert f"the signer is running (its socket {listening_signer} accepts connections): stop it first" in err


@pytest.fixture
def running_proxy_store(world: World) -> Iterator[None]:
    """Another process with the state open as the proxy holds it (a SqliteStore, idle after one read)."""
    program = (
        "import sys; from parent_proxy.store.sqlite import SqliteStore; "
        f"s = SqliteStore({str(world.database)!r}); s.get_wallet('w-a'); print('ready', flush=True); sys.stdin.read()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", program],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert process.stdout is not None and process.stdin is not None
    assert process.stdout.readline() == b"ready\n"
    yield
    process.stdin.close()
    process.wait(timeout=10)
    process.stdout.close()


def test_a_state_database_in_use_is_refused(
    world: World, running_proxy_store: None, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Refused at once (no waiting for the lock), with no blob and no audit record written."""
    caplog.set_level(logging.DEBUG)
    before = world.wallets()
    assert main(world.args()) == 1
    err = capsys.readouterr().err
    assert f"the state database {world.database} is in use by another process (a running proxy?)" in err
    assert world.wallets() == before and audit_log(world) == []
    assert_nothing_secret(world, err, caplog.text)


def test_a_missing_state_database_is_refused_and_not_created(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.database.unlink()
    assert main(world.args()) == 1
    assert f"no state database at {world.database}" in capsys.readouterr().err
    assert not world.database.exists()


# ------------------------------------------------------------------------------------------------ crashes


def test_a_crash_while_the_new_blobs_are_computed_writes_nothing(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    before = world.fingerprint()
    calls: list[str] = []
    real = seal_agent_key

    def crash_half_way(sealer: Any, key: Any, binding: SealBinding) -> bytes:
        calls.append(binding.wallet_id)
        if len(calls) > len(WALLETS) // 2:
            raise MemoryError("injected: killed half way")
        return real(sealer, key, binding)

    monkeypatch.setattr(reseal, "seal_agent_key", crash_half_way)
    with pytest.raises(MemoryError, match="injected"):
        main(world.args())
    assert calls == list(WALLETS[: len(WALLETS) // 2 + 1])
    assert world.fingerprint() == before


def test_a_failure_inside_the_store_transaction_writes_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Half the blobs are updated in the transaction, then the disk fails: the transaction is rolled back."""
    before = world.fingerprint()
    real = sqlite_sealed_keys.replace_in

    def fail_half_way(conn: Any, replacements: Any) -> None:
        real(conn, replacements[: len(replacements) // 2])
        first = replacements[0]  # written, inside the transaction
        assert conn.execute("SELECT sealed_key FROM wallets WHERE wallet_id = ?", (first.wallet_id,)).fetchone() == (
            first.new_sealed_key,
        )
        raise StoreUnavailable("injected: disk I/O error")

    monkeypatch.setattr(sqlite_sealed_keys, "replace_in", fail_half_way)
    assert main(world.args()) == 1
    assert "the state refused the new blobs, nothing was written: injected: disk I/O error" in capsys.readouterr().err
    assert world.fingerprint()[2] == before[2] and audit_log(world) == []
    assert all(opens(LocalSealer(world.old), w) is not None for w in world.wallets().values())


def test_a_new_blob_that_does_not_open_with_the_new_secret_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The check after sealing: a broken sealer (here one that seals under a third secret, then one that seals
    another key) would leave blobs nothing opens; the command refuses before writing any."""
    third = LocalSealer(secrets.token_bytes(32))
    monkeypatch.setattr(reseal, "seal_agent_key", lambda _sealer, key, bound: seal_agent_key(third, key, bound))
    assert "wallet w-a: the new blob does not open with the new secret" in refused(
        world, capsys, caplog, world.args(), 1
    )

    def another_key(sealer: LocalSealer, _key: Any, bound: SealBinding) -> bytes:
        return sealer.seal(os.urandom(32), bound)

    monkeypatch.setattr(reseal, "seal_agent_key", another_key)
    assert "wallet w-a: the new blob does not open with the new secret" in refused(
        world, capsys, caplog, world.args(), 1
    )


@pytest.mark.parametrize("failing", ["old", "new"])
def test_a_failed_key_derivation_is_not_reported_as_a_wrong_secret(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    failing: str,
) -> None:  # fmt: skip
    """Argon2id needs 64 MiB per derivation: on a machine short of memory it fails (MemoryError), and the advice is
    to free memory, not to check the old secret file (which is right)."""
    failing_secret = world.old if failing == "old" else world.new

    class ShortOfMemory(LocalSealer):
        def _derive(self, salt: bytes) -> bytes:
            if self._secret == failing_secret:
                raise KeyDerivationError("key derivation failed")
            return super()._derive(salt)

    monkeypatch.setattr(reseal, "LocalSealer", ShortOfMemory)
    err = refused(world, capsys, caplog, world.args(), 1)
    assert "wallet w-a: the key derivation (Argon2id, 64 MiB) failed" in err and "free some memory" in err
    assert "old secret" not in err


def test_an_out_of_memory_derivation_is_a_key_derivation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives.kdf import argon2

    def out_of_memory(self: Any, secret: bytes) -> bytes:
        raise MemoryError

    monkeypatch.setattr(argon2.Argon2id, "derive", out_of_memory, raising=False)
    with pytest.raises(KeyDerivationError, match="key derivation failed"):
        LocalSealer(b"operator secret for the tests!!")._derive(bytes(16))


def test_a_wallet_in_the_middle_of_a_rotation_is_refused(
    world: World, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A candidate's blob is not resealed; once its rotation lands it is the multisig member the wallet needs, and
    under a new secret it would never open again. Reseal waits for the switch."""
    store = SqliteStore(world.database)
    try:
        wallet = store.get_wallet("w-b")
        new = Ed25519PrivateKey.generate()
        new_pub = new.public_key().public_bytes_raw()
        blob = seal_agent_key(LocalSealer(world.old), new, SealBinding("w-b", new_pub, wallet.owner_pubkey))
        candidate = AgentKeyCandidate("w-b", wallet.agent_pubkey, new_pub, blob, 1_700_000_000.0)
        store.apply_audited([SetAgentKeyCandidate(candidate)], AuditLog(store, SystemClock()).sealer(
            "agent_key.candidate", {}, wallet_id="w-b"))  # fmt: skip
    finally:
        store.close()
    err = refused(world, capsys, caplog, world.args(), 1)
    assert "wallet(s) w-b are in the middle of an agent-key rotation" in err and "finish it with the switch" in err
