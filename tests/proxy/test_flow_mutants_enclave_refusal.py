"""An enclave's FREEZE answer to a request the proxy allowed (`sign_outcomes.record_refusal`), found untested by
mutation testing (twenty-fourth session): 403 ``wallet_frozen`` with the enclave's reasons, the wallet frozen with
the reason "enclave freeze decision" and a denial counted (the request was counted already), the reservation
released, and the ``transaction.refused`` record the wallet's; its DENY freezes nothing (403 ``enclave_refused``);
its refusal of an owner-approved request ends the approval's signing (consumed: the stalled sweep never reopens it).
"""

from __future__ import annotations

import json
from pathlib import Path

from enclave_app.protocol import Request, SignTransactionRequest, TransactionDecisionResponse
from parent_proxy.sign_parts import message_hash
from parent_proxy.stalled_approvals import STALLED_APPROVAL_SECONDS, reopen_stalled
from tests.proxy.api_harness import (
    ForRequest,
    new_session_key,
    signed_receipt,
    stand_in_decision,
    stand_in_harness,
    stand_in_refusal,
    start_stand_in_enclave,
)
from tests.proxy.harness_calls import escalate, records
from tests.support.policies import MERCHANT


def test_an_enclave_freeze_freezes_the_wallet_and_is_recorded_for_it(tmp_path: Path) -> None:
    session = new_session_key()
    with stand_in_harness(tmp_path) as (h, loop, servers):

        def freeze(request: Request) -> TransactionDecisionResponse:
            assert isinstance(request, SignTransactionRequest)
            receipt, signature = signed_receipt(
                session, h.wallet_id, verdict="freeze", message_hash=message_hash(request.transaction)
            )
            return TransactionDecisionResponse(
                decision=stand_in_decision("freeze"), signature=None, signed_transaction=None,
                receipt=receipt, receipt_signature=signature,
            )  # fmt: skip

        servers.append(start_stand_in_enclave(loop, h.socket, session, ForRequest(freeze)))
        requests = h.store.count_requests(h.wallet_id, 0.0)

        answer = h.sign(h.transfer(1000, MERCHANT))

        assert answer.status_code == 403 and answer.json()["error"]["code"] == "wallet_frozen", answer.text
        assert answer.json()["error"]["reasons"] == []
        wallet = h.store.get_wallet(h.wallet_id)
        assert wallet.frozen and wallet.frozen_reason == "enclave freeze decision"
        assert h.store.count_requests(h.wallet_id, 0.0) == requests + 1  # counted once, by the proxy's check
        assert h.store.count_denials(h.wallet_id, 0.0) == 1 and h.spent() == 0
        (refused,) = [r for r in records(h) if r.event_type == "transaction.refused"]
        assert refused.wallet_id == h.wallet_id
        assert json.loads(refused.payload)["decision"]["verdict"] == "freeze"


def test_an_enclave_denial_freezes_nothing(tmp_path: Path) -> None:
    session = new_session_key()
    with stand_in_harness(tmp_path) as (h, loop, servers):
        servers.append(start_stand_in_enclave(loop, h.socket, session, stand_in_refusal(session, h.wallet_id)))

        answer = h.sign(h.transfer(1000, MERCHANT))

        assert answer.status_code == 403 and answer.json()["error"]["code"] == "enclave_refused", answer.text
        assert not h.store.get_wallet(h.wallet_id).frozen and h.store.count_denials(h.wallet_id, 0.0) == 1


def test_an_enclave_refusal_of_an_approved_request_ends_its_signing(tmp_path: Path) -> None:
    session = new_session_key()
    with stand_in_harness(tmp_path) as (h, loop, servers):
        servers.append(start_stand_in_enclave(loop, h.socket, session, stand_in_refusal(session, h.wallet_id)))
        approval_id, body, path = escalate(h)  # the proxy's own check escalates: no enclave call

        answer = h.owner_call("POST", path, body)

        assert answer.status_code == 403 and answer.json()["error"]["code"] == "enclave_refused", answer.text
        approval = h.store.get_approval(approval_id)
        assert approval.status == "approved" and approval.signing is None  # a decision: consumed, signing over
        h.clock.offset = STALLED_APPROVAL_SECONDS + 1
        assert reopen_stalled(h.services) == 0
