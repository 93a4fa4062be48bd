"""Order receipts at the proxy (`parent_proxy.order_receipts`): every policy install, freeze and unfreeze the enclave
applies comes back with its receipt, which the proxy checks under the attested session key, records after the
order's own record, and hands to the owner; a receipt that does not check is refused as a decision receipt is (the
owner's answer then says ``enclave_acknowledged: false``, with no receipt; a signing request that needed the install
fails 503), recorded as ``order.failed``. The real enclave answers the honest orders; a stand-in enclave on the socket
(the transport seam, `tests.proxy.stand_in`) the others."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey

from enclave_app.order_receipts import verify_order_receipt
from parent_proxy.audit_receipts import verify_audit_receipts
from parent_proxy.order_receipts import order_payload
from parent_proxy.receipt_checks import split_receipt
from policies.signing import document_sha256
from tests.proxy.api_harness import Harness, new_session_key, provision, running_harness
from tests.proxy.harness_calls import order, pending_reservations, records, send
from tests.proxy.order_answers import assert_order_failed, freeze_answer, install_answer
from tests.proxy.stand_in import StandIn
from tests.support.policies import MERCHANT

NONCE = "12" * 32


def _record(h: Harness, event: str) -> Any:
    return [r for r in records(h) if r.event_type == event][-1]


def _check_recorded(h: Harness, answer: dict[str, Any], event: str, order_event: str, envelope_field: str) -> None:
    """The answer's receipt is the one recorded under ``event``, right after the order's record, with the payload
    the receipt states and the order record's envelope hash."""
    recorded, ordered = _record(h, event), _record(h, order_event)
    assert recorded.seq == ordered.seq + 1 and recorded.wallet_id == h.wallet_id
    receipt, signature = base64.b64decode(answer["receipt"]), base64.b64decode(answer["receipt_signature"])
    assert recorded.receipt == receipt + signature
    key = bytes(Pubkey.from_string(h.client.get(f"/v1/attestation?nonce={NONCE}").json()["session_public_key"]))
    assert answer["session_public_key"] == str(Pubkey.from_bytes(key))
    stated = verify_order_receipt(*split_receipt(recorded.receipt), key)
    assert json.loads(recorded.payload) == order_payload(stated, json.loads(ordered.payload)[envelope_field])


def test_orders_come_back_with_receipts_recorded_after_their_own_records(tmp_path: Path) -> None:
    for h in running_harness(tmp_path, attestation="none"):
        provision(h)
        policy = h.policy(2)
        installed = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": policy}).json()
        assert installed["enclave_installed"] is True
        _check_recorded(h, installed, "policy.enclave_installed", "policy.installed", "policy_sha256")
        key = bytes(Pubkey.from_string(installed["session_public_key"]))
        stated = verify_order_receipt(base64.b64decode(installed["receipt"]),
                                      base64.b64decode(installed["receipt_signature"]), key)  # fmt: skip
        assert (stated.purpose, stated.sequence, stated.frozen) == ("policy", 2, False)
        assert stated.document_hash == stated.policy_hash == document_sha256(policy["document"])
        frozen = send(h, order(h, 1))
        assert frozen["enclave_acknowledged"] is True
        _check_recorded(h, frozen, "wallet.enclave_frozen", "wallet.frozen", "order_sha256")
        assert h.sign(h.transfer(1000, MERCHANT)).status_code == 403  # the enclave holds it frozen too
        thawed = send(h, order(h, 2, "unfreeze"), "unfreeze")
        _check_recorded(h, thawed, "wallet.enclave_unfrozen", "wallet.unfrozen", "order_sha256")
        assert h.sign(h.transfer(1000, MERCHANT)).status_code == 200
        # One counter sequence: provisioning's install, this install, the freeze, the unfreeze, the transfer.
        report = verify_audit_receipts(records(h))
        assert (report.order_receipts, report.receipts, report.counter_gaps) == (4, 1, 0)


# -- a stand-in enclave (`tests.proxy.order_answers`) ---------------------------------------------------------------


CASES: dict[str, dict[str, Any]] = {
    "agrees": {},
    "signed by a key not attested": {"signer": new_session_key()},
    "about another sequence": {"sequence": 7},
    "about another wallet": {"wallet_id": "w2"},
    "about another document": {"document_hash": hashlib.sha256(b"another order").digest()},
    "an unfreeze's": {"purpose": "unfreeze", "frozen": False},
    "dated beyond the tolerated skew": {"time_ms": 1},
    "an answer saying unfrozen": {"answer": {"frozen": False}},
    "an answer for another sequence": {"answer": {"order_sequence": 9}},
}


@pytest.mark.parametrize("case", CASES)
def test_a_freeze_receipt_that_does_not_check_is_no_acknowledgement(stand_in: StandIn, case: str) -> None:
    h = stand_in.h
    stand_in.answer(freeze_answer(**CASES[case]))
    answer = send(h, order(h, 1))
    assert answer["frozen"] is True and h.store.get_wallet(h.wallet_id).frozen  # the proxy holds the order anyway
    events = h.audit_events()
    if case == "agrees":  # the control
        assert answer["enclave_acknowledged"] is True and answer["receipt"] is not None
        assert events[-3:] == ["wallet.frozen", "enclave.session", "wallet.enclave_frozen"]  # the stand-in's session
        return
    assert answer["enclave_acknowledged"] is False, answer
    assert (answer["receipt"], answer["receipt_signature"], answer["session_public_key"]) == (None, None, None)
    assert "wallet.enclave_frozen" not in events
    assert_order_failed(h, "freeze", 1)


def test_an_enclave_built_before_order_receipts_still_acknowledges(stand_in: StandIn) -> None:
    h = stand_in.h
    stand_in.answer(freeze_answer(receipt=False))
    answer = send(h, order(h, 1))
    assert answer["enclave_acknowledged"] is True and answer["receipt"] is None  # its word: nothing to verify
    assert h.audit_events()[-1] == "wallet.frozen"


def test_an_install_receipt_that_does_not_check_is_no_installation(stand_in: StandIn) -> None:
    h = stand_in.h
    stand_in.answer(install_answer(signer=new_session_key()))
    answer = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": h.policy(2)}).json()
    assert answer["enclave_installed"] is False and h.store.get_wallet(h.wallet_id).policy_sequence == 2
    assert (answer["receipt"], answer["receipt_signature"], answer["session_public_key"]) == (None, None, None)
    assert h.audit_events()[-1] == "order.failed" and "policy.enclave_installed" not in h.audit_events()[-3:]


def test_an_install_receipt_that_does_not_check_fails_the_signing_request_that_needed_it(stand_in: StandIn) -> None:
    """After an enclave restart the relay installs the stored policy before the signing request; the install's
    receipt is signed by a key the enclave does not attest: 503, nothing reserved, ``order.failed``."""
    h = stand_in.h
    stand_in.answer(install_answer(signer=new_session_key()))
    h.services.relay.forget()  # the enclave restarted: the next request loads the wallet and installs its policy
    response = h.sign(h.transfer(1000, MERCHANT))
    assert response.status_code == 503 and response.json()["error"]["code"] == "enclave_unavailable", response.text
    assert pending_reservations(h) == [] and h.spent() == 0
    events = h.audit_events()
    assert "policy.enclave_installed" not in events[-3:] and "transaction.signed" not in events
    assert events[-2:] == ["order.failed", "transaction.failed"]
