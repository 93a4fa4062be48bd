"""The unsigned outcomes of a signing request, each written in one store transaction with its audit record.

`parent_proxy.sign_flow` decides which outcome a request has; this module writes it:

- `refuse`: a refusal's changes (a denial, a freeze), its record and the error answer stored under the claimed key;
- `limit_refusal`: a reservation the period limits refused (a concurrent request got there first), 403;
- `escalate`: a pending approval for the owner, its record and ``approval.pending`` webhook, and the 202 stored
  under the key (replaced by the owner's decision, `parent_proxy.escalation_answers`); with `MAX_PENDING_APPROVALS`
  already waiting, refused instead (429 ``rate_limited``, not stored: the key is freed, as for a 503); of a
  transaction message whose approval is still open, that approval's 202 instead of a second approval (`join`),
  written only while that approval is still open (else the request escalates anew); of one whose approval was
  signed, that approval's signed answer (`join_signed`: 200, the same signature, nothing sent to the enclave);
- `record_escalation` / `record_refusal`: the same two for an unsigned enclave answer, after releasing the
  reservation the proxy had made; the refusal of an owner-approved request is also its agent's answer.

A write that fails leaves none of its parts behind (one store transaction), and the caller gives the key back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final, NoReturn

from parent_proxy import escalation_answers, give_back
from parent_proxy.api_errors import ApiError, Code
from parent_proxy.clock import read_clock
from parent_proxy.errors import (
    ApprovalClosed,
    ApprovalPending,
    ApprovalQueueFull,
    ApprovalSigned,
    LimitExceeded,
    StoreUnavailable,
)
from parent_proxy.services import Services, canonical
from parent_proxy.sign_parts import (
    Answer,
    Claim,
    Origin,
    Prepared,
    SignRequest,
    denial_changes,
    error_answer,
    message_hash,
)
from parent_proxy.store.model import Approval, ApprovalStatus, IdempotentAnswer, OutboxItem, Wallet
from parent_proxy.store.state_changes import (
    ApprovalStillOpen,
    CompleteIdempotent,
    CreateApproval,
    FinishApproval,
    StateChange,
)

MAX_PENDING_APPROVALS: Final = 100
"""Open approvals (waiting for the owner, or approved with their signing under way, which may return to waiting) per
wallet, beyond which a request that escalates (by the proxy's check or the enclave's) is refused. The bound is a
condition of the approval's own write (`CreateApproval.max_pending`), so it holds exactly under concurrency, and
since an approval returned to pending was counted all along, no return ever exceeds it."""
MAX_ESCALATION_ATTEMPTS: Final = 3
"""An escalation is written this often at most while the open approval it would join is decided between the store
naming it and the join's write (`join`'s `ApprovalClosed`: nothing written, the request escalates anew); then
`StoreUnavailable` (503, the key given back by the caller, as for any store failure)."""


def refuse(
    s: Services,
    claim: Claim,
    error: ApiError,
    event: str,
    payload: dict[str, Any],
    *,
    webhook: OutboxItem | None = None,
    changes: Sequence[StateChange] = (),
    receipt: bytes | None = None,
) -> ApiError:
    """Write a refusal: its ``changes``, its audit record (with the enclave's ``receipt``, if any; and webhook)
    and the error answer stored under the claimed key, in one store transaction (a failure writes none of it,
    and the key is freed); the error."""
    stored = IdempotentAnswer(claim.wallet_id, claim.key, claim.digest, canonical(error_answer(error)))
    s.audit.append(
        event, payload, wallet_id=claim.wallet_id, receipt=receipt, webhook=webhook,
        changes=[*changes, CompleteIdempotent(stored)],
    )  # fmt: skip
    claim.held = False
    return error


def limit_refusal(
    s: Services,
    wallet: Wallet,
    exc: LimitExceeded,
    audit_base: dict[str, Any],
    *,
    changes: Sequence[StateChange] = (),
    claim: Claim | None = None,
) -> ApiError:
    """Audit a reservation refused by the period limits (a concurrent request got there first), with ``changes``
    (the request's timestamp, if not recorded yet) and, for a ``claim``, the stored answer in the same store
    transaction; the 403."""
    reasons = [
        {"verdict": "deny", "rule": "reservation", "message": "period limit reached by concurrent requests",
         "seen": f"{asset}/{window}s", "allowed": str(cap)}
        for (asset, window), (_total, cap) in sorted(exc.excess.items())
    ]  # fmt: skip
    payload = {**audit_base, "reservation": reasons}
    error = ApiError(Code.LIMIT_EXCEEDED, "the period limit was reached", reasons=reasons)
    if claim is not None:
        return refuse(s, claim, error, "transaction.denied", payload, changes=changes)
    s.audit.append("transaction.denied", payload, wallet_id=wallet.wallet_id, changes=changes)
    return error


def escalate(
    s: Services,
    claim: Claim,
    request: SignRequest,
    base: Mapping[str, Any],
    decision: dict[str, Any],
    *,
    now: float,
    changes: Sequence[StateChange] = (),
    audit: Mapping[str, Any] | None = None,
    receipt: bytes | None = None,
) -> Answer:
    """An escalated request (``decision``: the proxy's, or the enclave's) waits for the owner: ``changes`` (the
    request's timestamp, unless recorded already), the pending approval, its ``transaction.escalated`` record
    (with the enclave's ``receipt``, if the enclave escalated) and ``approval.pending`` webhook, and the answer
    stored under the claimed key, in one store transaction; the 202 with the approval id. The approval's stored
    request names the key (the agent's ``request``), its digest (``request_sha256``) and what the 202 is made of,
    so that the owner's decision can replace it (`escalation_answers.agent_answer`). With `MAX_PENDING_APPROVALS`
    already waiting (a condition of the approval's own write), refused instead: 429 ``rate_limited``,
    ``transaction.refused`` with ``changes`` and the receipt, not a denial; nothing is stored under the key, which
    is freed (the agent retries it once the owner has decided some). An approval of the same transaction message
    that was signed (`ApprovalSigned`, checked first) answers with its signature instead (`join_signed`); one still
    open (`ApprovalPending`) is joined (`join`); if the owner decides it before the
    join is written, nothing is, and the request escalates anew (at most `MAX_ESCALATION_ATTEMPTS` writes in all,
    then `StoreUnavailable`: 503, the caller gives the key back). ``base``: the request's audit fields
    (``request_id``, ``token_id``, ``request_sha256``); ``audit``: more fields of the records (an enclave answer's
    ``message_sha256``)."""
    wallet_id = claim.wallet_id
    payload = {**base, **(audit or {}), "decision": decision}
    approval_id = uuid.uuid4().hex
    escalated = {**payload, "approval_id": approval_id}
    webhook = s.webhook_item(wallet_id, "approval.pending", escalated)
    stored_request = canonical({"request": request.to_json(), "decision": decision, **base})
    approval = Approval(
        approval_id, wallet_id, stored_request, ApprovalStatus.PENDING, now,
        message_hash=message_hash(request.transaction),
    )  # fmt: skip
    body = escalation_answers.pending_body(base["request_id"], approval_id, decision)
    answer = IdempotentAnswer(wallet_id, claim.key, claim.digest, escalation_answers.stored_response(202, body))
    create = CreateApproval(approval, max_pending=MAX_PENDING_APPROVALS)
    written = [*changes, create, CompleteIdempotent(answer)]
    for _ in range(MAX_ESCALATION_ATTEMPTS):
        try:
            s.audit.append(
                "transaction.escalated", escalated, wallet_id=wallet_id, receipt=receipt, webhook=webhook,
                changes=written,
            )  # fmt: skip
        except ApprovalSigned as signed:
            return join_signed(s, claim, signed.approval_id, payload, changes=changes, receipt=receipt)
        except ApprovalPending as open_approval:
            try:
                return join(s, claim, open_approval.approval_id, payload, changes=changes, receipt=receipt)
            except ApprovalClosed:  # decided since the store named it: nothing was written, escalate anew
                continue
        except ApprovalQueueFull as full:
            error = ApiError(
                Code.RATE_LIMITED,
                f"{full.limit} approvals of this wallet are waiting for the owner; another can wait only after the "
                "owner decides some",
            )
            reason = {"reason": f"{full.limit} approvals pending (at most {full.limit})"}
            # Audited, not stored: the queue may have room by the agent's retry with the same key (its reaction to
            # a 429), as the token bucket's 429 is not stored either.
            s.audit.append("transaction.refused", {**payload, **reason}, wallet_id=wallet_id, receipt=receipt,
                           changes=changes)  # fmt: skip
            give_back.abandon(s, wallet_id, claim.key, claim.digest)
            claim.held = False
            raise error from full
        claim.held = False
        return Answer(202, body)
    raise StoreUnavailable(
        f"the open approval of this transaction was decided before each of {MAX_ESCALATION_ATTEMPTS} joins; "
        "nothing was written"
    )


def join(
    s: Services,
    claim: Claim,
    approval_id: str,
    payload: Mapping[str, Any],
    *,
    changes: Sequence[StateChange],
    receipt: bytes | None,
) -> Answer:
    """An escalation of a transaction message whose approval ``approval_id`` is still open (pending, or approved and
    being signed: the same transaction escalated again, under another key or under its own once its day passed):
    no second approval (approving both would sign it twice and count it twice), no ``approval.pending`` webhook.
    The 202 that approval's own request was answered with (its ``request_id`` and decision) is stored under the
    key, with ``changes`` (the request's timestamp) and a ``transaction.escalated`` record naming the approval
    (``joined``: true; with the enclave's ``receipt`` if the enclave escalated), in one store transaction,
    conditional on the approval still being open (`ApprovalStillOpen`): one the owner decided since the store named
    it is `ApprovalClosed`, nothing written (`escalate` then tries anew), never a 202 of a decided approval. Under the
    approval's own key, that is the answer the owner's decision replaces (`escalation_answers`); under another key
    it stays the 202. ``payload``: the request's record fields (`escalate`)."""
    stored = json.loads(s.store.get_approval(approval_id).request_payload)
    body = escalation_answers.pending_body(stored["request_id"], approval_id, stored["decision"])
    record = {**payload, "approval_id": approval_id, "joined": True}
    still_open = ApprovalStillOpen(claim.wallet_id, approval_id)
    response = escalation_answers.stored_response(202, body)
    _record_join(s, claim, response, record, changes=[*changes, still_open], receipt=receipt)
    return Answer(202, body)


def join_signed(
    s: Services,
    claim: Claim,
    approval_id: str,
    payload: Mapping[str, Any],
    *,
    changes: Sequence[StateChange],
    receipt: bytes | None,
) -> Answer:
    """An escalation of a transaction message whose approval ``approval_id`` was approved and signed (the same
    transaction sent again after the owner's signing: a day later under another key, or between the signing's
    record and a join): no second approval, which approving would sign and count again; nothing goes to the
    enclave. The approval's signed answer (`Approval.signed_answer`: 200, the signature and signed transaction its
    own key replays, Ed25519 being deterministic the only one there is) is stored under the key, with ``changes``
    (the request's timestamp) and a ``transaction.escalated`` record naming the approval (``joined`` and ``signed``:
    true, ``signing_request_id``: the request id of the signing that made it; with the enclave's ``receipt`` if the
    enclave escalated), in one store transaction, and answered. A signed approval stays so (no write changes it)
    for as long as the store keeps it: never pruned. ``payload``: the request's record fields (`escalate`)."""
    wallet_id = claim.wallet_id
    approval = s.store.get_approval(approval_id)
    if approval.wallet_id != wallet_id or approval.signed_answer is None or not approval.is_signed:
        raise StoreUnavailable(f"approval {approval_id} was named as signed but does not read so; nothing was written")
    body = json.loads(approval.signed_answer)["body"]
    record = {**payload, "approval_id": approval_id, "joined": True, "signed": True,
              "signing_request_id": body["request_id"]}  # fmt: skip
    _record_join(s, claim, approval.signed_answer, record, changes=changes, receipt=receipt)
    return Answer(200, body)


def _record_join(
    s: Services,
    claim: Claim,
    response: bytes,
    record: Mapping[str, Any],
    *,
    changes: Sequence[StateChange],
    receipt: bytes | None,
) -> None:
    """The one store transaction of a join: the ``transaction.escalated`` ``record``, ``changes`` and ``response``
    stored under the request's key; the key is then the answer's, no longer the request's to give back."""
    answer = IdempotentAnswer(claim.wallet_id, claim.key, claim.digest, response)
    s.audit.append("transaction.escalated", record, wallet_id=claim.wallet_id, receipt=receipt,
                   changes=[*changes, CompleteIdempotent(answer)])  # fmt: skip
    claim.held = False


def record_escalation(
    s: Services, prepared: Prepared, origin: Origin, decision: dict[str, Any], *, message_sha256: bytes, receipt: bytes
) -> Answer:
    """Step 6 for an unsigned enclave ESCALATE of an agent request (the enclave's counters are above the
    store's: a restored older state, clock skew): release the reservation, then the pending approval exactly as
    for the proxy's own escalation (`escalate`; the request was recorded by `begin_signing`), its record with
    the enclave's receipt; no denial is counted. The 202 (or 429 with the owner's queue full)."""
    if prepared.reservation is not None:
        s.store.release(prepared.reservation)
    claim = Claim(prepared.wallet.wallet_id, prepared.key, prepared.digest, held=True)
    audit = {"message_sha256": message_sha256.hex()}
    now = read_clock(s.clock)
    return escalate(s, claim, origin.request, origin.base, decision, now=now, audit=audit, receipt=receipt)


def record_refusal(
    s: Services, prepared: Prepared, decision: dict[str, Any], base: dict[str, Any], receipt: bytes
) -> NoReturn:
    """Step 6 for an unsigned enclave answer: release, freeze if asked, record, audit, notify; raise the 403."""
    wallet_id = prepared.wallet.wallet_id
    verdict, reasons = decision.get("verdict"), decision.get("reasons")
    webhook = s.webhook_item(wallet_id, "transaction.denied", base)
    if prepared.reservation is not None:
        s.store.release(prepared.reservation)
    frozen = verdict == "freeze"
    error = ApiError(
        Code.WALLET_FROZEN if frozen else Code.ENCLAVE_REFUSED,
        "the enclave refused to sign",
        reasons=reasons if isinstance(reasons, list) else [],
    )
    # The denial (the request was recorded by `begin_signing`), a freeze, and the stored answer: one transaction
    # with the record.
    reason = "enclave freeze decision" if frozen else None
    changes: list[StateChange] = denial_changes(wallet_id, read_clock(s.clock), reason, request=False)
    if prepared.idempotent:
        answer = canonical(error_answer(error))
        changes.append(CompleteIdempotent(IdempotentAnswer(wallet_id, prepared.key, prepared.digest, answer)))
    owner = prepared.approval
    if owner is not None:  # a decision: the owner's approval stays consumed, its signing over; the agent's answer
        changes.append(FinishApproval(owner.approval_id, prepared.request_id))
        if owner.agent is not None:
            changes.append(escalation_answers.settled(wallet_id, owner.agent, error.status, error.body()))
    s.audit.append("transaction.refused", base, wallet_id=wallet_id, receipt=receipt, webhook=webhook,
                   changes=changes)  # fmt: skip
    raise error
