"""A receipt must be about the message the proxy sent (`receipt_checks.check_receipt_content`, ``message_hash``).

A stand-in enclave on the socket (the transport seam) attests its own session key and answers with the wallet's
real agent key's signature over the requested transaction or message, and a receipt that this key signed and that
agrees with the answer in everything but its ``message_hash``: the hash of another transaction, of the whole
transaction instead of its message, or of another off-chain message. Before, the proxy accepted such a receipt and
recorded it (only ``waiaas audit verify --receipts`` noticed later). Now it is refused as any other bad receipt:
503 ``enclave_unavailable``, nothing handed out or submitted, the reservation released, the idempotency key free (a
retry reaches the enclave again), an owner approval back to pending, audit ``transaction.failed`` /
``message.failed`` and no ``*.signed`` / ``transaction.refused`` record. Refusals (deny, escalate) carry receipts
too and are checked the same way. The same answers with a receipt about the message sent: signed, refused with
403, or (escalate) waiting for the owner with 202 (the controls). The auditor applies the same rule to the
record's ``message_sha256``, which a record holding a receipt must now state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from enclave_app.errors import ReceiptError
from enclave_app.protocol import MessageSignatureResponse, TransactionDecisionResponse
from enclave_app.receipts import SessionKey, verify_receipt
from parent_proxy.audit_receipts import verify_audit_receipts
from parent_proxy.receipt_checks import Expected, check_receipt_content
from parent_proxy.sign_parts import message_hash
from tests.proxy.api_harness import (
    LAMPORTS_PER_SOL,
    approve_escalated,
    new_session_key,
    pending_approval_ids,
    sign_in_slot,
    signed_receipt,
    stand_in_decision,
)
from tests.proxy.audit_log_rewrites import cli, read, real_log, rewrite
from tests.proxy.harness_calls import decision_receipts, pending_reservations, records, sign_message
from tests.proxy.stand_in import CONTRADICTS, StandIn, submissions
from tests.support.offchain_messages import offchain_message
from tests.support.policies import MERCHANT


def stated_hash(s: StandIn, tx: bytes, about: str) -> bytes:
    """The ``message_hash`` the stand-in's receipt states when ``tx`` was requested."""
    if about == "the transaction sent":
        return message_hash(tx)  # what the enclave hashes: the message bytes the agent key signs
    if about == "another transaction":
        return message_hash(s.h.transfer(1000, MERCHANT))
    if about == "the whole transaction":
        return hashlib.sha256(tx).digest()  # signatures included: not what the enclave hashes
    raise ValueError(about)


def decision_answer(
    s: StandIn, stated: bytes, verdict: str, signed: tuple[bytes, bytes] | None = None, *, approved: bool = False
) -> Callable[[SessionKey], TransactionDecisionResponse]:
    """A decision ``verdict`` (with ``signed`` = (signed transaction, signature), if any) whose receipt, stating
    ``stated`` as its message hash and otherwise agreeing with the answer, the attested session key signed."""
    signed_tx, signature = signed or (None, None)

    def make(session: SessionKey) -> TransactionDecisionResponse:
        encoded, receipt_signature = signed_receipt(
            session, s.h.wallet_id, verdict=verdict, approved=approved, message_hash=stated
        )
        return TransactionDecisionResponse(
            decision=stand_in_decision(verdict), signature=signature,
            signed_transaction=signed_tx,
            receipt=encoded, receipt_signature=receipt_signature,
        )  # fmt: skip

    return make


def assert_given_back(s: StandIn, response: Any, sent: list[bytes]) -> None:
    h = s.h
    assert response.status_code == 503, response.text
    assert response.json()["error"] == {"code": "enclave_unavailable", "message": CONTRADICTS}
    assert "signed_transaction" not in response.text and "signature" not in response.json()
    assert sent == []
    assert pending_reservations(h) == [] and h.spent() == 0
    events = [r.event_type for r in records(h)]
    assert "transaction.signed" not in events and "transaction.refused" not in events
    assert decision_receipts(h) == []  # the receipt was not recorded
    failed = [json.loads(r.payload) for r in records(h) if r.event_type == "transaction.failed"]
    assert failed and failed[-1]["error"] == "enclave_unavailable"


# -- transactions ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("about", ["the transaction sent", "another transaction", "the whole transaction"])
def test_a_signed_answers_receipt_must_be_about_the_transaction_sent(stand_in: StandIn, about: str) -> None:
    h = stand_in.h
    tx = h.transfer(1000, MERCHANT)
    signed = sign_in_slot(stand_in.agent, tx)  # the right signature: only the receipt can be wrong
    stand_in.answer(decision_answer(stand_in, stated_hash(stand_in, tx, about), "allow", signed))
    sent = submissions(h)
    first = h.sign(tx, key="retry-me", submit=True)
    if about == "the transaction sent":  # the control
        assert first.status_code == 200, first.text
        assert sent == [signed[0]]
        (record,) = [r for r in records(h) if r.event_type == "transaction.signed"]
        assert json.loads(record.payload)["message_sha256"] == message_hash(tx).hex()
        assert verify_audit_receipts(records(h)).receipts == 1  # the auditor agrees with the proxy
        return
    assert_given_back(stand_in, first, sent)
    # The key is free: the same request reaches the enclave again (and fails the same way, not 409 or a replay).
    again = h.sign(tx, key="retry-me", submit=True)
    assert_given_back(stand_in, again, sent)
    assert stand_in.calls == 2


@pytest.mark.parametrize("verdict", ["deny", "escalate"])
@pytest.mark.parametrize("about", ["the transaction sent", "another transaction"])
def test_a_refusals_receipt_must_be_about_the_transaction_sent(stand_in: StandIn, verdict: str, about: str) -> None:
    h = stand_in.h
    tx = h.transfer(1000, MERCHANT)  # the proxy's own check allows it; the enclave refuses
    stand_in.answer(decision_answer(stand_in, stated_hash(stand_in, tx, about), verdict))
    sent = submissions(h)
    first = h.sign(tx, key="refused", submit=True)
    if about == "the transaction sent":  # the control: a decision, recorded with its receipt and stored under the key
        if verdict == "deny":
            assert first.status_code == 403 and first.json()["error"]["code"] == "enclave_refused", first.text
            event = "transaction.refused"
        else:  # the enclave's escalation waits for the owner (tests/proxy/test_api_enclave_escalates.py)
            assert first.status_code == 202 and first.json()["status"] == "pending_approval", first.text
            event = "transaction.escalated"
        assert records(h)[-1].event_type == event and records(h)[-1].receipt is not None
        assert h.sign(tx, key="refused", submit=True).json() == first.json() and stand_in.calls == 1
        return
    assert_given_back(stand_in, first, sent)
    again = h.sign(tx, key="refused", submit=True)  # nothing stored under the key: the enclave is asked again
    assert_given_back(stand_in, again, sent)
    assert stand_in.calls == 2


def test_an_owner_approval_whose_receipt_is_about_another_transaction_goes_back_to_pending(stand_in: StandIn) -> None:
    h = stand_in.h
    tx = h.transfer(2 * LAMPORTS_PER_SOL, MERCHANT)  # above the example's automatic 1 SOL: escalated
    signed = sign_in_slot(stand_in.agent, tx)
    stated = message_hash(h.transfer(2 * LAMPORTS_PER_SOL, MERCHANT))  # another transaction
    stand_in.answer(decision_answer(stand_in, stated, "escalate", signed, approved=True))
    approval_id, failed = approve_escalated(h, tx)
    assert_given_back(stand_in, failed, [])
    assert pending_approval_ids(h) == [approval_id]
    assert [r.event_type for r in records(h)][-2:] == ["transaction.failed", "approval.reopened"]


# -- off-chain messages ---------------------------------------------------------------------------------------------


def message_answer(s: StandIn, about: bytes) -> Callable[[SessionKey], MessageSignatureResponse]:
    """The agent key's signature over what `sign_message` sends, with a receipt about the message ``about``."""
    signature = s.agent.sign(offchain_message(s.h.agent, "login"))

    def make(session: SessionKey) -> MessageSignatureResponse:
        encoded, receipt_signature = signed_receipt(
            session, s.h.wallet_id, kind="message", verdict="allow", message_hash=hashlib.sha256(about).digest()
        )
        return MessageSignatureResponse(signature=signature, receipt=encoded, receipt_signature=receipt_signature)

    return make


@pytest.mark.parametrize("about", ["login", "logout"], ids=["the message sent", "another message"])
def test_a_message_receipt_must_be_about_the_message_sent(stand_in: StandIn, about: str) -> None:
    h = stand_in.h
    stand_in.answer(message_answer(stand_in, offchain_message(h.agent, about)))
    response = sign_message(h)  # asks for "login"
    events = [r.event_type for r in records(h)]
    if about == "login":  # the control
        assert response.status_code == 200, response.text
        assert events[-1] == "message.signed"
        assert verify_audit_receipts(records(h)).receipts == 1
        return
    assert response.status_code == 503, response.text
    assert response.json()["error"] == {"code": "enclave_unavailable", "message": CONTRADICTS}
    assert "signature" not in response.json()
    assert "message.signed" not in events and events[-1] == "message.failed"
    assert json.loads(records(h)[-1].payload)["error"] == "enclave_unavailable"
    assert decision_receipts(h) == []


# -- the shared rule and the auditor ---------------------------------------------------------------------------------


def test_the_shared_rule_requires_the_message_hash() -> None:
    session = new_session_key()
    sent = hashlib.sha256(b"the message sent").digest()
    stated = verify_receipt(*signed_receipt(session, "w1", verdict="allow", message_hash=sent), session.public_key)
    decision = stand_in_decision("allow")
    check_receipt_content(stated, Expected("transaction", "w1", sent, signed=True, decision=decision), at=time.time())
    with pytest.raises(ReceiptError, match=r"^receipt is about another message$"):
        expected = Expected("transaction", "w1", bytes(32), signed=True, decision=decision)
        check_receipt_content(stated, expected, at=time.time())


def _without_message_hash(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "message_sha256"}


@pytest.mark.parametrize(
    "edit",
    [_without_message_hash, lambda p: {**p, "message_sha256": "zz" * 32}, lambda p: {**p, "message_sha256": "00"}],
    ids=["no message_sha256", "not hex", "not 32 bytes"],
)
@pytest.mark.parametrize("event_type", ["transaction.signed", "message.signed"])
def test_the_auditor_refuses_a_receipt_whose_record_states_no_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[dict[str, Any]], dict[str, Any]],
    event_type: str,
) -> None:
    """Before, a receipt record without a readable ``message_sha256`` was not compared with any message and passed."""
    db = real_log(tmp_path)
    entries = read(db)
    i = next(j for j, r in enumerate(entries) if r.event_type == event_type)
    payload = json.dumps(edit(json.loads(entries[i].payload)), sort_keys=True, separators=(",", ":")).encode()
    entries[i] = dataclasses.replace(entries[i], payload=payload)
    rewrite(db, entries)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1, err
    assert f"broken at seq {i + 1}: record holding a receipt states no message_sha256" in err, err
