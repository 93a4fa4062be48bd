"""Review findings on the sign path: an ``approval`` field must not change what happens to a request whose verdict
an approval cannot lift (DENY, FREEZE): such a request is still answered with its decision, counted as a denial
and, on FREEZE, freezes the wallet."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.hash import Hash
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import AssignParams, assign
from solders.transaction import Transaction

from enclave_app.no_attestation import NoAttestationNsm
from enclave_app.protocol import (
    EnclaveState,
    ErrorResponse,
    InstallPolicyRequest,
    SignTransactionRequest,
    TransactionDecisionResponse,
)
from enclave_app.sealing import LocalSealer
from enclave_app.server import Handler
from enclave_app.state import Enclave, Wallet
from policies.signing import sign_document
from tests.enclave.test_enclave_e2e import spent, transfer_tx
from tests.support.policies import BLOCKED, example_policy

NOW = datetime(2032, 2, 3, 4, 5, 6, tzinfo=UTC)
WALLET = "w-review"
OWNER = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)
AGENT_KEY = Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)
AGENT = Pubkey.from_bytes(AGENT_KEY.public_key().public_bytes_raw())

GARBAGE_APPROVAL = b'{"document": {}, "signature": "not a signature"}'


def _handler() -> Handler:
    enclave = Enclave(nsm=NoAttestationNsm(), clock=lambda: NOW)
    owner = Pubkey.from_bytes(OWNER.public_key().public_bytes_raw())
    enclave.add(Wallet(wallet_id=WALLET, owner=owner, agent_key=AGENT_KEY, agent=AGENT))
    handler = Handler(enclave, LocalSealer(b"operator secret for the tests!!"))
    document = example_policy()
    document["wallet_id"] = WALLET
    signed = json.dumps(sign_document("policy", document, OWNER)).encode()
    answer = asyncio.run(handler.handle(InstallPolicyRequest(WALLET, signed)))
    assert not isinstance(answer, ErrorResponse), answer
    return handler


def _sign(handler: Handler, raw: bytes, approval: bytes | None) -> TransactionDecisionResponse:
    answer = asyncio.run(handler.handle(SignTransactionRequest(WALLET, raw, spent=spent(), approval=approval)))
    assert isinstance(answer, TransactionDecisionResponse), answer
    return answer


def _authority_change() -> bytes:
    ix = assign(AssignParams(pubkey=AGENT, owner=BLOCKED))
    return bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], AGENT, Hash.new_unique())))


def test_freeze_verdict_freezes_even_with_an_invalid_approval_attached() -> None:
    handler = _handler()
    answer = _sign(handler, _authority_change(), GARBAGE_APPROVAL)
    assert answer.decision["verdict"] == "freeze" and answer.signature is None
    assert handler.enclave.wallet(WALLET).frozen
    assert handler.enclave.state is EnclaveState.FROZEN


@pytest.mark.parametrize("approval", [None, GARBAGE_APPROVAL], ids=["no approval", "invalid approval"])
def test_denials_with_an_invalid_approval_count_towards_the_burst_freeze(approval: bytes | None) -> None:
    # The example policy freezes the wallet at the 5th denial within 600 s; the parent reports none.
    handler = _handler()
    denied = transfer_tx(AGENT, 1000, to=BLOCKED)
    verdicts = [_sign(handler, denied, approval).decision["verdict"] for _ in range(5)]
    assert verdicts == ["deny"] * 4 + ["freeze"]
    assert handler.enclave.wallet(WALLET).frozen
