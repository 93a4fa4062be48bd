"""A signed enclave answer (`parent_proxy.sign_flow`, step 6), from the check of its signer to its record.

- `check_agent_signature`: the signed transaction must be the one requested, signed by the wallet's stored agent
  key in that key's signer slot, else 503 and everything given back;
- `record_signed`: the one store transaction that commits the reservation and writes the audit record (with the
  enclave's receipt), the webhook item, the stored answer and the end of an owner approval's signing (with the
  answer that replaces its agent's 202, `parent_proxy.escalation_answers`, and the signed answer the approval keeps),
  before the signature leaves the proxy,
  on the condition that the wallet is as the request read it (`StillUnfrozen`). If it cannot be written the
  signature is not handed out and everything is given back (`parent_proxy.give_back`); written or not, unknown:
  `parent_proxy.outcome_unknown` finds out first; refused because the wallet was frozen meanwhile, the signature is
  withheld (`parent_proxy.withheld`: 403 ``wallet_frozen``)."""

from __future__ import annotations

import logging
from typing import Any

from enclave_app.protocol import TransactionDecisionResponse
from parent_proxy import escalation_answers, give_back, outcome_unknown, submission, withheld
from parent_proxy.api_errors import ApiError, Code
from parent_proxy.enclave_relay import signed_by
from parent_proxy.errors import AlreadyDecided, FrozenMeanwhile, StoreOutcomeUnknown
from parent_proxy.services import Services
from parent_proxy.sign_parts import Answer, Prepared
from parent_proxy.store.model import IdempotentAnswer
from parent_proxy.store.state_changes import FinishApproval, StillUnfrozen

logger = logging.getLogger(__name__)

NOT_THE_AGENT_KEY = "the signature is not the stored agent key's over the requested transaction"
"""The audit reason of a ``transaction.failed`` record for a signed answer that `signed_by` refuses."""
APPROVAL_REOPENED = "the approval was reopened while it was being signed"
"""The audit reason of a ``transaction.failed`` record for a signature whose approval was reopened before its record
(`parent_proxy.stalled_approvals`): the finish is refused, the signature never handed out."""


def check_agent_signature(
    s: Services, prepared: Prepared, answer: TransactionDecisionResponse, transaction: bytes
) -> None:
    """For a signed answer: raise 503 ``enclave_unavailable`` unless its signed transaction is ``transaction``
    with its signature, by the wallet's stored agent key, in that key's signer slot (`enclave_relay.signed_by`).
    Refused as a receipt that does not verify is: nothing recorded as signed or handed out, audit
    ``transaction.failed`` (with the reason), everything given back (`give_back.failed`)."""
    wallet, signed = prepared.wallet, answer.signed_transaction
    if answer.signature is None or signed is None:
        return
    if signed_by(signed, answer.signature, transaction, wallet.agent_pubkey):
        return
    logger.error("enclave signature for wallet %s is not the stored agent key's: refused", wallet.wallet_id)
    error = ApiError(
        Code.ENCLAVE_UNAVAILABLE,
        "the enclave answered a signature that is not the wallet's agent key's; nothing was signed",
    )
    give_back.failed(s, prepared, error.code.value, reason=NOT_THE_AGENT_KEY)
    raise error


def record_signed(
    s: Services, prepared: Prepared, body: dict[str, Any], base: dict[str, Any], receipt: bytes, *, submit: bool
) -> Answer:
    """Step 6 for a signed enclave answer whose signer was checked: record it and return the 200 with ``body`` (the
    answer's; ``base``: the audit payload, ``receipt``: the enclave's receipt and its signature; ``submit``: the
    answer stored under the key is a submit's, its submission `submission.UNRECORDED` until the broadcast's
    outcome replaces it). 409 if the owner's approval was reopened meanwhile (`APPROVAL_REOPENED`); 403
    ``wallet_frozen`` if the wallet was frozen (or took an owner order) since the request read it
    (`withheld.withhold_transaction`: the signature withheld, its receipt recorded)."""
    wallet_id = prepared.wallet.wallet_id
    # One transaction: commit the reservation, the audit record, the webhook, the stored answer. The audit
    # record comes before the signature leaves: no record, no signature (and the reservation is released).
    event = {"request_id": prepared.request_id, "signature": body["signature"]}
    try:
        seal = s.audit.sealer(
            "transaction.signed", {**base, "signature": body["signature"]}, wallet_id=wallet_id, receipt=receipt
        )
        stored = replaced = None
        kept = {**body, "submission": submission.UNRECORDED} if submit else body
        owner = prepared.approval
        response = escalation_answers.stored_response(200, kept)  # under the key, and kept by an approval
        if prepared.idempotent:  # a submit's answer until its broadcast's outcome replaces it (`submission`)
            stored = IdempotentAnswer(wallet_id, prepared.key, prepared.digest, response)
        webhook = s.webhook_item(wallet_id, "transaction.signed", event)
        # The approval keeps the answer (the same message escalated again is answered with it, `sign_outcomes`).
        ended = None if owner is None else FinishApproval(owner.approval_id, prepared.request_id, answer=response)
        if owner is not None and owner.agent is not None:  # the agent's 202 becomes this answer, as it stands
            replaced = escalation_answers.settled(wallet_id, owner.agent, 200, kept)
        unfrozen = StillUnfrozen(wallet_id, prepared.wallet.order_sequence)  # as the request read the wallet
        s.store.finish_signing(
            prepared.reservation, seal, webhook, stored, approval=ended, replaced=replaced, unfrozen=unfrozen
        )
    except StoreOutcomeUnknown:  # written or not: find out before anything is given back
        if not outcome_unknown.finish_applied(s, prepared, answer_stored=stored is not None):
            raise
    except FrozenMeanwhile as exc:  # a freeze was stored after the request read the wallet: never handed out
        raise withheld.withhold_transaction(s, prepared, base, receipt) from exc
    except AlreadyDecided as exc:  # its approval was reopened meanwhile (`stalled_approvals`): never recorded
        give_back.failed(s, prepared, Code.CONFLICT.value, reason=APPROVAL_REOPENED)
        raise ApiError(Code.CONFLICT, APPROVAL_REOPENED + "; nothing was signed: approve it again") from exc
    except BaseException:  # nothing of it was written: the signature is not handed out
        give_back.give_back(s, prepared)
        raise
    return Answer(200, body)
