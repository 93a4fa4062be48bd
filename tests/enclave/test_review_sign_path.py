"""Review findings on the sign path: an ``approval`` field must not change what happens to a request whose verdict
an approval cannot lift (DENY, FREEZE): such a request is still answered with its decision, counted as a denial
and, on FREEZE, freezes the wallet."""

from __future__ import annotations

import asyncio

import pytest
from solders.hash import Hash
from solders.message import Message
from solders.system_program import AssignParams, assign
from solders.transaction import Transaction

from enclave_app.protocol import (
    EnclaveState,
    SignTransactionRequest,
    TransactionDecisionResponse,
)
from enclave_app.server import Handler
from tests.enclave.sign_requests import spent, transfer_tx
from tests.support.policies import BLOCKED
from tests.support.policy_handler import AGENT, WALLET, policy_handler

GARBAGE_APPROVAL = b'{"document": {}, "signature": "not a signature"}'


def _sign(handler: Handler, raw: bytes, approval: bytes | None) -> TransactionDecisionResponse:
    answer = asyncio.run(handler.handle(SignTransactionRequest(WALLET, raw, spent=spent(), approval=approval)))
    assert isinstance(answer, TransactionDecisionResponse), answer
    return answer


def _authority_change() -> bytes:
    ix = assign(AssignParams(pubkey=AGENT, owner=BLOCKED))
    return bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], AGENT, Hash.new_unique())))


def test_freeze_verdict_freezes_even_with_an_invalid_approval_attached() -> None:
    handler = policy_handler()
    answer = _sign(handler, _authority_change(), GARBAGE_APPROVAL)
    assert answer.decision["verdict"] == "freeze" and answer.signature is None
    assert handler.enclave.wallet(WALLET).frozen
    assert handler.enclave.state is EnclaveState.FROZEN


@pytest.mark.parametrize("approval", [None, GARBAGE_APPROVAL], ids=["no approval", "invalid approval"])
def test_denials_with_an_invalid_approval_count_towards_the_burst_freeze(approval: bytes | None) -> None:
    # The example policy freezes the wallet at the 5th denial within 600 s; the parent reports none.
    handler = policy_handler()
    denied = transfer_tx(AGENT, 1000, to=BLOCKED)
    verdicts = [_sign(handler, denied, approval).decision["verdict"] for _ in range(5)]
    assert verdicts == ["deny"] * 4 + ["freeze"]
    assert handler.enclave.wallet(WALLET).frozen
