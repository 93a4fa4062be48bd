"""The enclave records every off-chain message its policy decision or decoding refuses as a denial in the wallet's
ledger (check 2; `policies.message_decision.judge_message`), as it does a refused transaction, so that messages count
towards the denial burst of ``freeze.denials``, and the denial that completes the burst freezes the wallet.

Before: a message that did not decode, that did not name the agent key among its signers, or that the policy did not
allow was refused without any ledger record (found in review): an agent could send such messages without end and
never reach the burst that freezes the wallet, while the same bytes sent as transactions froze it at the fifth.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from solders.pubkey import Pubkey

from enclave_app.protocol import ErrorCode, ErrorResponse, MessageSignatureResponse, SignMessageRequest
from enclave_app.receipts import verify_receipt
from enclave_app.server import Handler
from enclave_app.state import Wallet
from tests.support.offchain_messages import offchain_message
from tests.support.policy_handler import AGENT, NOW, WALLET, SettableClock, offchain_handler

BURST = {"on_authority_change": True, "on_delegate_approval": True, "on_close_to_stranger": True,
         "denials": {"count": 3, "window_seconds": 600}}  # fmt: skip
"""Three denials within ten minutes freeze the wallet."""

REFUSED = {
    "not an off-chain message": (True, b"garbage", "not a valid off-chain message"),
    "agent key not a signer": (True, offchain_message(Pubkey.new_unique(), "login"), "not a signer"),
    "policy forbids messages": (False, offchain_message(AGENT, "login"), "does not allow off-chain messages"),
}


def _wallet(handler: Handler) -> Wallet:
    return handler.enclave.wallet(WALLET)


def _counts(handler: Handler, now: float) -> tuple[int, int]:
    """The ledger's requests and denials within the last ten minutes."""
    ledger = _wallet(handler).ledger
    return ledger.count(ledger.requests, 600, now), ledger.count(ledger.denials, 600, now)


def _send(handler: Handler, message: bytes) -> Any:
    return asyncio.run(handler.handle(SignMessageRequest(WALLET, message)))


@pytest.mark.parametrize(("allowed", "message", "why"), REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_message_is_a_denial_and_a_burst_of_them_freezes(allowed: bool, message: bytes, why: str) -> None:
    handler = offchain_handler(allowed, freeze=BURST)
    now = NOW.timestamp()
    for denied in (1, 2):
        answer = _send(handler, message)
        assert isinstance(answer, ErrorResponse) and answer.code is ErrorCode.MESSAGE_INVALID
        assert why in answer.message
        assert _counts(handler, now) == (denied, denied)
        assert not _wallet(handler).frozen
    third = _send(handler, message)  # the third denial within ten minutes
    assert isinstance(third, ErrorResponse) and third.code is ErrorCode.WALLET_FROZEN
    assert _wallet(handler).frozen and _counts(handler, now) == (3, 3)
    # Frozen: refused before anything is judged, nothing more recorded.
    after = _send(handler, offchain_message(AGENT, "login"))
    assert isinstance(after, ErrorResponse) and after.code is ErrorCode.WALLET_FROZEN
    assert _counts(handler, now) == (3, 3)


def test_refused_messages_and_transactions_share_the_burst() -> None:
    """A refused message counts with the denials of transactions: the ledger is one per wallet."""
    handler = offchain_handler(True, freeze=BURST)
    ledger = _wallet(handler).ledger
    ledger.record(NOW.timestamp(), denied=True, signed=())  # a denied transaction, two in fact
    ledger.record(NOW.timestamp(), denied=True, signed=())
    answer = _send(handler, b"garbage")
    assert isinstance(answer, ErrorResponse) and answer.code is ErrorCode.WALLET_FROZEN
    assert _wallet(handler).frozen


def test_a_message_under_an_expired_policy_is_a_denial() -> None:
    """As a transaction under an expired policy is (rule ``policy_expired``); still answered ``no_policy``."""
    clock = SettableClock()
    handler = offchain_handler(True, expires_at=int(NOW.timestamp()) + 60, clock=clock, freeze=BURST)
    clock.now = NOW + timedelta(seconds=60)
    answer = _send(handler, offchain_message(AGENT, "login"))
    assert isinstance(answer, ErrorResponse) and answer.code is ErrorCode.NO_POLICY and "expired" in answer.message
    assert _counts(handler, clock.now.timestamp()) == (1, 1)


def test_without_a_policy_nothing_is_recorded() -> None:
    """No policy installed: refused as before, nothing to count against (as for a transaction)."""
    handler = offchain_handler(None)
    answer = _send(handler, b"garbage")
    assert isinstance(answer, ErrorResponse) and answer.code is ErrorCode.MESSAGE_INVALID
    assert _counts(handler, NOW.timestamp()) == (0, 0)


def test_a_signed_message_is_a_request_not_a_denial() -> None:
    handler = offchain_handler(True, freeze=BURST)
    assert isinstance(_send(handler, offchain_message(AGENT, "login")), MessageSignatureResponse)
    assert _counts(handler, NOW.timestamp()) == (1, 0)


def test_messages_prune_the_ledger_as_transactions_do() -> None:
    """A wallet that only signs messages gives back its ledger room once its requests leave the policy's horizon
    (else message requests alone would fill it, and the wallet be refused ``ledger_full``)."""
    clock = SettableClock()
    handler = offchain_handler(True, clock=clock, freeze=BURST)
    ledger = _wallet(handler).ledger
    assert isinstance(_send(handler, offchain_message(AGENT, "login")), MessageSignatureResponse)
    assert isinstance(_send(handler, b"garbage"), ErrorResponse)
    assert ledger.held == 3  # two requests, one denial
    clock.now = NOW + timedelta(seconds=_wallet(handler).horizon + 1)
    assert isinstance(_send(handler, offchain_message(AGENT, "login")), MessageSignatureResponse)
    assert ledger.held == 1  # only the new request: the others left with the horizon


def test_a_signed_messages_receipt_states_the_enclaves_clock_in_milliseconds() -> None:
    clock = SettableClock()
    clock.now = NOW + timedelta(milliseconds=1234)
    handler = offchain_handler(True, clock=clock)
    answer = _send(handler, offchain_message(AGENT, "login"))
    assert isinstance(answer, MessageSignatureResponse)
    receipt = verify_receipt(answer.receipt, answer.receipt_signature, handler.enclave.session.public_key)
    assert receipt.time_ms == int(NOW.timestamp()) * 1000 + 1234 and receipt.verdict == "allow"
