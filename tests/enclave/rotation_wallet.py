"""A wallet whose policy declares a Squads multisig, the owner's rotation orders for it, awaited refusals, and a
served boot to run them on."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from enclave_app.client import EnclaveClient
from enclave_app.errors import EnclaveRequestError
from enclave_app.protocol import AgentKeyResponse
from enclave_app.state import Enclave
from policies.orders import AGENT_KEY_ROTATION_PURPOSE, AGENT_KEY_SWITCH_PURPOSE, rotation_document, switch_document
from tests.support.enclave_world import Boot, EnclaveWorld, serving
from tests.support.squads_rotation import rotation_transaction

WALLET = "wallet-rot"
MULTISIG = Pubkey.from_string("7Yb4ZqFQmKQ6nqpYkY5ZbL8kS4hW1bWq3m8qfXkJ9XnA")
T = TypeVar("T")


def run(boot: Boot, body: Callable[[EnclaveClient], Awaitable[T]]) -> T:
    """``body`` with a client of ``boot`` served (the real server, over TCP)."""

    async def go() -> T:
        async with serving(boot) as (client, _):
            return await body(client)

    return asyncio.run(go())


def refused(code: str, call: Awaitable[Any]) -> Awaitable[None]:
    async def go() -> None:
        with pytest.raises(EnclaveRequestError) as caught:
            await call
        assert caught.value.code == code, caught.value

    return go()


class Rotation:
    """A provisioned wallet whose policy declares ``MULTISIG``, and the owner's documents for its rotation."""

    def __init__(self, world: EnclaveWorld, client: EnclaveClient) -> None:
        self.world = world
        self.client = client
        self.agent = Pubkey.from_bytes(b"\0" * 32)
        self.blob = b""

    async def setup(self, **rules: Any) -> Rotation:
        provisioned = await self.client.provision_wallet(WALLET, self.world.owner_public)
        assert provisioned.sealed_blob is not None
        self.agent, self.blob = Pubkey.from_bytes(provisioned.agent_public_key), provisioned.sealed_blob
        rules.setdefault("squads_multisig", str(MULTISIG))
        await self.client.install_policy(WALLET, self.world.policy(WALLET, **rules))
        return self

    @property
    def owner(self) -> Pubkey:
        return Pubkey.from_bytes(self.world.owner_public)

    def expires(self, lifetime: int = 600) -> int:
        return int(self.world.clock.now.timestamp()) + lifetime

    def transaction(self, new_agent: Pubkey, **changes: Any) -> bytes:
        return rotation_transaction(MULTISIG, owner=self.owner, agent=self.agent, new_agent=new_agent, **changes)

    def rotation_order(self, raw: bytes, new_agent: Pubkey, *, agent: Pubkey | None = None, **kw: Any) -> bytes:
        message = to_bytes_versioned(VersionedTransaction.from_bytes(raw).message)
        document = rotation_document(
            WALLET, agent or self.agent, new_agent, hashlib.sha256(message).digest(), self.expires()
        )
        return self.world.signed(AGENT_KEY_ROTATION_PURPOSE, document, **kw)

    def switch_order(self, new_agent: Pubkey, *, agent: Pubkey | None = None, **kw: Any) -> bytes:
        return self.world.signed(AGENT_KEY_SWITCH_PURPOSE, switch_document(WALLET, agent or self.agent, new_agent,
                                                                     self.expires()), **kw)  # fmt: skip

    async def candidate(self) -> AgentKeyResponse:
        return await self.client.prepare_agent_key(WALLET)

    def cosign_request(self, candidate: AgentKeyResponse, raw: bytes | None = None) -> dict[str, Any]:
        """The arguments of a co-signature of ``raw`` (default: the rotation to the candidate's key) as the owner
        orders it: the transaction, the owner's rotation order naming it and the candidate's key, the candidate's
        sealed blob."""
        new, blob = new_key(candidate)
        raw = self.transaction(new) if raw is None else raw
        return {"transaction": raw, "order": self.rotation_order(raw, new), "candidate_sealed_blob": blob}


def new_key(candidate: AgentKeyResponse) -> tuple[Pubkey, bytes]:
    """The candidate's new agent key and its sealed blob."""
    assert candidate.sealed_blob is not None
    return Pubkey.from_bytes(candidate.new_agent_public_key), candidate.sealed_blob


def held_agent(enclave: Enclave) -> Pubkey:
    return enclave.wallet(WALLET).agent
