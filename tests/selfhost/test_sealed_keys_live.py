"""The compose bundle's sealed-keys volume, live: the proxy and signer started from selfhost/docker-compose.yml as
local processes (`selfhost.local_stack`, the volume mapped to ``<root>/sealed``) copy each new wallet's sealed key
there, byte for byte as the state holds it, owner-only.

Before: the compose file had no such volume and the proxy no such setting; the state held the only copy."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from parent_proxy.store.sqlite import SqliteStore
from selfhost.sealed_keys import main as sealed_keys
from tests.selfhost.live_wallet import new_wallet
from tests.selfhost.local_stack import command_exists, free_port, run_stack_on


def test_a_wallet_made_on_the_compose_services_has_its_copy_in_the_sealed_keys_volume(
    compose_model_on: Callable[[int], dict[str, Any]], owner_key: Ed25519PrivateKey, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    port = free_port()
    model = compose_model_on(port)
    if not all(command_exists(list(svc["command"])) for svc in model["services"].values()):
        pytest.skip("a service command of the compose file is not in this checkout")
    with run_stack_on(model, tmp_path, port):
        wallet = new_wallet(f"http://127.0.0.1:{port}", owner_key)
    copy = tmp_path / "sealed" / wallet.wallet_id / str(wallet.agent)
    store = SqliteStore(tmp_path / "state" / "waiaas.db")
    try:
        assert copy.read_bytes() == store.get_wallet(wallet.wallet_id).sealed_key
    finally:
        store.close()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o400 and stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in (tmp_path / "sealed").iterdir()) == [wallet.wallet_id]
    assert sealed_keys(["check", str(tmp_path / "state" / "waiaas.db"), str(tmp_path / "sealed")]) == 0
    assert capsys.readouterr().out == "every sealed-key copy's key is in the state\n"
