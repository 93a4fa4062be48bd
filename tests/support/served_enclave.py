"""An enclave served over a Unix socket in the test process (the real server and client, the local sealer, the
fixed time and owner key of `tests.support.policy_handler`), and agent keys sealed for it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_app.client import EnclaveClient
from enclave_app.no_attestation import NoAttestationNsm
from enclave_app.sealing import LocalSealer, SealBinding, seal_agent_key
from enclave_app.server import EnclaveServer, Handler
from enclave_app.state import Enclave
from enclave_app.transport import UnixAddress
from tests.support.policy_handler import NOW, OWNER

SECRET = b"operator secret for the tests!!"
OWNER_PUBLIC = OWNER.public_key().public_bytes_raw()


def sealed(wallet_id: str) -> tuple[bytes, bytes]:
    """A new agent key for ``wallet_id`` (owner `OWNER`): its public key and its blob sealed under `SECRET`."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    return public, seal_agent_key(LocalSealer(SECRET), key, SealBinding(wallet_id, public, OWNER_PUBLIC))


async def serve(tmp_path: Path) -> tuple[Enclave, asyncio.Server, EnclaveClient]:
    """An enclave at ``NOW`` served on ``tmp_path/signer.sock``, and a client of it (``WAIAAS_ENCLAVE_REQUIRE_MULTISIG``
    false: the example policy the tests install declares no multisig)."""
    path = str(tmp_path / "signer.sock")
    enclave = Enclave(nsm=NoAttestationNsm(), clock=lambda: NOW, require_multisig=False)
    server = await EnclaveServer(Handler(enclave, LocalSealer(SECRET)), request_timeout=10).start(UnixAddress(path))
    return enclave, server, EnclaveClient(UnixAddress(path), timeout=15)


def run_served(tmp_path: Path, steps: Callable[[Enclave, EnclaveClient], Awaitable[None]]) -> None:
    """``steps(enclave, client)`` against a served enclave (`serve`), within a minute."""

    async def main() -> None:
        enclave, server, client = await serve(tmp_path)
        async with server:
            await steps(enclave, client)

    asyncio.run(asyncio.wait_for(main(), 60))


def concurrent_loads(directory: str) -> None:
    """Three loads and a provisioning at once through the real server; prints the outcome, then exits at once (a
    derivation stuck in a worker thread would otherwise keep the process alive for ever). Run in a child process."""
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
