"""``waiaas selfhost reseal`` on a state restored from a backup exactly as docs/selfhost.md says (Backup: a copy
switched to ``journal_mode = DELETE``; Restore: SQLite's backup of that copy into a fresh state file, which keeps
DELETE), resealed from an old secret kept outside the state directory to the secret the services read (Restore,
after a reseal); a refusal on such a state changes nothing, not even its journal mode. And what the command says
to do next when neither secret file is where the services read it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from enclave_app.sealing import LocalSealer
from policies.cli import main
from tests.selfhost.reseal_world import WALLETS, World, make_world, opens, secret_file

ROLLBACK_HEADER, WAL_HEADER = b"\x01\x01", b"\x02\x02"
"""Bytes 18-19 of an SQLite file (its read and write format versions): 1 in a rollback-journal mode, 2 in WAL."""


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def header(database: Path) -> bytes:
    return database.read_bytes()[18:20]


def backup_and_restore(world: World, backup_dir: Path) -> None:
    """The commands of docs/selfhost.md, Backup then Restore, on the world's state (the proxy stopped)."""
    backup_dir.mkdir()
    copy = sqlite3.connect(backup_dir / "waiaas.db")
    source = sqlite3.connect(world.database)
    source.backup(copy)
    source.close()
    copy.execute("PRAGMA journal_mode = DELETE")
    copy.close()
    world.database.unlink()
    source, target = sqlite3.connect(backup_dir / "waiaas.db"), sqlite3.connect(world.database)
    source.backup(target)
    source.close()
    target.close()
    assert header(world.database) == ROLLBACK_HEADER


def swap_secrets(world: World, tmp_path: Path) -> Path:
    """Rotation, step 5, done after the backup: the services read the new secret; the old one is kept elsewhere."""
    kept = secret_file(tmp_path / "old_secret", world.old)
    world.old_file.chmod(0o600)
    world.old_file.unlink()
    secret_file(world.old_file, world.new)
    return kept


def reseal_args(world: World, old: Path, new: Path) -> list[str]:
    return ["selfhost", "reseal", "--state-dir", str(world.root), "--old-secret-file", str(old),
            "--new-secret-file", str(new)]  # fmt: skip


def test_a_restored_backup_is_resealed_from_the_old_secret_to_the_one_in_use(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup_and_restore(world, tmp_path / "backup")
    kept = swap_secrets(world, tmp_path)
    assert main(reseal_args(world, kept, world.old_file)) == 0
    out, err = capsys.readouterr()
    assert header(world.database) == WAL_HEADER  # switched by the store that wrote the blobs, as a proxy would
    wallets = world.wallets()
    for wallet_id in WALLETS:
        assert opens(LocalSealer(world.new), wallets[wallet_id]) == world.seeds[wallet_id]
    assert f"resealed {len(WALLETS)} wallets" in out and not err
    # The new secret is already where the services read it: no "put it in place of" the file kept elsewhere.
    assert (
        f"The stored blobs now open only with {world.old_file}, which is where the services read the secret: start "
        f"them, and keep {kept} until they sign again." in out
    )
    assert "in place of" not in out


def test_a_refusal_on_a_restored_backup_leaves_it_as_it_was(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused for the reason that applies (here the wrong old secret), not for the journal mode; the file keeps its
    bytes, so also its DELETE mode."""
    backup_and_restore(world, tmp_path / "backup")
    kept = swap_secrets(world, tmp_path)
    wrong = secret_file(tmp_path / "wrong", b"a secret that opens none of them")
    before = world.database.read_bytes()
    assert main(reseal_args(world, wrong, world.old_file)) == 1
    err = capsys.readouterr().err
    assert "wallet w-a: its sealed key does not open with the old secret" in err
    assert err.rstrip().endswith("nothing was changed")
    assert world.database.read_bytes() == before and header(world.database) == ROLLBACK_HEADER
    assert not world.database.with_name("waiaas.db-wal").exists()
    assert main(reseal_args(world, kept, world.old_file)) == 0


def test_with_neither_secret_where_the_services_read_it_the_hint_names_no_swap(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both files named outside the state directory (WAIAAS_UNSEAL_SECRET_PATH elsewhere): the command cannot know
    which file the services read, so it does not tell the operator to put the new one in place of the old one."""
    kept = secret_file(tmp_path / "old_secret", world.old)
    world.old_file.chmod(0o600)
    world.old_file.unlink()
    assert main(reseal_args(world, kept, world.new_file)) == 0
    out = capsys.readouterr().out
    assert (
        f"The stored blobs now open only with {world.new_file}: make it the secret the services read before "
        f"starting them (by default {world.old_file}), and keep {kept} until they sign again." in out
    )
    assert "in place of" not in out
