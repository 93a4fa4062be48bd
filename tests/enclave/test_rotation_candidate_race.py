"""A candidate key sealed while the enclave failed is not handed out (mutation testing, twenty-fourth session: the
check after `prepare_agent_key`'s sealing, which runs off the loop, had no test)."""

from __future__ import annotations

from typing import Any

import pytest

from enclave_app import rotation
from enclave_app.client import EnclaveClient
from tests.enclave.rotation_wallet import WALLET, Rotation, refused, run
from tests.support.enclave_world import EnclaveWorld


def test_prepare_refuses_when_the_enclave_fails_while_the_candidate_is_sealed(
    world: EnclaveWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wallet is read before the candidate is sealed (a KMS call, in a worker thread) and checked again after:
    an enclave that failed meanwhile answers ``failed``, with no candidate and no receipt."""
    boot = world.boot()
    real = rotation.seal_for_request

    def enclave_fails_meanwhile(*args: Any) -> bytes:
        blob = real(*args)
        boot.enclave.fail("test: failed while sealing")
        return blob

    async def body(client: EnclaveClient) -> None:
        await Rotation(world, client).setup()
        monkeypatch.setattr(rotation, "seal_for_request", enclave_fails_meanwhile)
        await refused("failed", client.prepare_agent_key(WALLET))

    run(boot, body)
