"""Order receipts at the proxy (`parent_proxy.order_receipts`): every policy install, freeze and unfreeze the enclave
applies comes back with its receipt, which the proxy checks under the attested session key, records after the
order's own record, and hands to the owner; a receipt that does not check is refused as a decision receipt is (the
owner's answer then says ``enclave_acknowledged: false``, with no receipt; a signing request that needed the install
fails 503), recorded as ``order.failed``. The real enclave answers the honest orders; a stand-in enclave on the socket
(the transport seam, `tests.proxy.stand_in`) the others."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey

from enclave_app.order_receipts import OrderReceipt, verify_order_receipt
from enclave_app.protocol import (
    FreezeRequest,
    InstallPolicyRequest,
    LoadWalletRequest,
    PolicyInstalledResponse,
    Request,
    WalletFrozenResponse,
    WalletResponse,
)
from enclave_app.receipts import SessionKey
from parent_proxy.audit_receipts import verify_audit_receipts
from parent_proxy.order_receipts import order_payload
from parent_proxy.receipt_checks import split_receipt
from policies.signing import document_sha256
from tests.proxy.api_harness import ForRequest, Harness, new_session_key, provision, running_harness
from tests.proxy.harness_calls import order, pending_reservations, records, send
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


# -- a stand-in enclave ---------------------------------------------------------------------------------------------


def _order_receipt(session: SessionKey, request: FreezeRequest, **changes: Any) -> tuple[bytes, bytes]:
    document = json.loads(request.order)["document"]
    stated = OrderReceipt("freeze", request.wallet_id, document["sequence"], document_sha256(document), True, None,
                          int(time.time() * 1000), session.next_counter())  # fmt: skip
    return session.sign_order(dataclasses.replace(stated, **changes))


def freeze_answer(
    *, signer: SessionKey | None = None, answer: dict[str, Any] | None = None, receipt: bool = True, **changes: Any
) -> Callable[[SessionKey], ForRequest]:
    """A stand-in's answer to the freeze it is sent: the enclave's own (the control), or with its receipt signed by
    ``signer``, stating ``changes``, its answer fields changed by ``answer``, or (``receipt`` false) without one."""

    def make(session: SessionKey) -> ForRequest:
        def reply(request: Request) -> WalletFrozenResponse:
            assert isinstance(request, FreezeRequest)
            sequence = json.loads(request.order)["document"]["sequence"]
            encoded, signature = _order_receipt(signer or session, request, **changes) if receipt else (None, None)
            fields = {"wallet_id": request.wallet_id, "frozen": True, "order_sequence": sequence, **(answer or {})}
            return WalletFrozenResponse(**fields, receipt=encoded, receipt_signature=signature)

        return ForRequest(reply)

    return make


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
    assert "wallet.enclave_frozen" not in events and events[-1] == "order.failed"
    failed = json.loads(records(h)[-1].payload)
    assert (failed["purpose"], failed["sequence"], failed["error"]) == ("freeze", 1, "enclave_unavailable")


def test_an_enclave_built_before_order_receipts_still_acknowledges(stand_in: StandIn) -> None:
    h = stand_in.h
    stand_in.answer(freeze_answer(receipt=False))
    answer = send(h, order(h, 1))
    assert answer["enclave_acknowledged"] is True and answer["receipt"] is None  # its word: nothing to verify
    assert h.audit_events()[-1] == "wallet.frozen"


def install_answer(signer: SessionKey) -> Callable[[SessionKey], ForRequest]:
    """A stand-in that loads the wallet (already held) and installs the policy it is sent, answering with a receipt
    ``signer`` signed (a key it does not attest)."""

    def make(session: SessionKey) -> ForRequest:
        def reply(request: Request) -> WalletResponse | PolicyInstalledResponse:
            if isinstance(request, LoadWalletRequest):
                return WalletResponse(wallet_id=request.wallet_id, agent_public_key=request.agent_public_key,
                                      sealed_blob=None)  # fmt: skip
            assert isinstance(request, InstallPolicyRequest)
            document = json.loads(request.signed_policy)["document"]
            digest = document_sha256(document)
            stated = OrderReceipt("policy", request.wallet_id, document["sequence"], digest, False, digest,
                                  int(time.time() * 1000), 1)  # fmt: skip
            encoded, signature = signer.sign_order(stated)
            return PolicyInstalledResponse(
                wallet_id=request.wallet_id, sequence=document["sequence"], policy_hash=digest, receipt=encoded,
                receipt_signature=signature,
            )  # fmt: skip

        return ForRequest(reply)

    return make


def test_an_install_receipt_that_does_not_check_is_no_installation(stand_in: StandIn) -> None:
    h = stand_in.h
    stand_in.answer(install_answer(new_session_key()))
    answer = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": h.policy(2)}).json()
    assert answer["enclave_installed"] is False and h.store.get_wallet(h.wallet_id).policy_sequence == 2
    assert (answer["receipt"], answer["receipt_signature"], answer["session_public_key"]) == (None, None, None)
    assert h.audit_events()[-1] == "order.failed" and "policy.enclave_installed" not in h.audit_events()[-3:]


def test_an_install_receipt_that_does_not_check_fails_the_signing_request_that_needed_it(stand_in: StandIn) -> None:
    """After an enclave restart the relay installs the stored policy before the signing request; the install's
    receipt is signed by a key the enclave does not attest: 503, nothing reserved, ``order.failed``."""
    h = stand_in.h
    stand_in.answer(install_answer(new_session_key()))
    h.services.relay.forget()  # the enclave restarted: the next request loads the wallet and installs its policy
    response = h.sign(h.transfer(1000, MERCHANT))
    assert response.status_code == 503 and response.json()["error"]["code"] == "enclave_unavailable", response.text
    assert pending_reservations(h) == [] and h.spent() == 0
    events = h.audit_events()
    assert "policy.enclave_installed" not in events[-3:] and "transaction.signed" not in events
    assert events[-2:] == ["order.failed", "transaction.failed"]
