"""Sealed agent keys copied into the sealed-keys directory (``WAIAAS_SEALED_KEYS_DIR``, `parent_proxy.sealed_directory`)
by the real proxy, enclave and store: the self-hosted counterpart of tests/proxy/test_api_sealed_copies.py.

Before: self-hosted, the state held the only copy of each sealed key, so a state restored from an older backup lost
the keys of every wallet (and candidate) made since."""

from __future__ import annotations

import base64
import logging
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey

from parent_proxy.errors import NotFound
from tests.proxy.api_harness import Harness, copying_harness, provision
from tests.proxy.rotation_requests import agent_key_path, multisig_wallet

BROKEN = ["the directory is gone", "a file holds the wallet's name"]


@pytest.fixture
def sealed(tmp_path: Path) -> Path:
    return tmp_path / "sealed"


@pytest.fixture
def h(tmp_path: Path, sealed: Path) -> Iterator[Harness]:
    yield from copying_harness(tmp_path, sealed)


def copies(sealed: Path) -> dict[str, bytes]:
    return {str(p.relative_to(sealed)): p.read_bytes() for p in sealed.rglob("*") if p.is_file()}


def break_directory(sealed: Path, wallet_id: str, how: str) -> None:
    if how == "the directory is gone":  # the volume not mounted, say
        shutil.rmtree(sealed)
    else:
        (sealed / wallet_id).write_bytes(b"")


def mend_directory(sealed: Path, wallet_id: str, how: str) -> None:
    if how == "the directory is gone":
        sealed.mkdir(mode=0o700)
    else:
        (sealed / wallet_id).unlink()


def _assert_503(answer: Any) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == {
        "code": "store_unavailable", "message": "the sealed agent key's copy could not be stored; nothing was created"
    }  # fmt: skip


def test_a_new_wallets_sealed_key_is_copied_into_the_directory(h: Harness, sealed: Path) -> None:
    provision(h)
    assert copies(sealed) == {f"{h.wallet_id}/{h.agent}": h.store.get_wallet(h.wallet_id).sealed_key}
    assert stat.S_IMODE((sealed / h.wallet_id / str(h.agent)).stat().st_mode) == 0o400
    assert stat.S_IMODE((sealed / h.wallet_id).stat().st_mode) == 0o700


@pytest.mark.parametrize("how", BROKEN)
def test_a_wallet_whose_copy_cannot_be_written_is_not_created(
    h: Harness, sealed: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Fail-safe: no wallet is stored whose sealed key has no copy; the enclave drops the key it made, so the
    owner's same creation works once the directory does."""
    body_ = {"wallet_id": "w-new", "owner_public_key": str(h.owner_pub)}
    assert h.client.get("/readyz").status_code == 200
    before = h.audit_events()
    break_directory(sealed, "w-new", how)
    with caplog.at_level(logging.WARNING):
        _assert_503(h.owner_call("POST", "/v1/wallets", body_))
    with pytest.raises(NotFound, match="wallet w-new not found"):
        h.store.get_wallet("w-new")
    assert h.audit_events() == before
    assert "the sealed key of wallet w-new could not be copied to the sealed-keys directory: writing w-new/" in (
        caplog.text
    )
    mend_directory(sealed, "w-new", how)
    assert copies(sealed) == {}
    again = h.owner_call("POST", "/v1/wallets", body_)
    assert again.status_code == 201, again.text  # the enclave dropped the first key: the id is free
    agent = again.json()["agent_public_key"]
    assert copies(sealed) == {f"w-new/{agent}": h.store.get_wallet("w-new").sealed_key}


@pytest.mark.parametrize("how", BROKEN)
def test_a_rotation_candidate_gets_its_own_copy_before_it_is_kept(h: Harness, sealed: Path, how: str) -> None:
    multisig_wallet(h)
    first = copies(sealed)
    assert list(first) == [f"{h.wallet_id}/{h.agent}"]
    if how == "the directory is gone":
        break_directory(sealed, h.wallet_id, how)
    else:  # the wallet's directory exists already: make it unusable the other way, a file in its place
        shutil.rmtree(sealed / h.wallet_id)
        break_directory(sealed, h.wallet_id, how)
    _assert_503(h.owner_call("POST", agent_key_path(h, "/candidate")))
    assert h.store.get_agent_key_candidate(h.wallet_id) is None
    assert "agent_key.candidate" not in h.audit_events()
    mend_directory(sealed, h.wallet_id, how)
    (sealed / h.wallet_id).mkdir(mode=0o700, exist_ok=True)
    made = h.owner_call("POST", agent_key_path(h, "/candidate"))
    assert made.status_code == 201, made.text
    candidate = h.store.get_agent_key_candidate(h.wallet_id)
    assert candidate is not None
    new = Pubkey.from_bytes(candidate.candidate_pubkey)
    assert str(new) == made.json()["candidate_public_key"] and new != h.agent
    assert copies(sealed) == {f"{h.wallet_id}/{new}": candidate.sealed_key}  # the first one went with the rmtree
    assert candidate.sealed_key != next(iter(first.values()))


def test_a_rotation_candidate_is_copied_beside_the_wallets_key(h: Harness, sealed: Path) -> None:
    multisig_wallet(h)
    made = h.owner_call("POST", agent_key_path(h, "/candidate"))
    assert made.status_code == 201, made.text
    candidate = h.store.get_agent_key_candidate(h.wallet_id)
    assert candidate is not None
    new = Pubkey.from_bytes(candidate.candidate_pubkey)
    assert copies(sealed) == {
        f"{h.wallet_id}/{h.agent}": h.store.get_wallet(h.wallet_id).sealed_key,
        f"{h.wallet_id}/{new}": candidate.sealed_key,
    }


def test_no_sealed_blob_reaches_the_log(h: Harness, sealed: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        provision(h)
        break_directory(sealed, "w2", BROKEN[1])
        _assert_503(h.owner_call("POST", "/v1/wallets", {"wallet_id": "w2", "owner_public_key": str(h.owner_pub)}))
    blob = h.store.get_wallet(h.wallet_id).sealed_key
    assert "could not be copied to the sealed-keys directory" in caplog.text
    for form in (blob, base64.b64encode(blob), blob.hex().encode()):
        assert form.decode("latin-1") not in caplog.text
