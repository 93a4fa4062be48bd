"""The state directory the ``waiaas selfhost reseal`` tests work on (test_reseal.py, test_reseal_restore.py): a real
state database (SqliteStore) holding wallets sealed by the signer's own ``LocalSealer`` under an old secret, a new
secret beside it, and the checks every refusal makes (the database bytes and every blob unchanged, nothing secret
in the output)."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_app.errors import SealingError
from enclave_app.sealing import LocalSealer, SealBinding, seal_agent_key, unseal_agent_key
from parent_proxy.audit import iter_audit_records
from parent_proxy.store.model import Wallet
from parent_proxy.store.sqlite import SqliteStore
from policies.cli import main
from selfhost import paths, reseal

WALLETS = ("w-a", "w-b", "w-c", "w-d")


@dataclass
class World:
    """A state directory laid out as ``waiaas selfhost up`` leaves it, and what the test knows about it."""

    root: Path
    old: bytes
    new: bytes
    new_file: Path
    seeds: dict[str, bytes]
    salts: list[bytes]
    """The Argon2id salts of every blob the test has seen (each secret derives one key per salt)."""

    @property
    def database(self) -> Path:
        return self.root / "state" / "waiaas.db"

    @property
    def old_file(self) -> Path:
        return self.root / "secrets" / paths.UNSEAL_SECRET_NAME

    def args(self, *extra: str) -> list[str]:
        return ["selfhost", "reseal", "--state-dir", str(self.root), "--new-secret-file", str(self.new_file), *extra]

    def wallets(self) -> dict[str, Wallet]:
        store = SqliteStore(self.database)
        try:
            return {w: store.get_wallet(w) for w in WALLETS}
        finally:
            store.close()

    def fingerprint(self) -> tuple[str, bool, dict[str, bytes]]:
        """The database file's bytes (no WAL is left once every connection closed), and every blob."""
        digest = hashlib.sha256(self.database.read_bytes()).hexdigest()
        wal = self.database.with_name("waiaas.db-wal").exists()
        with reseal.exclusive_state(self.database) as conn:
            blobs = {w.wallet_id: w.sealed_key for w in reseal.read_wallets(conn, self.database)}
        return digest, wal, blobs


def audit_log(world: World) -> list[Any]:
    store = SqliteStore(world.database)
    try:
        return list(iter_audit_records(store))
    finally:
        store.close()


def secret_file(path: Path, content: bytes, mode: int = 0o400) -> Path:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)
    return path


def binding(wallet: Wallet) -> SealBinding:
    return SealBinding(wallet.wallet_id, wallet.agent_pubkey, wallet.owner_pubkey)


def provision(store: SqliteStore, sealer: LocalSealer, wallet_id: str, owner: bytes) -> bytes:
    """A wallet as the signer's provisioning stores it: a fresh key sealed under ``sealer`` with its binding."""
    key = Ed25519PrivateKey.generate()
    agent = key.public_key().public_bytes_raw()
    blob = seal_agent_key(sealer, key, SealBinding(wallet_id, agent, owner))
    store.create_wallet(Wallet(wallet_id, agent, owner, os.urandom(32), blob))
    return key.private_bytes_raw()


def make_world(tmp_path: Path) -> World:
    """Four wallets sealed under a fresh old secret in ``tmp_path/selfhost`` (w-b frozen), a new secret beside."""
    root = tmp_path / "selfhost"
    # A trailing newline, as `echo` or an editor leaves it: the signer strips it, so must reseal.
    old = secrets.token_urlsafe(32).encode()
    new = secrets.token_urlsafe(32).encode()
    secret_file(root / "secrets" / paths.UNSEAL_SECRET_NAME, old + b"\n")
    new_file = secret_file(tmp_path / "new_secret", new + b"\r\n")
    (root / "state").mkdir(mode=0o700)
    store = SqliteStore(root / "state" / "waiaas.db")
    sealer, owner = LocalSealer(old), os.urandom(32)
    seeds = {w: provision(store, sealer, w, owner) for w in WALLETS}
    store.set_frozen("w-b", True, "owner freeze")  # a frozen wallet is resealed like any other
    salts = [cbor2.loads(store.get_wallet(w).sealed_key)["salt"] for w in WALLETS]
    store.close()
    return World(root, old, new, new_file, seeds, salts)


def opens(sealer: LocalSealer, wallet: Wallet) -> bytes | None:
    try:
        return unseal_agent_key(sealer, wallet.sealed_key, binding(wallet)).private_bytes_raw()
    except SealingError:
        return None


def forbidden(world: World) -> list[bytes]:
    """Byte strings that must appear nowhere: both secrets (raw, hex, base64), every agent seed, and the key each
    secret derives for every blob's salt (what the old and the new blobs are encrypted under)."""
    values = [world.old, world.new, *world.seeds.values()]
    salts = {*world.salts, *(cbor2.loads(w.sealed_key)["salt"] for w in world.wallets().values())}
    for secret in (world.old, world.new):
        values += [LocalSealer(secret)._derive(salt) for salt in salts]
    encoded = []
    for value in values:
        encoded += [value, value.hex().encode(), base64.b64encode(value), base64.urlsafe_b64encode(value)]
    return encoded


def assert_nothing_secret(world: World, *texts: str | bytes) -> None:
    values = forbidden(world)
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        for value in values:
            assert value not in data


def refused(
    world: World, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, args: list[str], code: int
) -> str:
    """Run ``args``, expect exit ``code`` and a refusal that changed nothing and printed nothing secret."""
    caplog.set_level(logging.DEBUG)
    before = world.fingerprint()
    assert main(args) == code
    out, err = capsys.readouterr()
    assert world.fingerprint() == before
    assert err.startswith("selfhost reseal: refused: ") and err.rstrip().endswith("nothing was changed")
    assert_nothing_secret(world, out, err, caplog.text)
    return err
