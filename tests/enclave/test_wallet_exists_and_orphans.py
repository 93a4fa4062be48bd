"""Review finding #4 (/tmp/s6/review_enclave.md): ``wallet_exists`` and orphan wallets.

- The enclave: two concurrent loads of one wallet with the same keys both succeed (``wallet_exists`` is left to
  mean "held with other keys"); a load with other keys is still ``wallet_exists``.
- The relay: ``wallet_exists`` from ``load_wallet`` is a refusal (503, logged), not "loaded". `signed_by`, the
  consistency check of a signed answer against the stored agent key (for the sign flow to call).
- The proxy's time limit for provision/load is above the enclave's own request limit, so a slow provisioning is
  answered to the proxy instead of leaving an orphan wallet behind a 503.

Real enclave server and handler, real Ed25519 and AES-GCM; the attesting test KMS on moto at the cloud seam.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.hash import Hash
from solders.message import Message, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction, VersionedTransaction

from enclave_app import client as enclave_client
from enclave_app.client import EnclaveClient
from enclave_app.errors import StateError
from enclave_app.protocol import AwsCredentials, ErrorCode
from enclave_app.sealing import LocalSealer, SealBinding, Sealer, Sealers
from enclave_app.server import REQUEST_TIMEOUT_SECONDS
from enclave_app.state import Wallet
from parent_proxy.__main__ import build_services
from parent_proxy.api_errors import ApiError
from parent_proxy.enclave_relay import EnclaveRelay, signed_by
from parent_proxy.settings import load_settings
from parent_proxy.store.model import Wallet as StoredWallet
from tests.support.enclave_world import EnclaveWorld, serving

WALLET = "w-orphan"


class GatedSealers:
    """The real sealers, but each unseal first waits until ``parties`` unseals are under way (so concurrent loads
    all pass the enclave's first check before any registers), and each seal first sleeps ``seal_delay``."""

    def __init__(
        self, inner: Sealers, *, parties: int = 1, seal_delay: float = 0.0, first_unseal_delay: float = 0.0
    ) -> None:
        self.inner, self.barrier, self.seal_delay = inner, threading.Barrier(parties, timeout=10), seal_delay
        self.first_unseal_delay, self.unseals, self.lock = first_unseal_delay, 0, threading.Lock()

    def for_request(self, credentials: AwsCredentials | None) -> _GatedSealer:
        return _GatedSealer(self, self.inner.for_request(credentials))


@dataclass
class _GatedSealer:
    gate: GatedSealers
    sealer: Sealer

    def seal(self, secret: bytes, binding: SealBinding) -> bytes:
        time.sleep(self.gate.seal_delay)
        return self.sealer.seal(secret, binding)

    def unseal(self, blob: bytes, binding: SealBinding) -> bytes:
        with self.gate.lock:
            first, self.gate.unseals = self.gate.unseals == 0, self.gate.unseals + 1
        self.gate.barrier.wait()
        if first:  # the first load to start registers last
            time.sleep(self.gate.first_unseal_delay)
        return self.sealer.unseal(blob, binding)

    def close(self) -> None:
        self.sealer.close()


def _wallet(wallet_id: str, owner: bytes, key: Ed25519PrivateKey) -> Wallet:
    agent = Pubkey.from_bytes(key.public_key().public_bytes_raw())
    return Wallet(wallet_id=wallet_id, owner=Pubkey.from_bytes(owner), agent_key=key, agent=agent)


# -- enclave side ---------------------------------------------------------------------------------------------


def test_registering_the_same_keys_again_is_success_and_keeps_the_held_wallet(world: EnclaveWorld) -> None:
    enclave = world.boot().enclave
    key = Ed25519PrivateKey.generate()
    held = enclave.add(_wallet(WALLET, world.owner_public, key))
    held.frozen = True  # state the held wallet has gathered (a freeze order, say) must survive

    again = enclave.add(_wallet(WALLET, world.owner_public, key))

    assert again is held and enclave.wallet(WALLET) is held and held.frozen
    assert enclave.wallet_count == 1
    with pytest.raises(StateError) as refused:
        enclave.add(_wallet(WALLET, world.owner_public, Ed25519PrivateKey.generate()))
    assert refused.value.code == ErrorCode.WALLET_EXISTS
    other_owner = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    with pytest.raises(StateError) as refused_owner:
        enclave.add(_wallet(WALLET, other_owner, key))
    assert refused_owner.value.code == ErrorCode.WALLET_EXISTS
    assert enclave.wallet(WALLET) is held


def test_two_concurrent_loads_of_one_wallet_both_succeed(world: EnclaveWorld) -> None:
    """The second load waits for the first one's unseal, then finds the wallet held (one unseal: more in
    tests/enclave/test_load_once.py)."""

    async def run() -> None:
        async with serving(world.boot()) as (client, _):
            created = await client.provision_wallet(WALLET, world.owner_public)
        assert created.sealed_blob is not None
        boot = world.boot()  # a restarted enclave; two loads race
        gate = GatedSealers(boot.handler.sealers, first_unseal_delay=0.3)
        boot.handler.sealers = gate

        async with serving(boot) as (client, _):

            async def load() -> Any:
                return await client.load_wallet(
                    WALLET, owner_public_key=world.owner_public, agent_public_key=created.agent_public_key,
                    sealed_blob=created.sealed_blob,  # type: ignore[arg-type]
                )  # fmt: skip

            answers = await asyncio.gather(load(), load(), return_exceptions=True)
        assert [type(a).__name__ for a in answers] == ["WalletResponse", "WalletResponse"], answers
        assert all(getattr(a, "agent_public_key", None) == created.agent_public_key for a in answers)
        assert boot.enclave.wallet_count == 1 and gate.unseals == 1

    asyncio.run(run())


@pytest.mark.parametrize("frozen_first", [True, False])
def test_a_concurrent_load_keeps_the_parents_freeze(world: EnclaveWorld, frozen_first: bool) -> None:
    """Two loads of one wallet race after a restart, one of them carrying the parent's freeze (its record changed
    between them): the frozen load unseals and the other waits for it, or the other way round; either way the wallet
    held is frozen at that order, as the answer says."""

    async def run() -> None:
        async with serving(world.boot()) as (client, _):
            created = await client.provision_wallet(WALLET, world.owner_public)
        assert created.sealed_blob is not None
        boot = world.boot()
        boot.handler.sealers = GatedSealers(boot.handler.sealers, first_unseal_delay=0.5)

        async with serving(boot) as (client, _):

            async def load(frozen_at_order: int | None, delay: float) -> Any:
                await asyncio.sleep(delay)
                return await client.load_wallet(
                    WALLET, owner_public_key=world.owner_public, agent_public_key=created.agent_public_key,
                    sealed_blob=created.sealed_blob, frozen_at_order=frozen_at_order,  # type: ignore[arg-type]
                )  # fmt: skip

            # The load that starts first unseals (slowly); the other waits for it, then finds the wallet held.
            first, second = (4, None) if frozen_first else (None, 4)
            answers = await asyncio.gather(load(first, 0.0), load(second, 0.1), return_exceptions=True)
        assert [type(a).__name__ for a in answers] == ["WalletResponse", "WalletResponse"], answers
        held = boot.enclave.wallet(WALLET)
        assert (held.frozen, held.order_sequence) == (True, 4)

    asyncio.run(run())


# -- relay side -----------------------------------------------------------------------------------------------


def _stored(world: EnclaveWorld, agent: bytes, sealed: bytes, policy: bytes | None = None) -> StoredWallet:
    return StoredWallet(
        WALLET, agent, world.owner_public, agent, sealed, policy_document=policy, policy_sequence=1 if policy else 0
    )


def test_relay_refuses_a_wallet_the_enclave_holds_with_other_keys(
    world: EnclaveWorld, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> None:
        async with serving(world.boot()) as (client, _):
            orphan = await client.provision_wallet(WALLET, world.owner_public)  # the proxy gave up on this one
            other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
            stored = _stored(world, other, b"\xa0" * 40, world.policy(WALLET))
            relay = EnclaveRelay(client)
            with (
                caplog.at_level(logging.ERROR, logger="parent_proxy.enclave_relay"),
                pytest.raises(ApiError) as refused,
            ):
                await relay.ensure_wallet(stored)
            assert refused.value.status == 503 and refused.value.code == "enclave_unavailable"
            assert "keys other than the stored ones" in caplog.text and WALLET in caplog.text
            assert relay._loaded == {}
            assert orphan.agent_public_key != other

    asyncio.run(run())


def _transfer(agent: bytes) -> bytes:
    payer = Pubkey.from_bytes(agent)
    ix = transfer(TransferParams(from_pubkey=payer, to_pubkey=Pubkey.new_unique(), lamports=1000))
    return bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], payer, Hash.new_unique())))


def _signed(key: Ed25519PrivateKey, unsigned: bytes) -> tuple[bytes, bytes]:
    tx = VersionedTransaction.from_bytes(unsigned)
    signature = key.sign(to_bytes_versioned(tx.message))
    return unsigned[:1] + signature + unsigned[65:], signature  # one signer: shortvec(1) + its slot


def test_signed_by_accepts_only_the_sent_transaction_signed_by_the_stored_agent_key() -> None:
    stored_key, other_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    agent = stored_key.public_key().public_bytes_raw()
    unsigned = _transfer(agent)
    signed, signature = _signed(stored_key, unsigned)
    assert signed_by(signed, signature, unsigned, agent)
    forged, forged_signature = _signed(other_key, unsigned)  # the orphan key of finding #4
    assert not signed_by(forged, forged_signature, unsigned, agent)
    assert not signed_by(signed, forged_signature, unsigned, agent)  # the answer's signature is not in the slot
    assert not signed_by(signed, signature, _transfer(agent), agent)  # another transaction than the one sent
    assert not signed_by(signed, signature, unsigned, other_key.public_key().public_bytes_raw())
    assert not signed_by(signed, signature, unsigned, None)
    assert not signed_by(b"\x01garbage", signature, unsigned, agent)


# -- time limits ----------------------------------------------------------------------------------------------


def test_the_proxy_waits_for_a_slow_provisioning_instead_of_leaving_an_orphan(world: EnclaveWorld) -> None:
    async def run() -> None:
        boot = world.boot(sealers=GatedSealers(LocalSealer(b"operator secret for the tests!!"), seal_delay=0.6))
        async with serving(boot) as (served, _):
            address = served._address
            client = EnclaveClient(address, timeout=0.2, wallet_timeout=5.0)  # 0.2 s stands for the proxy's 5 s
            created = await client.provision_wallet(WALLET, world.owner_public)
            assert created.sealed_blob is not None and boot.enclave.wallet_count == 1

    asyncio.run(run())


def test_the_proxys_wallet_time_limit_is_above_the_enclaves_request_limit(tmp_path: Any) -> None:
    wallet_limit = getattr(enclave_client, "WALLET_REQUEST_TIMEOUT_SECONDS", None)
    assert wallet_limit is not None and wallet_limit > REQUEST_TIMEOUT_SECONDS
    env = {
        "WAIAAS_STATE": f"sqlite:{tmp_path / 'state.db'}", "WAIAAS_ENCLAVE": f"unix:{tmp_path / 's'}",
        "WAIAAS_OWNER_KEYS": str(Pubkey.new_unique()), "WAIAAS_CHAIN": "litesvm", "WAIAAS_REQUIRE_MULTISIG": "false",
        "WAIAAS_PUBLIC_ORIGINS": "http://127.0.0.1:8080",
    }  # fmt: skip
    services = build_services(load_settings(env))
    client = services.relay._client
    assert client._wallet_timeout == wallet_limit and client._timeout == 5.0
