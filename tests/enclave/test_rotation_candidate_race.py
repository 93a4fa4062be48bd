"""A candidate key sealed while the enclave failed or the wallet's key changed is not handed out (mutation testing,
twenty-fourth session: the check after `prepare_agent_key`'s sealing, which runs off the loop, had no test)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from enclave_app import rotation
from enclave_app.client import EnclaveClient
from enclave_app.sealing import seal_for_request
from tests.enclave.rotation_wallet import WALLET, Rotation, held_agent, refused, run
from tests.support.enclave_world import EnclaveWorld


def test_prepare_refuses_when_the_enclave_fails_while_the_candidate_is_sealed(
    world: EnclaveWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wallet is read before the candidate is sealed (a KMS call, in a worker thread) and checked again after:
    an enclave that failed meanwhile answers ``failed``, with no candidate and no receipt."""
    boot = world.boot()
    real = seal_for_request

    def enclave_fails_meanwhile(*args: Any) -> bytes:
        blob = real(*args)
        boot.enclave.fail("test: failed while sealing")
        return blob

    async def body(client: EnclaveClient) -> None:
        await Rotation(world, client).setup()
        monkeypatch.setattr(rotation, "seal_for_request", enclave_fails_meanwhile)
        await refused("failed", client.prepare_agent_key(WALLET))

    run(boot, body)


def test_prepare_refuses_when_the_agent_key_changes_while_the_candidate_is_sealed(
    world: EnclaveWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A switch that lands while the candidate is sealed (the same wallet, another agent key): ``wrong_state``, and
    no candidate receipt naming the key that is no longer the wallet's."""
    boot = world.boot()
    real = seal_for_request
    other = Ed25519PrivateKey.generate()

    def key_switches_meanwhile(*args: Any) -> bytes:
        blob = real(*args)
        wallet = boot.enclave.wallet(WALLET)
        boot.enclave.switch_agent_key(wallet, other, Pubkey.from_bytes(other.public_key().public_bytes_raw()))
        return blob

    async def body(client: EnclaveClient) -> None:
        await Rotation(world, client).setup()
        monkeypatch.setattr(rotation, "seal_for_request", key_switches_meanwhile)
        await refused("wrong_state", client.prepare_agent_key(WALLET))

    run(boot, body)


def test_switch_refuses_when_another_key_lands_while_the_candidate_opens(
    world: EnclaveWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order names the wallet's key before the candidate's blob is opened (off the loop); if a third key is the
    wallet's by then, the order no longer replaces the wallet's key: ``order_invalid``, and the third key stays."""
    boot = world.boot()
    real = rotation._open_candidate
    other = Ed25519PrivateKey.generate()
    other_public = Pubkey.from_bytes(other.public_key().public_bytes_raw())

    async def key_switches_meanwhile(*args: Any) -> Ed25519PrivateKey:
        key = await real(*args)
        boot.enclave.switch_agent_key(boot.enclave.wallet(WALLET), other, other_public)
        return key

    async def body(client: EnclaveClient) -> None:
        r = await Rotation(world, client).setup()
        candidate = await r.candidate()
        assert candidate.sealed_blob is not None
        order = r.switch_order(Pubkey.from_bytes(candidate.new_agent_public_key))
        monkeypatch.setattr(rotation, "_open_candidate", key_switches_meanwhile)
        await refused(
            "order_invalid", client.switch_agent_key(WALLET, order=order, candidate_sealed_blob=candidate.sealed_blob)
        )
        assert held_agent(boot.enclave) == other_public

    run(boot, body)
