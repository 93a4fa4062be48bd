"""The signing request flow (DESIGN.md section 4), from an authenticated agent request to the answer.

    1. idempotency: look the key up (a completed key replays its stored answer; another request under it is
       409); the key is claimed, atomically, with the first write of the path taken below
    2. load the wallet and its owner-signed policy (a frozen wallet or a missing policy: 403)
    3. first policy check: decode, and evaluate with the store's counters (spent per window, recent requests and
       denials); the request is recorded for the rate rule
    4. DENY / FREEZE: record the denial (FREEZE also freezes the wallet), audit, notify and store the answer
       under the key (one store transaction, `_refuse`), 403 with the reasons
       ESCALATE: a pending approval is created WITHOUT a reservation (nothing is held while the owner decides; the
       amounts are reserved, against the approval ceilings, when the owner approves: `parent_proxy.approvals`),
       audit, notify and store the answer (one transaction), 202 with the approval id; with
       `MAX_PENDING_APPROVALS` already waiting for the owner, the request is refused instead (429
       ``rate_limited``, audited as ``transaction.refused``), so an agent cannot grow the owner's queue without bound
       ALLOW: one store transaction (`Store.begin_signing`) claims the key, records the request and reserves the
       amounts against the automatic thresholds of every period (a concurrent request that got there first: 403
       ``limit_exceeded``)
    5. relay to the enclave (its decision is authoritative); commit the reservation only on a signed answer,
       release it on anything else, including a timeout or a cancelled request; the answer's receipt (a refusal's
       too) must verify under the attested session key, agree with the answer and be about the message sent
       (`parent_proxy.enclave_sessions`; on a session change the enclave is attested and an ``enclave.session``
       record written first), else 503 as for any malformed answer; then a signed transaction must be the one
       requested, carrying a signature that verifies under the wallet's stored agent key in that key's signer slot
       (`enclave_relay.signed_by`), else the same 503 and give-back (an enclave holding the wallet with another
       key, say)
    6. one store transaction (`Store.finish_signing`): commit, audit record (with the enclave receipt), webhook,
       stored answer -- if it cannot be written the signature is not handed out, the reservation is released
       and the key freed --; optionally submit through the chain adapter (`parent_proxy.submission`); answer.
       An unsigned answer: the reservation released, then, with its receipt in the audit record and the answer
       stored under the key in one store transaction:
       - enclave ESCALATE of an agent request (its per-boot counters are above the store's: a restored older
         state, clock skew): the escalation it is, not a denial -- a pending approval exactly as in step 4
         (`_escalate`: ``transaction.escalated``, ``approval.pending``, 429 ``rate_limited`` with the queue full),
         202 with the approval id and the enclave's decision; once the owner approves, `parent_proxy.approvals`
         relays it with the approval;
       - enclave DENY / FREEZE (and any other unsigned answer, an owner-approved request's included): a denial is
         counted (FREEZE also freezes the wallet), ``transaction.refused``, 403 ``enclave_refused`` (or
         ``wallet_frozen``) with the enclave's reasons.

Nothing is retried. A failure before any effect abandons the idempotency claim, so the caller may retry with the
same key; a decision (deny, escalate, signed) is stored under the key and replayed. The values and pure steps
are in `parent_proxy.sign_parts`.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NoReturn

import anyio
from solders.pubkey import Pubkey
from solders.signature import Signature

from enclave_app.protocol import TransactionDecisionResponse
from parent_proxy import give_back, submission
from parent_proxy.api_errors import ApiError, Code, translate
from parent_proxy.auth import Agent
from parent_proxy.clock import read_clock
from parent_proxy.enclave_relay import signed_by
from parent_proxy.enclave_sessions import Expected
from parent_proxy.errors import ApprovalQueueFull, LimitExceeded, ProxyError
from parent_proxy.services import Services, canonical
from parent_proxy.sign_parts import (
    Answer,
    Claim,
    Origin,
    Prepared,
    SignRequest,
    agent_key,
    decide,
    denial_changes,
    error_answer,
    eval_context,
    limits_for,
    message_hash,
    refusal,
    replayed,
    reserved_amounts,
    spent_entries,
    verified_policy,
    wire_tables,
)
from parent_proxy.store.model import (
    Approval,
    ApprovalStatus,
    CompleteIdempotent,
    CreateApproval,
    IdempotentAnswer,
    OutboxItem,
    RecordEvent,
    Reservation,
    StateChange,
    Wallet,
)
from policies.decision import Decision, Verdict
from policies.document import Policy
from policies.errors import PolicyEngineError

__all__ = ["Answer", "Prepared", "SignFlow", "SignRequest", "decide", "eval_context", "refusal", "spent_entries"]

logger = logging.getLogger(__name__)

MAX_PENDING_APPROVALS: Final = 100
"""Escalations waiting for the owner, per wallet, beyond which a request that escalates (by the proxy's check or
the enclave's) is refused. The bound is a condition of the approval's own write (`CreateApproval.max_pending`), so
it holds exactly under concurrency."""

NOT_THE_AGENT_KEY = "the signature is not the stored agent key's over the requested transaction"
"""The audit reason of a ``transaction.failed`` record for a signed answer that `signed_by` refuses."""


class SignFlow:
    def __init__(self, services: Services) -> None:
        self.s = services

    # -- step 1-4 (one worker-thread hop) ----------------------------------------------------------------------
    def prepare(
        self, agent: Agent, request: SignRequest, tables: Mapping[Pubkey, Sequence[Pubkey]]
    ) -> Prepared | Answer:
        s, wallet_id = self.s, agent.wallet_id
        key, digest = agent_key(request.idempotency_key), request.digest()
        # The reads up to the first write (key, wallet, counters) share one read transaction (`Store.reading`).
        with s.store.reading():
            # A read first: a replay answers without evaluating. The key is claimed below, atomically with the first
            # write of the path taken (a concurrent request with the same key loses that claim and replays).
            stored = self.stored_answer(wallet_id, key, digest)
            if stored is not None:
                return stored
            claim = Claim(wallet_id, key, digest)
            try:
                return self._checks(agent, request, tables, claim)
            except ApiError:
                if claim.held:  # a refusal stores its answer with its record (`_refuse`); anything else frees the key
                    give_back.abandon(s, wallet_id, key, digest)
                raise
            except BaseException as exc:
                if claim.held:
                    give_back.abandon(s, wallet_id, key, digest)
                s.audit_safely(
                    "transaction.failed", {"stage": "checks", "error": type(exc).__name__}, wallet_id=wallet_id
                )
                raise

    def stored_answer(self, wallet_id: str, key: str, digest: bytes) -> Answer | None:
        """Step 1 alone, read only: the answer stored under ``key`` (a replay), None if the key is free; 409 if it
        holds another request or one in progress (the store's errors)."""
        previous = self.s.store.lookup_idempotent(wallet_id, key, digest, read_clock(self.s.clock))
        return None if previous is None else replayed(previous)

    def _claim(self, claim: Claim, now: float) -> Answer | None:
        """Claim the key on a path other than ALLOW (its own transaction); a replay if another request won it."""
        previous = self.s.store.begin_idempotent(claim.wallet_id, claim.key, claim.digest, now)
        if previous is not None:
            return replayed(previous)
        claim.held = True
        return None

    def _checks(
        self,
        agent: Agent,
        request: SignRequest,
        tables: Mapping[Pubkey, Sequence[Pubkey]],
        claim: Claim,
    ) -> Prepared | Answer:
        s, wallet_id = self.s, agent.wallet_id
        request_id = uuid.uuid4().hex
        base = {"request_id": request_id, "token_id": agent.token_id, "request_sha256": claim.digest.hex()}
        now = read_clock(s.clock)
        wallet = s.store.get_wallet(wallet_id)
        if wallet.frozen:
            if (replay := self._claim(claim, now)) is not None:
                return replay
            error = ApiError(Code.WALLET_FROZEN, "the wallet is frozen until the owner unfreezes it")
            raise self._refuse(claim, error, "transaction.refused", {**base, "reason": "wallet frozen"})
        try:
            policy = verified_policy(s, wallet)
        except ApiError as exc:  # a stored policy that no longer verifies (logged): refused, the key claimed
            if (replay := self._claim(claim, now)) is not None:
                return replay
            raise self._refuse(
                claim, exc, "transaction.refused", {**base, "reason": "stored policy does not verify"}
            ) from exc
        if policy is None:
            if (replay := self._claim(claim, now)) is not None:
                return replay
            error = ApiError(Code.NO_POLICY, "the wallet has no policy: everything is denied")
            raise self._refuse(claim, error, "transaction.refused", {**base, "reason": "no policy"})
        ctx, requests, denials = eval_context(s, wallet, policy, now)
        decision = decide(policy, request.transaction, tables, ctx)
        s.metrics.count("waiaas_decisions_total", verdict=decision.verdict.label, stage="proxy")
        payload = {**base, "decision": decision.to_json()}
        if decision.verdict is Verdict.ALLOW:
            # Claim the key, record the request and reserve the amounts: one transaction.
            amounts = reserved_amounts(decision)
            caps = limits_for(policy, set(amounts), approved=False)
            try:
                started = s.store.begin_signing(
                    wallet_id, claim.key, claim.digest, request_id=request_id, amounts=amounts, limits=caps, now=now
                )
            except LimitExceeded as exc:  # nothing was written: claim and record the request, then refuse
                if (replay := self._claim(claim, now)) is not None:
                    return replay
                raise self.limit_refusal(wallet, exc, payload, [RecordEvent(wallet_id, "request", now)], claim) from exc
            if started.replay is not None:
                return replayed(started.replay)
            claim.held = True
            return Prepared(
                wallet, policy, request_id, claim.key, claim.digest, started.reservation, spent_entries(ctx),
                requests, denials, decision, origin=Origin(request, base),
            )  # fmt: skip
        if (replay := self._claim(claim, now)) is not None:
            return replay
        # Each decision's changes (request and denial timestamps, a freeze, a new approval) are written in one store
        # transaction with its audit record and webhook item: a record that cannot be written leaves none behind.
        if decision.verdict >= Verdict.DENY:
            frozen = decision.verdict is Verdict.FREEZE
            webhook = s.webhook_item(wallet_id, "wallet.frozen" if frozen else "transaction.denied", payload)
            trigger = next((r.rule for r in decision.reasons if r.verdict is Verdict.FREEZE), None) if frozen else None
            changes = denial_changes(wallet_id, now, None if trigger is None else f"policy freeze trigger: {trigger}")
            event = "transaction.frozen" if frozen else "transaction.denied"
            raise self._refuse(claim, refusal(decision, frozen), event, payload, webhook=webhook, changes=changes)
        # ESCALATE: a pending approval, with the request's timestamp.
        changes = [RecordEvent(wallet_id, "request", now)]
        return self._escalate(claim, request, base, decision.to_json(), now, changes=changes)

    def _escalate(
        self,
        claim: Claim,
        request: SignRequest,
        base: Mapping[str, Any],
        decision: dict[str, Any],
        now: float,
        *,
        changes: Sequence[StateChange] = (),
        audit: Mapping[str, Any] | None = None,
        receipt: bytes | None = None,
    ) -> Answer:
        """An escalated request (``decision``: the proxy's, or the enclave's) waits for the owner: ``changes`` (the
        request's timestamp, unless recorded already), the pending approval, its ``transaction.escalated`` record
        (with the enclave's ``receipt``, if the enclave escalated) and ``approval.pending`` webhook, and the answer
        stored under the claimed key, in one store transaction; the 202 with the approval id. With
        `MAX_PENDING_APPROVALS` already waiting (a condition of the approval's own write), refused instead: 429
        ``rate_limited``, ``transaction.refused`` with ``changes`` and the receipt, not a denial. ``base``: the
        request's audit fields; ``audit``: more fields of the records (an enclave answer's ``message_sha256``)."""
        s, wallet_id = self.s, claim.wallet_id
        payload = {**base, **(audit or {}), "decision": decision}
        approval_id = uuid.uuid4().hex
        escalated = {**payload, "approval_id": approval_id}
        webhook = s.webhook_item(wallet_id, "approval.pending", escalated)
        stored_request = canonical({"request": request.to_json(), "decision": decision, **base})
        approval = Approval(approval_id, wallet_id, stored_request, ApprovalStatus.PENDING, now)
        body = {
            "status": "pending_approval",
            "request_id": base["request_id"],
            "approval_id": approval_id,
            "decision": decision,
        }
        answer = IdempotentAnswer(wallet_id, claim.key, claim.digest, canonical({"status_code": 202, "body": body}))
        create = CreateApproval(approval, max_pending=MAX_PENDING_APPROVALS)
        written = [*changes, create, CompleteIdempotent(answer)]
        try:
            s.audit.append(
                "transaction.escalated", escalated, wallet_id=wallet_id, receipt=receipt, webhook=webhook,
                changes=written,
            )  # fmt: skip
        except ApprovalQueueFull as full:
            error = ApiError(
                Code.RATE_LIMITED,
                f"{full.limit} approvals of this wallet are waiting for the owner; another can wait only after the "
                "owner decides some",
            )
            reason = {"reason": f"{full.limit} approvals pending (at most {full.limit})"}
            raise self._refuse(claim, error, "transaction.refused", {**payload, **reason}, changes=changes,
                               receipt=receipt) from full  # fmt: skip
        claim.held = False
        return Answer(202, body)

    def _refuse(
        self,
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
        changes = [*changes, CompleteIdempotent(stored)]
        self.s.audit.append(
            event, payload, wallet_id=claim.wallet_id, receipt=receipt, webhook=webhook, changes=changes
        )
        claim.held = False
        return error

    def limit_refusal(
        self,
        wallet: Wallet,
        exc: LimitExceeded,
        audit_base: dict[str, Any],
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
            return self._refuse(claim, error, "transaction.denied", payload, changes=changes)
        self.s.audit.append("transaction.denied", payload, wallet_id=wallet.wallet_id, changes=changes)
        return error

    def reserve(
        self,
        wallet: Wallet,
        policy: Policy,
        decision: Decision,
        request_id: str,
        now: float,
        *,
        approved: bool,
        audit_base: dict[str, Any],
    ) -> Reservation | None:
        amounts = reserved_amounts(decision)
        if not amounts:
            return None
        caps = limits_for(policy, set(amounts), approved=approved)
        try:
            return self.s.store.reserve(wallet.wallet_id, request_id, amounts, caps, now)
        except LimitExceeded as exc:
            raise self.limit_refusal(wallet, exc, audit_base) from exc

    # -- step 5 (async) -----------------------------------------------------------------------------------------
    async def relay(
        self, prepared: Prepared, transaction: bytes, tables: Mapping[Pubkey, Sequence[Pubkey]], approval: bytes | None
    ) -> TransactionDecisionResponse:
        s = self.s
        await s.relay.ensure_wallet(prepared.wallet)
        return await s.relay.sign_transaction(
            prepared.wallet.wallet_id,
            transaction,
            lookup_tables=wire_tables(tables),
            spent=prepared.spent,
            requests_in_window=prepared.requests_in_window,
            denials_in_window=prepared.denials_in_window,
            approval=approval,
        )

    # -- step 5-6 (worker-thread hops; what a failure gives back: `parent_proxy.give_back`) -----------------------
    def finish(
        self,
        prepared: Prepared,
        answer: TransactionDecisionResponse,
        submit: bool,
        transaction: bytes,
        message_sha256: bytes,
    ) -> Answer:
        """Step 6 for an enclave answer whose receipt verified: check the signer (`_check_agent_signature`), then
        commit or release, audit, notify; raise for a refusal. ``message_sha256``: `message_hash` of
        ``transaction`` (the one the receipt was checked against)."""
        s, wallet_id = self.s, prepared.wallet.wallet_id
        self._check_agent_signature(prepared, answer, transaction)
        verdict = answer.decision.get("verdict")
        base = {"request_id": prepared.request_id, "message_sha256": message_sha256.hex(), "decision": answer.decision}
        receipt = answer.receipt + answer.receipt_signature
        s.metrics.count("waiaas_decisions_total", verdict=str(verdict), stage="enclave")
        if answer.signature is None or answer.signed_transaction is None or verdict not in ("allow", "escalate"):
            unsigned = answer.signature is None and answer.signed_transaction is None
            try:
                if unsigned and verdict == "escalate" and prepared.origin is not None:
                    # An agent request the proxy allowed and the enclave escalates: it waits for the owner.
                    return self._record_escalation(prepared, prepared.origin, answer.decision, message_sha256, receipt)
                self._record_refusal(prepared, answer.decision, base, receipt)
            except ApiError:
                raise
            except BaseException:  # the store failed part-way (503): give back, as for any 503
                give_back.give_back(self.s, prepared)
                raise
        body = {
            "status": "signed",
            "request_id": prepared.request_id,
            "signature": str(Signature.from_bytes(answer.signature)),
            "signed_transaction": base64.b64encode(answer.signed_transaction).decode(),
            "decision": answer.decision,
            "receipt": {
                "receipt": base64.b64encode(answer.receipt).decode(),
                "signature": str(Signature.from_bytes(answer.receipt_signature)),
            },
            "submission": None,
        }
        # One transaction: commit the reservation, the audit record, the webhook, the stored answer. The audit
        # record comes before the signature leaves: no record, no signature (and the reservation is released).
        event = {"request_id": prepared.request_id, "signature": body["signature"]}
        try:
            seal = s.audit.sealer(
                "transaction.signed", {**base, "signature": body["signature"]}, wallet_id=wallet_id, receipt=receipt
            )
            stored = None
            if prepared.idempotent and not submit:
                response = canonical({"status_code": 200, "body": body})
                stored = IdempotentAnswer(wallet_id, prepared.key, prepared.digest, response)
            webhook = s.webhook_item(wallet_id, "transaction.signed", event)
            s.store.finish_signing(prepared.reservation, seal, webhook, stored)
        except BaseException:  # nothing of it was written: the signature is not handed out
            give_back.give_back(self.s, prepared)
            raise
        return Answer(200, body)

    def _check_agent_signature(
        self, prepared: Prepared, answer: TransactionDecisionResponse, transaction: bytes
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
        give_back.failed(self.s, prepared, error, reason=NOT_THE_AGENT_KEY)
        raise error

    def _record_escalation(
        self, prepared: Prepared, origin: Origin, decision: dict[str, Any], message_sha256: bytes, receipt: bytes
    ) -> Answer:
        """Step 6 for an unsigned enclave ESCALATE of an agent request (the enclave's counters are above the
        store's: a restored older state, clock skew): release the reservation, then the pending approval exactly as
        for the proxy's own escalation (`_escalate`; the request was recorded by `begin_signing`), its record with
        the enclave's receipt; no denial is counted. The 202 (or 429 with the owner's queue full)."""
        s, wallet_id = self.s, prepared.wallet.wallet_id
        if prepared.reservation is not None:
            s.store.release(prepared.reservation)
        claim = Claim(wallet_id, prepared.key, prepared.digest, held=True)
        audit = {"message_sha256": message_sha256.hex()}
        now = read_clock(s.clock)
        return self._escalate(claim, origin.request, origin.base, decision, now, audit=audit, receipt=receipt)

    def _record_refusal(
        self, prepared: Prepared, decision: dict[str, Any], base: dict[str, Any], receipt: bytes
    ) -> NoReturn:
        """Step 6 for an unsigned enclave answer: release, freeze if asked, record, audit, notify; raise the 403."""
        s, wallet_id = self.s, prepared.wallet.wallet_id
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
        s.audit.append(
            "transaction.refused", base, wallet_id=wallet_id, receipt=receipt, webhook=webhook, changes=changes
        )
        raise error

    # -- the whole flow -----------------------------------------------------------------------------------------
    async def run(
        self,
        agent: Agent,
        request: SignRequest,
        tables: Mapping[Pubkey, Sequence[Pubkey]],
    ) -> Answer:
        return await self.run_checks(lambda: (request, self.prepare(agent, request, tables)), tables)

    async def run_checks(
        self,
        checks: Callable[[], tuple[SignRequest, Prepared | Answer]],
        tables: Mapping[Pubkey, Sequence[Pubkey]],
    ) -> Answer:
        """Steps 1-4 as ``checks`` (one worker-thread hop, which may authenticate first), then steps 5-6."""
        try:
            request, prepared = await self.s.run(checks)
        except (ProxyError, PolicyEngineError) as exc:
            raise translate(exc) from exc
        if isinstance(prepared, Answer):
            return prepared
        return await self.sign_prepared(prepared, request.transaction, tables, request.submit)

    async def sign_prepared(
        self,
        prepared: Prepared,
        transaction: bytes,
        tables: Mapping[Pubkey, Sequence[Pubkey]],
        submit: bool,
    ) -> Answer:
        """Steps 5-6 (the owner's approval, if any, travels in ``prepared``)."""
        s = self.s
        approval = None if prepared.approval is None else prepared.approval.envelope
        try:
            sent_hash = message_hash(transaction)  # what the receipt must be about
            enclave_answer = await self.relay(prepared, transaction, tables, approval)
        except BaseException as exc:  # includes cancellation: the reservation must not leak
            with anyio.CancelScope(shield=True):
                await s.run(give_back.failed, s, prepared, exc)
            if isinstance(exc, ApiError):
                raise
            if isinstance(exc, Exception):
                raise ApiError(Code.ENCLAVE_UNAVAILABLE, "the enclave is unavailable; nothing was signed") from exc
            raise
        # The receipt is checked against the attested session key and the message sent (also for a refusal), then
        # the signer, in the same hop (`finish`).
        try:
            answer = await s.sessions.record_checked(
                s, enclave_answer.receipt, enclave_answer.receipt_signature,
                Expected("transaction", prepared.wallet.wallet_id, sent_hash,
                         signed=enclave_answer.signature is not None, decision=enclave_answer.decision),
                record=lambda: self.finish(prepared, enclave_answer, submit, transaction, sent_hash),
                on_failure=lambda exc: give_back.failed(s, prepared, exc),
            )  # fmt: skip
        except ApiError:
            raise
        except Exception as exc:
            raise translate(exc) from exc
        if submit and answer.status == 200:  # a signed transaction (not an escalation by the enclave)
            return await submission.submit(s, prepared, answer)
        return answer
