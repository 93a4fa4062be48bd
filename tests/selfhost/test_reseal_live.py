"""``waiaas selfhost reseal`` end to end, with the real services: wallets created through the API of the compose
services (run as local processes by the runner of ``waiaas selfhost up``) under the old unseal secret, resealed by
the command as a separate process with the services stopped, then signed for by the signer started on the new
secret; started on the old secret again, the signer refuses them and the proxy is never ready. While the services
run, the command refuses (the signer answers on its socket; the proxy holds the state open).
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from enclave_app.client import EnclaveClient
from enclave_app.errors import EnclaveRequestError
from enclave_app.protocol import ErrorCode
from parent_proxy.owner_cli_common import envelope
from parent_proxy.owner_signers import LocalOwnerSigner
from parent_proxy.store.model import Wallet
from parent_proxy.store.sqlite import SqliteStore
from policies.canonical import parse_json_object
from policies.examples import example_policy_json
from selfhost import paths, reseal
from tests.selfhost.compose_config import REPO
from tests.selfhost.live_wallet import SOL, LiveWallet
from tests.selfhost.local_stack import CONTAINER_PORT, StackError, command_exists, free_port, run_stack


def _create_wallet(base: str, owner_key: Ed25519PrivateKey) -> LiveWallet:
    """As test_parity's ``wallet`` fixture: created by the owner, example policy installed, agent token issued."""
    w = LiveWallet(base, LocalOwnerSigner(owner_key), f"w-{secrets.token_hex(6)}")
    created = w.owner_call(
        "POST", "/v1/wallets", {"wallet_id": w.wallet_id, "owner_public_key": str(w.owner.public_key)}
    )
    assert created.status_code == 201, created.text
    w.agent = Pubkey.from_string(created.json()["agent_public_key"])
    document = parse_json_object(example_policy_json(), what="policy")
    document["wallet_id"] = w.wallet_id
    policy = {"envelope": envelope(w.owner, "policy", document)}
    assert w.owner_call("PUT", f"/v1/wallets/{w.wallet_id}/policy", policy).status_code == 200
    issued = w.owner_call("POST", f"/v1/wallets/{w.wallet_id}/tokens")
    assert issued.status_code == 201
    w.token = issued.json()["token"]
    return w


def _signed_by_agent(w: LiveWallet) -> None:
    response = w.sign(w.pay(SOL // 10))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "signed"
    signed = VersionedTransaction.from_bytes(base64.b64decode(response.json()["signed_transaction"]))
    Ed25519PublicKey.from_public_bytes(bytes(w.agent)).verify(
        bytes(signed.signatures[0]), to_bytes_versioned(signed.message)
    )


async def _load(root: Path, wallet: Wallet) -> None:
    client = EnclaveClient(f"unix:{root}/socket/signer.sock", timeout=30)
    await client.load_wallet(
        wallet.wallet_id,
        owner_public_key=wallet.owner_pubkey,
        agent_public_key=wallet.agent_pubkey,
        sealed_blob=wallet.sealed_key,
    )


def _reseal(root: Path, new_file: Path) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it: its own process, the installed ``waiaas`` entry points."""
    return subprocess.run(
        [sys.executable, "-m", "policies.cli", "selfhost", "reseal", "--state-dir", str(root),
         "--new-secret-file", str(new_file)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_resealed_wallets_sign_with_the_new_secret_and_not_with_the_old(
    compose_model_on: Callable[[int], dict[str, Any]], owner_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    root, port = tmp_path / "selfhost", free_port()
    compose_model = compose_model_on(port)  # owner requests are signed for http://127.0.0.1:<port>
    for service in ("signer", "proxy"):
        if not command_exists(list(compose_model["services"][service]["command"])):
            pytest.skip(f"not in this checkout yet: the {service} command")
    old, new = secrets.token_urlsafe(32).encode(), secrets.token_urlsafe(32).encode()
    new_file = tmp_path / "waiaas_unseal_secret.new"
    new_file.write_bytes(new + b"\n")
    new_file.chmod(0o400)

    def services(secret: bytes, **options: Any) -> Any:
        """The compose services on ``secret`` (written to ``root/secrets/``, where the command looks by default)."""
        values = {paths.UNSEAL_SECRET_NAME: secret}
        return run_stack(compose_model, root, secret_values=values, published={CONTAINER_PORT: port}, **options)

    base = f"http://127.0.0.1:{port}"
    with services(old):
        wallets = [_create_wallet(base, owner_key) for _ in range(3)]
        for w in wallets:
            _signed_by_agent(w)
        # Running services: refused, nothing changed. The signer answers on its socket; and the proxy holds the
        # state open (checked on its own here by pointing the command at a socket path where nothing listens).
        running = _reseal(root, new_file)
        assert running.returncode == 1
        assert "the signer is running" in running.stderr and "nothing was changed" in running.stderr
        with pytest.raises(reseal.ResealRefused, match="in use by another process"):
            reseal.reseal(root / "state" / "waiaas.db", tmp_path / "no.sock", old, new)

    done = _reseal(root, new_file)
    assert done.returncode == 0, done.stderr
    assert f"resealed {len(wallets)} wallets" in done.stdout

    with services(new) as stack:  # the operator's swap: the new secret where the old one was
        for w in wallets:
            _signed_by_agent(w)
        new_logs = {name: path.read_bytes() for name, path in stack.logs.items()}

    # Started on the old secret again: the signer opens none of the wallets, so the proxy is never ready (its
    # healthcheck, /readyz, answers 503 signer_secret_mismatch: parent_proxy.signer_secret) and its log says why.
    with pytest.raises(StackError, match="proxy not healthy") as not_ready, services(old, health_timeout=10):
        pass
    assert "another unseal secret" in str(not_ready.value)
    # The reason, asked of the signer directly: the stored blob does not open with the old secret.
    with services(old, only=["signer"]):
        store = SqliteStore(root / "state" / "waiaas.db")
        stored = store.get_wallet(wallets[0].wallet_id)
        store.close()
        with pytest.raises(EnclaveRequestError) as refusal:
            asyncio.run(_load(root, stored))
        assert refusal.value.code == ErrorCode.UNSEAL_FAILED

    verify = subprocess.run(
        [sys.executable, "-m", "policies.cli", "audit", "verify", "--db", str(root / "state" / "waiaas.db"),
         "--receipts"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr

    outputs = [
        running.stdout,
        running.stderr,
        done.stdout,
        done.stderr,
        verify.stdout,
        *map(bytes.decode, new_logs.values()),
    ]
    outputs += [path.read_text(encoding="utf-8", errors="replace") for path in (root / "logs").iterdir()]
    for secret in (old, new):
        for text in outputs:
            assert secret.decode() not in text
