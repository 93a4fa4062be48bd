"""The enclave signs off-chain messages only for a wallet whose installed policy allows them (check 2; the proxy
refuses first, check 1). Before this rule the agent key signed any valid off-chain message, with or without a
policy: a hostile parent could use it for logins or off-chain orders (found in review)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from solders.pubkey import Pubkey

from enclave_app.no_attestation import NoAttestationNsm
from enclave_app.protocol import (
    ErrorCode,
    ErrorResponse,
    InstallPolicyRequest,
    MessageSignatureResponse,
    SignMessageRequest,
)
from enclave_app.sealing import LocalSealer
from enclave_app.server import Handler
from enclave_app.state import Enclave, Wallet
from policies.signing import sign_document
from tests.enclave.policy_handler import AGENT, AGENT_KEY, NOW, OWNER, WALLET
from tests.support.offchain_messages import offchain_message
from tests.support.policies import example_policy


class _Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def _handler(
    allowed: bool | None, *, expires_at: int | None = None, clock: _Clock | None = None, **rules: Any
) -> Handler:
    """A wallet with the example policy, ``offchain_messages.allowed`` set and ``rules`` replaced; None: no policy
    installed."""
    enclave = Enclave(nsm=NoAttestationNsm(), clock=clock or _Clock())
    owner = Pubkey.from_bytes(OWNER.public_key().public_bytes_raw())
    enclave.add(Wallet(wallet_id=WALLET, owner=owner, agent_key=AGENT_KEY, agent=AGENT))
    handler = Handler(enclave, LocalSealer(b"operator secret for the tests!!"))
    if allowed is not None:
        document = example_policy()
        document["wallet_id"] = WALLET
        document["rules"]["offchain_messages"] = {"allowed": allowed}
        document["rules"].update(rules)
        if expires_at is not None:
            document["expires_at"] = expires_at
        signed = json.dumps(sign_document("policy", document, OWNER)).encode()
        assert not isinstance(asyncio.run(handler.handle(InstallPolicyRequest(WALLET, signed))), ErrorResponse)
    return handler


@pytest.mark.parametrize("allowed", [None, False], ids=["no policy", "policy forbids"])
def test_off_chain_messages_are_refused_unless_the_policy_allows_them(allowed: bool | None) -> None:
    answer = asyncio.run(_handler(allowed).handle(SignMessageRequest(WALLET, offchain_message(AGENT, "login"))))
    assert isinstance(answer, ErrorResponse)
    assert answer.code is ErrorCode.MESSAGE_INVALID
    assert "does not allow off-chain messages" in answer.message


def test_off_chain_message_is_signed_when_allowed() -> None:
    message = offchain_message(AGENT, "login")
    answer = asyncio.run(_handler(True).handle(SignMessageRequest(WALLET, message)))
    assert isinstance(answer, MessageSignatureResponse)
    AGENT_KEY.public_key().verify(answer.signature, message)


def test_off_chain_messages_stop_when_the_policy_expires() -> None:
    """Found in review: the enclave signed messages under an expired policy (transactions were denied)."""
    clock = _Clock()
    handler = _handler(True, expires_at=int(NOW.timestamp()) + 60, clock=clock)
    message = offchain_message(AGENT, "login")
    assert isinstance(asyncio.run(handler.handle(SignMessageRequest(WALLET, message))), MessageSignatureResponse)
    clock.now = NOW + timedelta(seconds=60)
    answer = asyncio.run(handler.handle(SignMessageRequest(WALLET, message)))
    assert isinstance(answer, ErrorResponse)
    assert answer.code is ErrorCode.NO_POLICY and "expired" in answer.message


def _sign(handler: Handler, text: str) -> object:
    return asyncio.run(handler.handle(SignMessageRequest(WALLET, offchain_message(AGENT, text))))


def test_off_chain_messages_follow_the_time_windows() -> None:
    """Before: the enclave signed messages at any hour, whatever the policy's time windows (noticed in review)."""
    other_day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[(NOW.weekday() + 3) % 7]
    handler = _handler(True, time_windows=[{"days": [other_day], "start": "00:00", "end": "24:00"}])
    answer = _sign(handler, "login")
    assert isinstance(answer, ErrorResponse) and answer.code is ErrorCode.MESSAGE_INVALID
    assert "refuses this message now" in answer.message


def test_off_chain_messages_count_against_the_rate_and_a_burst_freezes() -> None:
    freeze = {"on_authority_change": True, "on_delegate_approval": True, "on_close_to_stranger": True,
              "denials": {"count": 2, "window_seconds": 600}}  # fmt: skip
    clock = _Clock()
    handler = _handler(True, clock=clock, rate={"max_requests": 2, "window_seconds": 60}, freeze=freeze)
    assert [isinstance(_sign(handler, f"m{i}"), MessageSignatureResponse) for i in range(2)] == [True, True]
    third = _sign(handler, "m2")
    assert isinstance(third, ErrorResponse) and third.code is ErrorCode.MESSAGE_INVALID
    fourth = _sign(handler, "m3")  # the second denial within ten minutes: the wallet freezes
    assert isinstance(fourth, ErrorResponse) and fourth.code is ErrorCode.WALLET_FROZEN
    clock.now = NOW + timedelta(seconds=120)  # the rate window has passed, but the wallet stays frozen
    frozen = _sign(handler, "m4")
    assert isinstance(frozen, ErrorResponse) and frozen.code is ErrorCode.WALLET_FROZEN
