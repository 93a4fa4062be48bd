"""The enclave signs off-chain messages only for a wallet whose installed policy allows them (check 2; the proxy
refuses first, check 1). Before this rule the agent key signed any valid off-chain message, with or without a
policy: a hostile parent could use it for logins or off-chain orders (found in review)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

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
from tests.enclave.test_review_sign_path import AGENT, AGENT_KEY, NOW, OWNER, WALLET
from tests.proxy.test_api_misc import offchain_message
from tests.support.policies import example_policy


class _Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def _handler(allowed: bool | None, *, expires_at: int | None = None, clock: _Clock | None = None) -> Handler:
    """A wallet with the example policy, ``offchain_messages.allowed`` set; None: no policy installed."""
    enclave = Enclave(nsm=NoAttestationNsm(), clock=clock or _Clock())
    owner = Pubkey.from_bytes(OWNER.public_key().public_bytes_raw())
    enclave.add(Wallet(wallet_id=WALLET, owner=owner, agent_key=AGENT_KEY, agent=AGENT))
    handler = Handler(enclave, LocalSealer(b"operator secret for the tests!!"))
    if allowed is not None:
        document = example_policy()
        document["wallet_id"] = WALLET
        document["rules"]["offchain_messages"] = {"allowed": allowed}
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
