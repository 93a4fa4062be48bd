"""Findings of the sixth session's review of the enclave lifecycle (each test failed before its fix).

- Two Argon2id derivations at once (two wallets loaded or provisioned together with the local sealer) never
  returned, and the next one raised MemoryError, which moved the signer to the failed state.
- A key derivation that fails is a sealing failure (``unseal_failed``), not an inconsistency of the enclave.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from enclave_app.client import EnclaveClient
from enclave_app.errors import EnclaveRequestError, SealingError
from enclave_app.no_attestation import NoAttestationNsm
from enclave_app.protocol import EnclaveState
from enclave_app.sealing import LocalSealer, SealBinding, seal_agent_key, unseal_agent_key
from enclave_app.server import EnclaveServer, Handler
from enclave_app.state import Enclave
from enclave_app.transport import UnixAddress
from tests.enclave.test_review_sign_path import NOW, OWNER

SECRET = b"operator secret for the tests!!"
OWNER_PUBLIC = OWNER.public_key().public_bytes_raw()


def sealed(wallet_id: str) -> tuple[bytes, bytes]:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    return public, seal_agent_key(LocalSealer(SECRET), key, SealBinding(wallet_id, public, OWNER_PUBLIC))


async def serve(tmp_path: Path) -> tuple[Enclave, asyncio.Server, EnclaveClient]:
    path = str(tmp_path / "signer.sock")
    enclave = Enclave(nsm=NoAttestationNsm(), clock=lambda: NOW)
    server = await EnclaveServer(Handler(enclave, LocalSealer(SECRET)), request_timeout=10).start(UnixAddress(path))
    return enclave, server, EnclaveClient(UnixAddress(path), timeout=15)


def concurrent_loads(directory: str) -> None:
    """Three loads and a provisioning at once through the real server; prints the outcome, then exits at once (a
    derivation stuck in a worker thread would otherwise keep the process alive for ever)."""
    blobs = {w: sealed(w) for w in ("w1", "w2", "w3")}

    async def main() -> None:
        enclave, server, client = await serve(Path(directory))
        async with server:
            loads = [
                client.load_wallet(w, owner_public_key=OWNER_PUBLIC, agent_public_key=p, sealed_blob=b)
                for w, (p, b) in blobs.items()
            ]
            done = await asyncio.gather(*loads, client.provision_wallet("w4", OWNER_PUBLIC), return_exceptions=True)
            failures = [f"{type(r).__name__}: {r}" for r in done if isinstance(r, BaseException)]
            print(f"state={enclave.state.value} wallets={enclave.wallet_count} failures={failures}", flush=True)

    asyncio.run(main())
    os._exit(0)


def test_wallets_loaded_and_provisioned_at_the_same_time_all_succeed(tmp_path: Path) -> None:
    code = f"from tests.enclave.test_review_lifecycle import concurrent_loads; concurrent_loads({str(tmp_path)!r})"
    try:
        run = subprocess.run(
            [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=90,
            cwd=Path(__file__).parents[2],
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("concurrent wallet loads did not finish within 90 s (key derivations stuck)")
    assert run.stdout.strip() == "state=provisioned wallets=4 failures=[]", (run.stdout, run.stderr[-2000:])


def test_a_failing_key_derivation_is_a_sealing_error_and_the_signer_stays_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public, blob = sealed("w1")
    binding = SealBinding("w1", public, OWNER_PUBLIC)

    def exhausted(self: Argon2id, secret: bytes) -> bytes:
        raise MemoryError("Not enough memory to derive key")

    monkeypatch.setattr(Argon2id, "derive", exhausted)
    with pytest.raises(SealingError, match="key derivation failed"):
        unseal_agent_key(LocalSealer(SECRET), blob, binding)

    async def main() -> None:
        enclave, server, client = await serve(tmp_path)
        async with server:
            with pytest.raises(EnclaveRequestError) as refused:
                await client.load_wallet("w1", owner_public_key=OWNER_PUBLIC, agent_public_key=public, sealed_blob=blob)
            assert refused.value.code == "unseal_failed"
            assert enclave.state is not EnclaveState.FAILED and enclave.wallet_count == 0
            monkeypatch.undo()
            await client.load_wallet("w1", owner_public_key=OWNER_PUBLIC, agent_public_key=public, sealed_blob=blob)
            assert enclave.wallet_count == 1

    asyncio.run(asyncio.wait_for(main(), 60))
