"""``python -m selfhost.sealed_keys`` (`selfhost.sealed_keys`) on copies the real proxy, enclave and store wrote
(`tests.proxy.api_harness` with the sealed-keys directory): finding the keys a restored state lost, and putting a
damaged blob back from its copy so that it opens again to the wallet's agent key.

Before: a self-hosted state was the only holder of each sealed key; a state restored from an older backup lost the
keys made since without a trace, and a damaged blob had nothing to be put back from."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from solders.pubkey import Pubkey

from enclave_app.sealing import LocalSealer, SealBinding, unseal_agent_key
from selfhost.sealed_keys import AUDIT_EVENT, main
from tests.proxy.api_harness import OPERATOR_SECRET, Harness, copying_harness


@pytest.fixture
def sealed(tmp_path: Path) -> Path:
    return tmp_path / "sealed"


@pytest.fixture
def h(tmp_path: Path, sealed: Path) -> Iterator[Harness]:
    yield from copying_harness(tmp_path, sealed, provisioned=True)


def state(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


def backup(database: Path, to: Path) -> Path:
    """A copy of the state as docs/selfhost.md's Backup takes one (SQLite's backup API)."""
    source, copy = sqlite3.connect(database), sqlite3.connect(to)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return to


def test_check_lists_the_keys_a_restored_state_lost(
    h: Harness, tmp_path: Path, sealed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    older = backup(state(tmp_path), tmp_path / "backup.db")
    made = h.owner_call("POST", "/v1/wallets", {"wallet_id": "w-later", "owner_public_key": str(h.owner_pub)})
    assert made.status_code == 201, made.text
    later = made.json()["agent_public_key"]
    assert main(["check", str(state(tmp_path)), str(sealed)]) == 0
    assert capsys.readouterr().out == "every sealed-key copy's key is in the state\n"
    assert main(["check", str(older), str(sealed)]) == 1
    assert capsys.readouterr().out == f"not in the state: w-later/{later}\n"


def test_put_back_replaces_a_damaged_blob_with_its_copy_and_audits_it(
    h: Harness, tmp_path: Path, sealed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = h.store.get_wallet(h.wallet_id).sealed_key
    connection = sqlite3.connect(state(tmp_path))
    with connection:
        connection.execute("UPDATE wallets SET sealed_key = ? WHERE wallet_id = ?", (b"\x00damaged", h.wallet_id))
    connection.close()
    assert main(["put-back", str(state(tmp_path)), str(sealed), h.wallet_id]) == 0
    assert capsys.readouterr().out == f"wallet {h.wallet_id}: sealed key put back from its copy\n"
    wallet = h.store.get_wallet(h.wallet_id)
    assert wallet.sealed_key == good
    binding = SealBinding(h.wallet_id, wallet.agent_pubkey, wallet.owner_pubkey)
    opened = unseal_agent_key(LocalSealer(OPERATOR_SECRET), wallet.sealed_key, binding)
    assert Pubkey.from_bytes(opened.public_key().public_bytes_raw()) == h.agent
    (record,) = [r for r in h.store.audit_records(0, 10_000) if r.event_type == AUDIT_EVENT]
    assert record.wallet_id == h.wallet_id and str(h.agent) in record.payload.decode()
    assert main(["put-back", str(state(tmp_path)), str(sealed), h.wallet_id]) == 0  # again: nothing to do
    assert "the state already holds its copy's bytes; nothing written" in capsys.readouterr().out
    assert [r.event_type for r in h.store.audit_records(0, 10_000)].count(AUDIT_EVENT) == 1


@pytest.mark.parametrize(
    "case",
    [
        ("w-none", None, "holds no wallet w-none"),
        ("w1", "remove the copy", "no copy of wallet w1's agent key: "),
        ("../w1", None, "'../w1' is not a wallet id"),
    ],
)
def test_put_back_refuses_and_writes_nothing(
    h: Harness, tmp_path: Path, sealed: Path, capsys: pytest.CaptureFixture[str], case: tuple[str, str | None, str]
) -> None:
    wallet, arrange, message = case
    if arrange == "remove the copy":
        (sealed / "w1" / str(h.agent)).unlink()
    blob = h.store.get_wallet("w1").sealed_key
    records = len(h.store.audit_records(0, 10_000))
    assert main(["put-back", str(state(tmp_path)), str(sealed), wallet]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sealed_keys: ") and message in err, err
    assert len(h.store.audit_records(0, 10_000)) == records
    assert h.store.get_wallet("w1").sealed_key == blob


def test_bad_arguments_print_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "only-one"]) == 2
    assert capsys.readouterr().err.startswith("usage: python -m selfhost.sealed_keys check STATE.db SEALED_DIR\n")
