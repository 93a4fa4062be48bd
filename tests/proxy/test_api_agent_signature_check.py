"""A signed enclave answer must carry the stored agent key's signature over exactly the requested message, checked
right after its receipt (`signed_answer.check_agent_signature` with `enclave_relay.signed_by`; for an off-chain message
`message_checks.record_signed_message`).

A stand-in enclave on the socket (the transport seam) attests its own session key and answers with a receipt that
verifies under it and agrees with the answer, so that only the signature can be at fault: signed by another key
(an enclave holding the wallet with an orphan key, review finding #4), the agent's signature in another signer's
slot, or the agent's signature over another transaction or message. Each is refused as a receipt that does not
verify is: 503 ``enclave_unavailable``, nothing signed returned or submitted, the reservation released, the
idempotency key free (a retry reaches the enclave again), an owner approval back to pending, audit
``transaction.failed`` / ``message.failed`` with the reason and no ``transaction.signed`` / ``message.signed``. The
same stand-in signing with the real agent key (unsealed from the stored blob) is signed: the control.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.hash import Hash
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from enclave_app.protocol import MessageSignatureResponse, TransactionDecisionResponse
from enclave_app.receipts import SessionKey
from parent_proxy.message_checks import NOT_THE_AGENT_KEY as MESSAGE_NOT_THE_AGENT_KEY
from parent_proxy.sign_parts import message_hash
from parent_proxy.signed_answer import NOT_THE_AGENT_KEY
from tests.proxy.api_harness import (
    LAMPORTS_PER_SOL,
    Harness,
    approve_escalated,
    pending_approval_ids,
    sign_in_slot,
    signed_receipt,
    stand_in_decision,
)
from tests.proxy.harness_calls import pending_reservations, records, sign_message
from tests.proxy.stand_in import StandIn, submissions
from tests.support.offchain_messages import offchain_message
from tests.support.policies import MERCHANT


def signed_answer(
    h: Harness, tx: bytes, signed: bytes, signature: bytes, **receipt: Any
) -> Callable[[SessionKey], TransactionDecisionResponse]:
    """A signed decision (``signed``, ``signature``) whose receipt for ``tx`` the attested session key signed."""

    def make(session: SessionKey) -> TransactionDecisionResponse:
        fields: dict[str, Any] = {"verdict": "allow", **receipt}
        encoded, receipt_signature = signed_receipt(session, h.wallet_id, message_hash=message_hash(tx), **fields)
        return TransactionDecisionResponse(
            decision=stand_in_decision(fields["verdict"]), signature=signature, signed_transaction=signed,
            receipt=encoded, receipt_signature=receipt_signature,
        )  # fmt: skip

    return make


def paid_by_another(h: Harness, lamports: int = 1000) -> bytes:
    """A transfer from the agent whose fee payer is another key: two signer slots, the agent's second."""
    payer = Pubkey.new_unique()
    ix = transfer(TransferParams(from_pubkey=h.agent, to_pubkey=MERCHANT, lamports=lamports))
    return bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], payer, Hash.new_unique())))


def failure(h: Harness, event: str) -> dict[str, Any]:
    last = records(h)[-1]
    assert last.event_type == event, [r.event_type for r in records(h)]
    payload: dict[str, Any] = json.loads(last.payload)
    return payload


def assert_refused(h: Harness, response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "enclave_unavailable"
    assert "not the wallet's agent key's" in response.json()["error"]["message"]
    assert "signed_transaction" not in response.text and "signature" not in response.json()
    assert pending_reservations(h) == [] and h.spent() == 0
    assert "transaction.signed" not in [r.event_type for r in records(h)]


# -- the control: the stand-in signs as the real enclave does --------------------------------------------------------


@pytest.mark.parametrize("two_signers", [False, True], ids=["agent pays", "another key pays"])
def test_the_stored_agent_keys_signature_in_its_slot_is_handed_out(stand_in: StandIn, two_signers: bool) -> None:
    h = stand_in.h
    tx = paid_by_another(h) if two_signers else h.transfer(1000, MERCHANT)
    signed, signature = sign_in_slot(stand_in.agent, tx, 1 if two_signers else 0)
    stand_in.answer(signed_answer(h, tx, signed, signature))
    sent = submissions(h)
    response = h.sign(tx, submit=True)
    assert response.status_code == 200, response.text
    assert base64.b64decode(response.json()["signed_transaction"]) == signed
    assert sent == [signed]
    assert "transaction.signed" in [r.event_type for r in records(h)]


# -- the signature is not the stored agent key's over the requested transaction -------------------------------------


Fault = Callable[[StandIn], tuple[bytes, bytes, bytes]]
"""The requested transaction, and the signed transaction and signature the stand-in answers for it."""


def another_key(s: StandIn) -> tuple[bytes, bytes, bytes]:
    tx = s.h.transfer(1000, MERCHANT)
    return (tx, *sign_in_slot(Ed25519PrivateKey.generate(), tx))


def wrong_slot(s: StandIn) -> tuple[bytes, bytes, bytes]:
    tx = paid_by_another(s.h)
    return (tx, *sign_in_slot(s.agent, tx, 0))  # the fee payer's slot; the agent's (1) stays empty


def another_transaction(s: StandIn) -> tuple[bytes, bytes, bytes]:
    tx = s.h.transfer(1000, MERCHANT)
    return (tx, *sign_in_slot(s.agent, s.h.transfer(900_000_000, MERCHANT)))  # a real signature, another message


@pytest.mark.parametrize(
    "fault", [another_key, wrong_slot, another_transaction], ids=["another key", "wrong slot", "another transaction"]
)
def test_a_signature_not_the_agent_keys_is_refused_and_given_back(
    stand_in: StandIn, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    h = stand_in.h
    tx, signed, signature = fault(stand_in)
    stand_in.answer(signed_answer(h, tx, signed, signature))
    sent = submissions(h)
    with caplog.at_level(logging.ERROR, logger="parent_proxy.signed_answer"):
        first = h.sign(tx, key="retry-me", submit=True)
    assert_refused(h, first)
    assert sent == []  # nothing submitted
    payload = failure(h, "transaction.failed")
    assert payload.pop("request_id")
    assert payload == {"stage": "enclave", "error": "enclave_unavailable", "reason": NOT_THE_AGENT_KEY}
    logged = [r.getMessage() for r in caplog.records if r.name == "parent_proxy.signed_answer"]
    assert logged == [f"enclave signature for wallet {h.wallet_id} is not the stored agent key's: refused"]
    # The key is free: the same request reaches the enclave again (and fails the same way, not 409 or a replay).
    again = h.sign(tx, key="retry-me", submit=True)
    assert_refused(h, again)
    assert stand_in.calls == 2 and sent == []


def test_an_owner_approval_goes_back_to_pending(stand_in: StandIn) -> None:
    h = stand_in.h
    tx = h.transfer(2 * LAMPORTS_PER_SOL, MERCHANT)  # above the example's automatic 1 SOL: escalated
    signed, signature = sign_in_slot(Ed25519PrivateKey.generate(), tx)
    stand_in.answer(signed_answer(h, tx, signed, signature, verdict="escalate", approved=True))
    approval_id, failed = approve_escalated(h, tx)
    assert_refused(h, failed)
    assert pending_approval_ids(h) == [approval_id]
    events = records(h)
    assert [r.event_type for r in events][-2:] == ["transaction.failed", "approval.reopened"]
    assert json.loads(events[-2].payload)["reason"] == NOT_THE_AGENT_KEY


# -- off-chain messages ---------------------------------------------------------------------------------------------


def message_answer(h: Harness, signature: bytes) -> Callable[[SessionKey], MessageSignatureResponse]:
    """A message signature whose receipt, about the message `sign_message` sends, the attested session key signed."""
    sent_hash = hashlib.sha256(offchain_message(h.agent, "login")).digest()

    def make(session: SessionKey) -> MessageSignatureResponse:
        encoded, receipt_signature = signed_receipt(
            session, h.wallet_id, kind="message", verdict="allow", message_hash=sent_hash
        )
        return MessageSignatureResponse(signature=signature, receipt=encoded, receipt_signature=receipt_signature)

    return make


def test_a_message_signed_by_the_stored_agent_key_is_handed_out(stand_in: StandIn) -> None:
    h = stand_in.h
    signature = stand_in.agent.sign(offchain_message(h.agent, "login"))  # what `sign_message` sends
    stand_in.answer(message_answer(h, signature))
    response = sign_message(h)
    assert response.status_code == 200, response.text
    assert bytes(Signature.from_string(response.json()["signature"])) == signature
    assert records(h)[-1].event_type == "message.signed"


@pytest.mark.parametrize("fault", ["another key", "another message"])
def test_a_message_signature_not_the_agent_keys_is_refused(stand_in: StandIn, fault: str) -> None:
    h = stand_in.h
    message = offchain_message(h.agent, "login" if fault == "another key" else "logout")
    key = Ed25519PrivateKey.generate() if fault == "another key" else stand_in.agent
    stand_in.answer(message_answer(h, key.sign(message)))
    response = sign_message(h)  # asks for "login"
    assert response.status_code == 503 and response.json()["error"]["code"] == "enclave_unavailable", response.text
    assert "signature" not in response.json()
    assert "message.signed" not in [r.event_type for r in records(h)]
    payload = failure(h, "message.failed")
    assert payload["error"] == "enclave_unavailable" and payload["reason"] == MESSAGE_NOT_THE_AGENT_KEY
