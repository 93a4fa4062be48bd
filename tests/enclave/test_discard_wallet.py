"""`discard_wallet`: the enclave drops a wallet the parent could not store after provisioning it.

Before: the enclave kept such a key until it restarted, and refused the wallet id meanwhile (`wallet_exists`), so a
creation whose store write failed could not be sent again. Only a wallet held with the named agent key and never
given a policy is dropped (one that could sign stays), and never a frozen one: before, a frozen wallet without a
policy was dropped with its freeze, and its id could be provisioned again unfrozen. Real server, local sealer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from enclave_app.errors import EnclaveRequestError
from enclave_app.protocol import EnclaveState, ErrorCode
from policies.signing import sign_document
from tests.support.policies import example_policy
from tests.support.policy_handler import OWNER, owner_order
from tests.support.served_enclave import OWNER_PUBLIC, run_served, sealed


async def refused(call: Any, code: ErrorCode) -> None:
    with pytest.raises(EnclaveRequestError) as caught:
        await call
    assert caught.value.code == code


def test_an_orphan_is_dropped_and_its_id_provisioned_again(tmp_path: Path) -> None:
    async def steps(enclave: Any, client: Any) -> None:
        first = await client.provision_wallet("w1", OWNER_PUBLIC)
        await refused(client.provision_wallet("w1", OWNER_PUBLIC), ErrorCode.WALLET_EXISTS)  # the orphan's id
        status = await client.discard_wallet("w1", agent_public_key=first.agent_public_key)
        assert (status.state, status.wallets, enclave.wallet_count) == (EnclaveState.BOOTING, 0, 0)
        second = await client.provision_wallet("w1", OWNER_PUBLIC)
        assert second.agent_public_key != first.agent_public_key
        assert bytes(enclave.wallet("w1").agent) == second.agent_public_key

    run_served(tmp_path, steps)


def test_only_a_wallet_held_with_the_named_key_and_without_a_policy_is_dropped(tmp_path: Path) -> None:
    async def steps(enclave: Any, client: Any) -> None:
        held = await client.provision_wallet("w1", OWNER_PUBLIC)
        await refused(client.discard_wallet("w1", agent_public_key=bytes(32)), ErrorCode.WALLET_EXISTS)
        await refused(client.discard_wallet("w9", agent_public_key=held.agent_public_key), ErrorCode.UNKNOWN_WALLET)
        document = {**example_policy(), "wallet_id": "w1"}
        await client.install_policy("w1", json.dumps(sign_document("policy", document, OWNER)).encode())
        await refused(client.discard_wallet("w1", agent_public_key=held.agent_public_key), ErrorCode.WRONG_STATE)
        assert enclave.wallet("w1").policy is not None and enclave.state is EnclaveState.READY

    run_served(tmp_path, steps)


def test_a_frozen_wallet_keeps_its_freeze_and_its_id(tmp_path: Path) -> None:
    async def steps(enclave: Any, client: Any) -> None:
        held = await client.provision_wallet("w1", OWNER_PUBLIC)
        await client.freeze("w1", owner_order("w1", 3, freeze=True))  # no policy yet: the owner's order is taken
        await refused(client.discard_wallet("w1", agent_public_key=held.agent_public_key), ErrorCode.WALLET_FROZEN)
        wallet = enclave.wallet("w1")
        assert (wallet.frozen, wallet.order_sequence, enclave.state) == (True, 3, EnclaveState.FROZEN)
        await refused(client.provision_wallet("w1", OWNER_PUBLIC), ErrorCode.WALLET_EXISTS)  # not made again unfrozen
        await client.unfreeze("w1", owner_order("w1", 4, freeze=False))  # the owner lifts it: nothing left to keep
        await client.discard_wallet("w1", agent_public_key=held.agent_public_key)
        assert enclave.wallet_count == 0

    run_served(tmp_path, steps)


def test_a_wallet_loaded_frozen_by_the_parent_is_not_discarded(tmp_path: Path) -> None:
    public, blob = sealed("w2")

    async def steps(enclave: Any, client: Any) -> None:
        load = {"owner_public_key": OWNER_PUBLIC, "agent_public_key": public, "sealed_blob": blob}
        await client.load_wallet("w2", **load, frozen_at_order=6)
        await refused(client.discard_wallet("w2", agent_public_key=public), ErrorCode.WALLET_FROZEN)
        assert enclave.wallet("w2").frozen and enclave.state is EnclaveState.FROZEN

    run_served(tmp_path, steps)
