"""The enclave signs off-chain messages only for a wallet whose installed policy allows them (check 2; the proxy
refuses first, check 1). Before this rule the agent key signed any valid off-chain message, with or without a
policy: a hostile parent could use it for logins or off-chain orders (found in review)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from enclave_app.protocol import (
    ErrorCode,
    ErrorResponse,
    MessageSignatureResponse,
    SignMessageRequest,
)
from enclave_app.server import Handler
from tests.support.offchain_messages import offchain_message
from tests.support.policy_handler import AGENT, AGENT_KEY, NOW, WALLET, SettableClock, offchain_handler


@pytest.mark.parametrize("allowed", [None, False], ids=["no policy", "policy forbids"])
def test_off_chain_messages_are_refused_unless_the_policy_allows_them(allowed: bool | None) -> None:
    answer = asyncio.run(offchain_handler(allowed).handle(SignMessageRequest(WALLET, offchain_message(AGENT, "login"))))
    assert isinstance(answer, ErrorResponse)
    assert answer.code is ErrorCode.MESSAGE_INVALID
    assert "does not allow off-chain messages" in answer.message


def test_off_chain_message_is_signed_when_allowed() -> None:
    message = offchain_message(AGENT, "login")
    answer = asyncio.run(offchain_handler(True).handle(SignMessageRequest(WALLET, message)))
    assert isinstance(answer, MessageSignatureResponse)
    AGENT_KEY.public_key().verify(answer.signature, message)


def test_off_chain_messages_stop_when_the_policy_expires() -> None:
    """Found in review: the enclave signed messages under an expired policy (transactions were denied)."""
    clock = SettableClock()
    handler = offchain_handler(True, expires_at=int(NOW.timestamp()) + 60, clock=clock)
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
    handler = offchain_handler(True, time_windows=[{"days": [other_day], "start": "00:00", "end": "24:00"}])
    answer = _sign(handler, "login")
    assert isinstance(answer, ErrorResponse) and answer.code is ErrorCode.MESSAGE_INVALID
    assert "refuses this message now" in answer.message


def test_off_chain_messages_count_against_the_rate_and_a_burst_freezes() -> None:
    freeze = {"on_authority_change": True, "on_delegate_approval": True, "on_close_to_stranger": True,
              "denials": {"count": 2, "window_seconds": 600}}  # fmt: skip
    clock = SettableClock()
    handler = offchain_handler(True, clock=clock, rate={"max_requests": 2, "window_seconds": 60}, freeze=freeze)
    assert [isinstance(_sign(handler, f"m{i}"), MessageSignatureResponse) for i in range(2)] == [True, True]
    third = _sign(handler, "m2")
    assert isinstance(third, ErrorResponse) and third.code is ErrorCode.MESSAGE_INVALID
    fourth = _sign(handler, "m3")  # the second denial within ten minutes: the wallet freezes
    assert isinstance(fourth, ErrorResponse) and fourth.code is ErrorCode.WALLET_FROZEN
    clock.now = NOW + timedelta(seconds=120)  # the rate window has passed, but the wallet stays frozen
    frozen = _sign(handler, "m4")
    assert isinstance(frozen, ErrorResponse) and frozen.code is ErrorCode.WALLET_FROZEN
