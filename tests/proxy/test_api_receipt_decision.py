"""A receipt must state the decision its answer carries, at about the proxy's time (`check_receipt_content`).

The enclave signs, in each receipt, the decision's policy sequence and a digest of its reasons, and its own time.
Before, only the auditor compared those with the recorded decision and time; the proxy recorded an answer whose
decision disagreed with its receipt, and `waiaas audit verify --receipts` failed on it later. Now the proxy
applies the same rule when the answer arrives. A stand-in enclave on the socket (the transport seam) attests its
own session key and answers with the wallet's real agent key's signature and a receipt that key signed, about the
transaction sent, disagreeing with the answer's decision in one field, or dated away from the proxy's clock:
503, nothing handed out or submitted, the reservation released, no receipt recorded, ``transaction.failed``
(or ``message.failed``). The controls: the same answers agreeing (200), and a receipt within the tolerated skew.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from enclave_app.protocol import MessageSignatureResponse, TransactionDecisionResponse
from enclave_app.receipts import SessionKey
from parent_proxy.audit_receipts import verify_audit_receipts
from parent_proxy.enclave_sessions import CLOCK_SKEW_MESSAGE
from parent_proxy.receipt_checks import RECEIPT_TIME_TOLERANCE_SECONDS
from parent_proxy.sign_parts import message_hash
from tests.proxy.api_harness import sign_in_slot, signed_receipt, stand_in_decision
from tests.proxy.harness_calls import decision_receipts, pending_reservations, records, sign_message
from tests.proxy.stand_in import CONTRADICTS, StandIn, submissions
from tests.support.offchain_messages import offchain_message
from tests.support.policies import MERCHANT

DECISION_EDITS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "agrees": lambda d: d,
    "another policy sequence": lambda d: {**d, "policy_sequence": 2},
    "no policy sequence": lambda d: {k: v for k, v in d.items() if k != "policy_sequence"},
    "policy sequence true": lambda d: {**d, "policy_sequence": True},  # equal to 1 in Python, not the same value
    "a reason the receipt lacks": lambda d: {**d, "reasons": [{"rule": "limits", "detail": "stated by nobody"}]},
    "reasons that are no JSON": lambda d: {**d, "reasons": [{"rule": b"bytes"}]},
}


def signed_answer(
    s: StandIn, tx: bytes, *, edit: Callable[[dict[str, Any]], dict[str, Any]] = lambda d: d, age: float = 0.0
) -> Callable[[SessionKey], TransactionDecisionResponse]:
    """The agent key's signature over ``tx`` and a receipt about it (verdict allow, policy sequence 1, no reasons,
    dated ``age`` seconds ago) beside the decision ``edit`` makes of the agreeing one."""
    signed_tx, signature = sign_in_slot(s.agent, tx)

    def make(session: SessionKey) -> TransactionDecisionResponse:
        time_ms = int((time.time() - age) * 1000)
        receipt, receipt_signature = signed_receipt(
            session, s.h.wallet_id, verdict="allow", message_hash=message_hash(tx), time_ms=time_ms
        )
        return TransactionDecisionResponse(
            decision=edit(stand_in_decision("allow")), signature=signature, signed_transaction=signed_tx,
            receipt=receipt, receipt_signature=receipt_signature,
        )  # fmt: skip

    return make


UNRECORDABLE: dict[str, tuple[str, dict[str, Any]]] = {
    "a float in the reasons": ("allow", {"reasons": [{"rule": "limits", "seen": 1.5}]}),
    "an integer key in the reasons": ("allow", {"reasons": [{1: "limits"}]}),
    "a float in a field no receipt covers": ("allow", {"reservations": [{"asset": "SOL", "amount": 0.5}]}),
    "bytes in an extra field": ("allow", {"extra": b"\x00"}),
    "a refusal with a float in the reasons": ("deny", {"reasons": [{"rule": "limits", "seen": 1.5}]}),
}
"""Decisions whose receipt agrees (the enclave hashed the same reasons) but which the audit log cannot hold (it
takes plain JSON data without floats): the real enclave never answers them."""
UNRECORDABLE_MESSAGE = (
    "the enclave answered a decision that the audit log cannot record (not plain JSON data); nothing was signed"
)


def assert_refused(s: StandIn, response: Any, sent: list[bytes], message: str, failed: str) -> None:
    h = s.h
    assert response.status_code == 503, response.text
    assert response.json()["error"] == {"code": "enclave_unavailable", "message": message}
    assert "signed_transaction" not in response.text and "signature" not in response.json()
    assert sent == []
    assert pending_reservations(h) == [] and h.spent() == 0
    events = [r.event_type for r in records(h)]
    assert not {"transaction.signed", "transaction.refused", "message.signed"} & set(events)
    assert decision_receipts(h) == []  # the receipt was not recorded
    assert events[-1] == failed and json.loads(records(h)[-1].payload)["error"] == "enclave_unavailable"


@pytest.mark.parametrize("case", DECISION_EDITS)
def test_the_answers_decision_must_be_the_one_its_receipt_states(stand_in: StandIn, case: str) -> None:
    h = stand_in.h
    tx = h.transfer(1000, MERCHANT)
    stand_in.answer(signed_answer(stand_in, tx, edit=DECISION_EDITS[case]))
    sent = submissions(h)
    response = h.sign(tx, key="k", submit=True)
    if case == "agrees":  # the control
        assert response.status_code == 200, response.text
        assert response.json()["decision"]["policy_sequence"] == 1
        assert verify_audit_receipts(records(h)).receipts == 1  # the auditor agrees with the proxy
        return
    assert_refused(stand_in, response, sent, CONTRADICTS, "transaction.failed")
    assert h.sign(tx, key="k", submit=True).status_code == 503 and stand_in.calls == 2  # the key is free again


@pytest.mark.parametrize("age", [RECEIPT_TIME_TOLERANCE_SECONDS - 10, RECEIPT_TIME_TOLERANCE_SECONDS + 10])
@pytest.mark.parametrize("direction", [1, -1], ids=["enclave behind", "enclave ahead"])
def test_a_receipt_dated_beyond_the_tolerated_skew_is_refused(stand_in: StandIn, age: float, direction: int) -> None:
    h = stand_in.h
    tx = h.transfer(1000, MERCHANT)
    stand_in.answer(signed_answer(stand_in, tx, age=direction * age))
    sent = submissions(h)
    response = h.sign(tx, key="k", submit=True)
    if age < RECEIPT_TIME_TOLERANCE_SECONDS:  # the control: within the skew
        assert response.status_code == 200, response.text
        assert verify_audit_receipts(records(h)).receipts == 1
        return
    assert_refused(stand_in, response, sent, CLOCK_SKEW_MESSAGE, "transaction.failed")


def test_a_message_receipt_dated_beyond_the_tolerated_skew_is_refused(stand_in: StandIn) -> None:
    h = stand_in.h
    message = offchain_message(h.agent, "login")  # what `sign_message` sends
    signature = stand_in.agent.sign(message)

    def make(session: SessionKey) -> MessageSignatureResponse:
        receipt, receipt_signature = signed_receipt(
            session, h.wallet_id, kind="message", verdict="allow", message_hash=hashlib.sha256(message).digest(),
            time_ms=int((time.time() - RECEIPT_TIME_TOLERANCE_SECONDS - 10) * 1000),
        )  # fmt: skip
        return MessageSignatureResponse(signature=signature, receipt=receipt, receipt_signature=receipt_signature)

    stand_in.answer(make)
    assert_refused(stand_in, sign_message(h), [], CLOCK_SKEW_MESSAGE, "message.failed")


def test_a_proxy_clock_failing_when_the_answer_arrives_gives_everything_back(stand_in: StandIn) -> None:
    """The clock is read once more to check the receipt's time; if it fails then: 503 clock_unavailable, and what
    the request holds is given back (the clock works again for the failure record)."""
    h = stand_in.h
    tx = h.transfer(1000, MERCHANT)
    answer = signed_answer(stand_in, tx)
    reads = {"n": 0}
    now = h.clock.now

    def breaking(session: SessionKey) -> TransactionDecisionResponse:
        h.clock.broken = True  # from the moment the enclave answers
        return answer(session)

    def clock_now() -> float:
        if h.clock.broken:
            reads["n"] += 1
            if reads["n"] == 1:
                raise OSError("clock device unreadable")
            h.clock.broken = False
        return now()

    h.clock.now = clock_now  # type: ignore[method-assign]
    stand_in.answer(breaking)
    sent = submissions(h)
    response = h.sign(tx, key="k", submit=True)
    assert response.status_code == 503 and response.json()["error"]["code"] == "clock_unavailable", response.text
    assert "signed_transaction" not in response.text and sent == []
    assert pending_reservations(h) == [] and h.spent() == 0
    events = [r.event_type for r in records(h)]
    assert "transaction.signed" not in events and events[-1] == "transaction.failed"
    assert decision_receipts(h) == []


@pytest.mark.parametrize("case", UNRECORDABLE)
def test_a_decision_the_audit_log_cannot_record_is_refused_and_given_back(stand_in: StandIn, case: str) -> None:
    """Before, such an answer passed the receipt check and then failed when its record was written: 422 blaming
    the agent, the reservation left pending and the idempotency key blocked (found in review)."""
    h = stand_in.h
    tx = h.transfer(1000, MERCHANT)
    verdict, fields = UNRECORDABLE[case]
    signed_tx, signature = sign_in_slot(stand_in.agent, tx) if verdict == "allow" else (None, None)

    def make(session: SessionKey) -> TransactionDecisionResponse:
        decision = {**stand_in_decision(verdict), **fields}
        receipt, receipt_signature = signed_receipt(
            session, h.wallet_id, verdict=verdict, message_hash=message_hash(tx), reasons=decision["reasons"]
        )
        return TransactionDecisionResponse(
            decision=decision, signature=signature, signed_transaction=signed_tx,
            receipt=receipt, receipt_signature=receipt_signature,
        )  # fmt: skip

    stand_in.answer(make)
    sent = submissions(h)
    response = h.sign(tx, key="k", submit=True)
    assert_refused(stand_in, response, sent, UNRECORDABLE_MESSAGE, "transaction.failed")
    again = h.sign(tx, key="k", submit=True)  # the key is free: the enclave is asked again
    assert again.status_code == 503 and stand_in.calls == 2, again.text
