"""Review of agent-key rotation in the enclave: what a hostile parent can replay or substitute (owner orders it has
seen, another wallet's candidate blob, orders for another wallet). Every case must be refused and leave the key as
it was. Real server, client, attesting test KMS; transactions from the IDL-driven helpers."""

from __future__ import annotations

import asyncio
from typing import Any

from enclave_app.client import EnclaveClient
from enclave_app.protocol import AgentKeyResponse
from tests.enclave.rotation_wallet import MULTISIG, WALLET, Rotation, held_agent, new_key, refused
from tests.support.enclave_world import EnclaveWorld, serving

OTHER = "wallet-rot-2"


async def _rotate(r: Rotation, candidate: AgentKeyResponse) -> tuple[bytes, bytes, bytes]:
    """Co-sign and switch to ``candidate``; return the transaction, the rotation order and the switch order used."""
    new, blob = new_key(candidate)
    raw = r.transaction(new)
    order = r.rotation_order(raw, new)
    await r.client.sign_agent_key_rotation(WALLET, transaction=raw, order=order, candidate_sealed_blob=blob)
    switch = r.switch_order(new)
    await r.client.switch_agent_key(WALLET, order=switch, candidate_sealed_blob=blob)
    r.agent = new
    return raw, order, switch


def _run(world: EnclaveWorld, body: Any) -> None:
    boot = world.boot()

    async def go() -> None:
        async with serving(boot) as (client, _):
            await body(boot, client)

    asyncio.run(go())


def test_a_candidate_of_another_wallet_of_the_same_owner_is_refused(world: EnclaveWorld) -> None:
    """Same owner, same multisig in both policies: the other wallet's candidate blob opens only for that wallet."""

    async def body(boot: Any, client: EnclaveClient) -> None:
        r = await Rotation(world, client).setup()
        await client.provision_wallet(OTHER, world.owner_public)
        await client.install_policy(OTHER, world.policy(OTHER, squads_multisig=str(MULTISIG)))
        foreign, blob = new_key(await client.prepare_agent_key(OTHER))
        raw = r.transaction(foreign)
        order = r.rotation_order(raw, foreign)
        await refused("unseal_failed", client.sign_agent_key_rotation(
            WALLET, transaction=raw, order=order, candidate_sealed_blob=blob))  # fmt: skip
        await refused("unseal_failed", client.switch_agent_key(
            WALLET, order=r.switch_order(foreign), candidate_sealed_blob=blob))  # fmt: skip
        assert held_agent(boot.enclave) == r.agent

    _run(world, body)


def test_orders_for_another_wallet_are_refused(world: EnclaveWorld) -> None:
    async def body(boot: Any, client: EnclaveClient) -> None:
        r = await Rotation(world, client).setup()
        await client.provision_wallet(OTHER, world.owner_public)
        await client.install_policy(OTHER, world.policy(OTHER, squads_multisig=str(MULTISIG)))
        new, blob = new_key(await r.candidate())
        raw = r.transaction(new)
        # The owner's orders for WALLET, sent for OTHER (whose key they do not name either).
        await refused("order_invalid", client.sign_agent_key_rotation(
            OTHER, transaction=raw, order=r.rotation_order(raw, new), candidate_sealed_blob=blob))  # fmt: skip
        await refused("order_invalid", client.switch_agent_key(
            OTHER, order=r.switch_order(new), candidate_sealed_blob=blob))  # fmt: skip
        assert held_agent(boot.enclave) == r.agent

    _run(world, body)


def test_a_rotation_order_replayed_after_the_switch_signs_nothing(world: EnclaveWorld) -> None:
    async def body(boot: Any, client: EnclaveClient) -> None:
        r = await Rotation(world, client).setup()
        candidate = await r.candidate()
        raw, order, _ = await _rotate(r, candidate)
        _, blob = new_key(candidate)
        await refused("order_invalid", client.sign_agent_key_rotation(
            WALLET, transaction=raw, order=order, candidate_sealed_blob=blob))  # fmt: skip
        assert held_agent(boot.enclave) == r.agent

    _run(world, body)


def test_a_switch_order_replayed_after_a_second_rotation_does_not_switch_back(world: EnclaveWorld) -> None:
    """A -> C, then C -> D within the hour: the A -> C switch order (with C's blob) is refused and D stays."""

    async def body(boot: Any, client: EnclaveClient) -> None:
        r = await Rotation(world, client).setup()
        first = await r.candidate()
        _, _, first_switch = await _rotate(r, first)
        await _rotate(r, await r.candidate())
        _, first_blob = new_key(first)
        await refused("order_invalid", client.switch_agent_key(
            WALLET, order=first_switch, candidate_sealed_blob=first_blob))  # fmt: skip
        assert held_agent(boot.enclave) == r.agent

    _run(world, body)
