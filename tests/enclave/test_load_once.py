"""One unseal at a time per wallet id (`enclave_app.server.Handler._load`): after a restart, loads of one wallet that
arrive together cost one unseal, not one each (review: availability after a signer restart), and a parent sending
loads concurrently, some with other keys or a damaged blob, changes nothing it could not change one at a time.

Real enclave server and handler, real sealing on the attesting test KMS (moto) at the cloud seam; the sealers are
wrapped by a spy that counts unseals and holds each until the test releases it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_app.client import EnclaveClient
from enclave_app.errors import EnclaveRequestError
from enclave_app.protocol import EnclaveState, ErrorCode, WalletResponse
from tests.support.enclave_world import Boot, EnclaveWorld, serving
from tests.support.unseal_spy import Arrivals, SpySealers

WALLET = "w-load-once"
LOADS = 8


async def _provisioned(world: EnclaveWorld) -> WalletResponse:
    async with serving(world.boot()) as (client, _):
        created = await client.provision_wallet(WALLET, world.owner_public)
    assert created.sealed_blob is not None
    return created


def _restarted(world: EnclaveWorld) -> tuple[Boot, SpySealers, Arrivals]:
    boot = world.boot()
    spy = SpySealers(boot.handler.sealers)
    boot.handler.sealers = spy
    return boot, spy, Arrivals(boot.handler)


async def _load(client: EnclaveClient, world: EnclaveWorld, agent: bytes, blob: bytes, **extra: Any) -> Any:
    return await client.load_wallet(
        WALLET, owner_public_key=world.owner_public, agent_public_key=agent, sealed_blob=blob, **extra
    )


def test_concurrent_loads_of_one_wallet_unseal_it_once(world: EnclaveWorld) -> None:
    async def run() -> None:
        created = await _provisioned(world)
        assert created.sealed_blob is not None
        boot, spy, arrivals = _restarted(world)
        async with serving(boot) as (client, _):
            loads = [
                asyncio.ensure_future(_load(client, world, created.agent_public_key, created.sealed_blob))
                for _ in range(LOADS)
            ]
            await arrivals.reach(LOADS)  # every load is in the enclave, one of them unsealing
            spy.release.set()
            answers = await asyncio.gather(*loads, return_exceptions=True)
        loaded = [a for a in answers if isinstance(a, WalletResponse)]
        assert len(loaded) == LOADS, answers
        assert {a.agent_public_key for a in loaded} == {created.agent_public_key}
        assert (spy.unseals, spy.peak) == (1, 1)
        assert boot.enclave.wallet_count == 1 and boot.enclave.state is EnclaveState.PROVISIONED
        assert boot.handler._unsealing == {}  # nothing kept once the loads ended

    asyncio.run(run())


def test_a_load_that_fails_to_unseal_leaves_the_waiting_load_to_unseal_in_its_turn(world: EnclaveWorld) -> None:
    """The first load's blob is damaged: it fails alone, and the load that waited for it unseals its own blob after
    it (never both at once), and the wallet is held."""

    async def run() -> None:
        created = await _provisioned(world)
        assert created.sealed_blob is not None
        damaged = created.sealed_blob[:-1] + bytes([created.sealed_blob[-1] ^ 1])
        boot, spy, arrivals = _restarted(world)
        async with serving(boot) as (client, _):
            first = asyncio.ensure_future(_load(client, world, created.agent_public_key, damaged))
            await asyncio.to_thread(spy.started.wait, 10)
            second = asyncio.ensure_future(_load(client, world, created.agent_public_key, created.sealed_blob))
            await arrivals.reach(2)
            spy.release.set()
            answers = await asyncio.gather(first, second, return_exceptions=True)
        failed = answers[0]  # the damaged byte is in the KMS-wrapped data key: KMS refuses to decrypt it
        assert isinstance(failed, EnclaveRequestError) and failed.code == ErrorCode.KMS_UNAVAILABLE, answers
        assert isinstance(answers[1], WalletResponse), answers
        assert (spy.unseals, spy.peak) == (2, 1)
        assert boot.enclave.wallet_count == 1 and boot.enclave.state is EnclaveState.PROVISIONED

    asyncio.run(run())


def test_concurrent_loads_with_other_keys_or_a_freeze_change_only_what_one_at_a_time_would(
    world: EnclaveWorld,
) -> None:
    """While one load unseals, a (hostile) parent sends more: one naming another agent key (refused
    ``wallet_exists``, as it would be once the wallet is held, and nothing unsealed for it), one with the same keys
    carrying a freeze (taken: the wallet held is frozen at that order), one with the same keys and garbage for a
    blob (answered as a load of a held wallet is: nothing unsealed). The enclave does not fail."""

    async def run() -> None:
        created = await _provisioned(world)
        assert created.sealed_blob is not None
        blob, agent = created.sealed_blob, created.agent_public_key
        other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        boot, spy, arrivals = _restarted(world)
        async with serving(boot) as (client, _):
            first = asyncio.ensure_future(_load(client, world, agent, blob))
            await asyncio.to_thread(spy.started.wait, 10)
            others = [
                asyncio.ensure_future(_load(client, world, other, blob)),
                asyncio.ensure_future(_load(client, world, agent, blob, frozen_at_order=3)),
                asyncio.ensure_future(_load(client, world, agent, b"\x00" * len(blob))),
            ]
            await arrivals.reach(4)
            spy.release.set()
            answers = await asyncio.gather(first, *others, return_exceptions=True)
        refused = answers[1]
        assert isinstance(refused, EnclaveRequestError) and refused.code == ErrorCode.WALLET_EXISTS, answers
        loaded = [answers[0], *answers[2:]]
        assert all(isinstance(a, WalletResponse) and a.agent_public_key == agent for a in loaded), answers
        assert spy.unseals == 1
        held = boot.enclave.wallet(WALLET)
        assert bytes(held.agent) == agent and (held.frozen, held.order_sequence) == (True, 3)
        assert boot.enclave.wallet_count == 1 and boot.enclave.state is EnclaveState.FROZEN

    asyncio.run(run())
