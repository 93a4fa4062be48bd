"""The enclave's wallet registry and state machine (`enclave_app.state`), at the unit level: the NSM's randomness
floor, the wallet limit, the agent-key switch's own checks, and the failed state's one log line."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from enclave_app.errors import InconsistentStateError, NsmError, StateError
from enclave_app.no_attestation import NoAttestationNsm
from enclave_app.protocol import EnclaveState, ErrorCode
from enclave_app.state import MAX_WALLETS, Enclave, Wallet, fresh_seed

NOW = datetime(2026, 1, 1, tzinfo=UTC)
OWNER = Pubkey(bytes(range(32)))


class _FixedRandomness(NoAttestationNsm):
    """The NSM seam with a chosen amount of randomness (the hardware's answer is the part faked)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def get_random(self) -> bytes:
        return b"\x07" * self.size


def _enclave(**kwargs: int) -> Enclave:
    return Enclave(nsm=NoAttestationNsm(), clock=lambda: NOW, require_multisig=False, **kwargs)  # type: ignore[arg-type]


def _wallet(wallet_id: str, key: Ed25519PrivateKey | None = None) -> Wallet:
    key = key or Ed25519PrivateKey.generate()
    return Wallet(wallet_id=wallet_id, owner=OWNER, agent_key=key, agent=Pubkey(key.public_key().public_bytes_raw()))


def test_a_seed_needs_32_bytes_of_nsm_randomness() -> None:
    with pytest.raises(NsmError, match="too little randomness"):
        fresh_seed(_FixedRandomness(31))
    seeds = {fresh_seed(_FixedRandomness(32)) for _ in range(2)}
    assert len(seeds) == 2 and all(len(seed) == 32 for seed in seeds)  # the OS generator is mixed in too
    with pytest.raises(NsmError, match="too little randomness"):
        Enclave(nsm=_FixedRandomness(0), clock=lambda: NOW, require_multisig=False)  # its session key


def test_the_wallet_limit_refuses_one_more_and_a_discard_makes_room() -> None:
    enclave = _enclave(max_wallets=2)
    first, second = _wallet("w1"), _wallet("w2")
    enclave.add(first)
    enclave.add(second)
    with pytest.raises(StateError) as refused:
        enclave.add(_wallet("w3"))
    assert refused.value.code == ErrorCode.WALLET_LIMIT and enclave.wallet_count == 2
    with pytest.raises(StateError) as refused:
        enclave.check_new("w3")
    assert refused.value.code == ErrorCode.WALLET_LIMIT
    assert enclave.add(_wallet("w1", first.agent_key)) is first  # the same wallet again is no new one
    enclave.discard("w2", bytes(second.agent))
    enclave.add(_wallet("w3"))
    assert enclave.wallet_count == 2


def test_the_default_wallet_limit_is_1024() -> None:
    # The memory bound docs/status.md states (1024 wallets, each ledger bounded): the default, and exact.
    enclave = _enclave()
    assert MAX_WALLETS == enclave.max_wallets == 1024
    key = Ed25519PrivateKey.generate()
    for index in range(1024):
        enclave._wallets[f"w{index}"] = _wallet(f"w{index}", key)  # registering 1024 keys is not what is tested
    with pytest.raises(StateError) as refused:
        enclave.check_new("one-more")
    assert refused.value.code == ErrorCode.WALLET_LIMIT
    del enclave._wallets["w0"]
    enclave.check_new("one-more")


def test_an_agent_key_switch_is_refused_for_a_wallet_not_held_or_a_key_that_does_not_match() -> None:
    enclave = _enclave()
    held = enclave.add(_wallet("w1"))
    old_key, old_agent = held.agent_key, held.agent
    new_key = Ed25519PrivateKey.generate()
    new_agent = Pubkey(new_key.public_key().public_bytes_raw())
    with pytest.raises(InconsistentStateError, match="wallet not held"):
        enclave.switch_agent_key(_wallet("w1"), new_key, new_agent)  # the same id, another object
    with pytest.raises(InconsistentStateError, match="does not match its public key"):
        enclave.switch_agent_key(held, new_key, old_agent)
    with pytest.raises(InconsistentStateError, match="does not match its public key"):
        enclave.switch_agent_key(held, old_key, new_agent)
    assert held.agent_key is old_key and held.agent == old_agent and held.agent_keys == {old_agent}
    enclave.switch_agent_key(held, new_key, new_agent)
    assert held.agent_key is new_key and held.agent == new_agent and held.agent_keys == {new_agent}


def test_the_failed_state_is_logged_once_freezes_every_wallet_and_refuses_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    enclave = _enclave()
    wallet = enclave.add(_wallet("w1"))
    with caplog.at_level(logging.ERROR, logger="enclave_app.state"):
        enclave.fail("first reason")
        enclave.fail("second reason")
    assert [record.getMessage() for record in caplog.records] == ["enclave entering the failed state: first reason"]
    assert enclave.state is EnclaveState.FAILED and wallet.frozen
    calls = (
        lambda: enclave.wallet("w1"),
        lambda: enclave.check_new("w2"),
        lambda: enclave.add(_wallet("w2")),
        lambda: enclave.add(_wallet("w1", wallet.agent_key)),  # the wallet held, with its own keys
    )
    for call in calls:
        with pytest.raises(StateError) as refused:
            call()
        assert refused.value.code == ErrorCode.FAILED
