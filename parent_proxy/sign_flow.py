"""The signing request flow (DESIGN.md section 4), from an authenticated agent request to the answer.

    1. idempotency: look the key up (a completed key replays its stored answer; another request under it is
       409); the key is claimed, atomically, with the first write of the path taken below
    2. load the wallet and its owner-signed policy (a frozen wallet or a missing policy: 403)
    3. first policy check: decode, and evaluate with the store's counters (spent per window, recent requests and
       denials); the request is recorded for the rate rule
    4. DENY / FREEZE: record the denial (FREEZE also freezes the wallet), audit, notify and store the answer
       under the key (one store transaction, `sign_outcomes.refuse`), 403 with the reasons
       ESCALATE: a pending approval is created WITHOUT a reservation (nothing is held while the owner decides; the
       amounts are reserved, against the approval ceilings, when the owner approves: `parent_proxy.approvals`),
       audit, notify and store the answer (one transaction), 202 with the approval id (the owner's decision
       replaces it under the key: `parent_proxy.escalation_answers`); with `MAX_PENDING_APPROVALS` already waiting
       for the owner, the request is refused instead (429 ``rate_limited``, audited as ``transaction.refused``, the
       key freed), so an agent cannot grow the owner's queue without bound; the same transaction message with an
       approval still open joins it instead (its 202, no second approval: `sign_outcomes.join`), and one whose
       approval was signed is answered with that signature (200, nothing relayed: `sign_outcomes.join_signed`)
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
       stored answer, the end of an owner approval's signing (refused if the approval was reopened meanwhile:
       `parent_proxy.stalled_approvals`), on the condition that the wallet is as step 2 read it (frozen or ordered
       since: the signature withheld, 403 ``wallet_frozen``, `parent_proxy.withheld`) -- if it cannot be written
       the signature is not handed out, the reservation is released and the key freed (written or not, unknown:
       `parent_proxy.outcome_unknown` finds out first) --; optionally submit through the chain adapter
       (`parent_proxy.submission`); answer.
       An unsigned answer: the reservation released, then, with its receipt in the audit record and the answer
       stored under the key in one store transaction:
       - enclave ESCALATE of an agent request (its per-boot counters are above the store's: a restored older
         state, clock skew): the escalation it is, not a denial -- a pending approval exactly as in step 4
         (`sign_outcomes.escalate`: ``transaction.escalated``, ``approval.pending``, 429 ``rate_limited`` with the
         queue full), 202 with the approval id and the enclave's decision; once the owner approves,
         `parent_proxy.approvals` relays it with the approval;
       - enclave DENY / FREEZE (and any other unsigned answer, an owner-approved request's included): a denial is
         counted (FREEZE also freezes the wallet), ``transaction.refused``, 403 ``enclave_refused`` (or
         ``wallet_frozen``) with the enclave's reasons.

Nothing is retried. A failure before any effect abandons the idempotency claim, so the caller may retry with the
same key, and so does the queue-full 429; a decision (deny, escalate, signed) is stored under the key and replayed.
The values and pure steps are in `parent_proxy.sign_parts`, the writers of the unsigned outcomes (refusals,
escalations) in `parent_proxy.sign_outcomes`, the signer check and the record of a signed answer in
`parent_proxy.signed_answer`.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
from solders.pubkey import Pubkey
from solders.signature import Signature

from enclave_app.protocol import TransactionDecisionResponse
from parent_proxy import give_back, signed_answer, submission
from parent_proxy import sign_outcomes as outcomes
from parent_proxy.api_errors import ApiError, Code, translate
from parent_proxy.auth import Agent
from parent_proxy.clock import read_clock
from parent_proxy.enclave_sessions import failure_code
from parent_proxy.errors import LimitExceeded, ProxyError
from parent_proxy.receipt_checks import Expected
from parent_proxy.services import Services
from parent_proxy.sign_parts import (
    Answer,
    Claim,
    Origin,
    Prepared,
    SignRequest,
    agent_key,
    decide,
    denial_changes,
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
from parent_proxy.store.model import Reservation, Wallet
from parent_proxy.store.state_changes import RecordEvent
from policies.decision import Decision, Verdict
from policies.document import Policy
from policies.errors import PolicyEngineError

__all__ = [
    "Answer", "Prepared", "SignFlow", "SignRequest", "TablesNeeded", "decide", "eval_context", "refusal",
    "spent_entries",
]  # fmt: skip


class TablesNeeded(Exception):
    """`SignFlow.prepare` was given no table contents (``tables=None``: not read, the wallet being frozen or without
    a policy when the request came) and the wallet is no longer either: the decision needs the tables. Raised before
    anything is written (no key claimed, no record), so the caller reads them and runs the checks again."""


class SignFlow:
    def __init__(self, services: Services) -> None:
        self.s = services

    # -- step 1-4 (one worker-thread hop) ----------------------------------------------------------------------
    def prepare(
        self, agent: Agent, request: SignRequest, tables: Mapping[Pubkey, Sequence[Pubkey]] | None
    ) -> Prepared | Answer:
        """Steps 1-4. ``tables``: the contents of the request's lookup tables; None when they were not read because
        the wallet was refused before the chain read (frozen, no policy: `parent_proxy.api_agent`), which then
        answers as without them, or raises `TablesNeeded` if the wallet is no longer refused."""
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
            except TablesNeeded:  # raised before the key is claimed or anything written
                raise
            except ApiError:
                # A refusal stores its answer with its record (`sign_outcomes.refuse`); anything else frees the key.
                if claim.held:
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
        tables: Mapping[Pubkey, Sequence[Pubkey]] | None,
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
            raise outcomes.refuse(s, claim, error, "transaction.refused", {**base, "reason": "wallet frozen"})
        try:
            policy = verified_policy(s, wallet)
        except ApiError as exc:  # a stored policy that no longer verifies (logged): refused, the key claimed
            if (replay := self._claim(claim, now)) is not None:
                return replay
            raise outcomes.refuse(
                s, claim, exc, "transaction.refused", {**base, "reason": "stored policy does not verify"}
            ) from exc
        if policy is None:
            if (replay := self._claim(claim, now)) is not None:
                return replay
            error = ApiError(Code.NO_POLICY, "the wallet has no policy: everything is denied")
            raise outcomes.refuse(s, claim, error, "transaction.refused", {**base, "reason": "no policy"})
        if tables is None:  # not read: the wallet was frozen or without a policy then; nothing written so far
            raise TablesNeeded
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
                recorded = [RecordEvent(wallet_id, "request", now)]
                raise outcomes.limit_refusal(s, wallet, exc, payload, changes=recorded, claim=claim) from exc
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
            raise outcomes.refuse(s, claim, refusal(decision, frozen), event, payload, webhook=webhook, changes=changes)
        # ESCALATE: a pending approval, with the request's timestamp.
        changes = [RecordEvent(wallet_id, "request", now)]
        return outcomes.escalate(s, claim, request, base, decision.to_json(), now=now, changes=changes)

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
            raise outcomes.limit_refusal(self.s, wallet, exc, audit_base) from exc

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
        *,
        session_public_key: bytes,
    ) -> Answer:
        """Step 6 for an enclave answer whose receipt verified: check the signer
        (`signed_answer.check_agent_signature`), then commit (`signed_answer.record_signed`) or release, audit,
        notify; the 202 of an agent request the enclave escalates (`sign_outcomes.record_escalation`); raise for a
        refusal. ``message_sha256``: `message_hash` of ``transaction`` (the one the receipt was checked against);
        ``session_public_key``: the key the receipt verified under, named in the answer so that the agent can fetch
        the attestation of the enclave that signed (`parent_proxy.attestation.attest_session`)."""
        s = self.s
        signed_answer.check_agent_signature(s, prepared, answer, transaction)
        verdict = answer.decision.get("verdict")
        base = {"request_id": prepared.request_id, "message_sha256": message_sha256.hex(), "decision": answer.decision}
        receipt = answer.receipt + answer.receipt_signature
        s.metrics.count("waiaas_decisions_total", verdict=str(verdict), stage="enclave")
        if answer.signature is None or answer.signed_transaction is None or verdict not in ("allow", "escalate"):
            unsigned = answer.signature is None and answer.signed_transaction is None
            try:
                if unsigned and verdict == "escalate" and prepared.origin is not None:
                    # An agent request the proxy allowed and the enclave escalates: it waits for the owner.
                    return outcomes.record_escalation(
                        s, prepared, prepared.origin, answer.decision, message_sha256=message_sha256, receipt=receipt
                    )
                outcomes.record_refusal(s, prepared, answer.decision, base, receipt)
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
                "session_public_key": str(Pubkey.from_bytes(session_public_key)),
            },
            "submission": None,
        }
        return signed_answer.record_signed(s, prepared, body, base, receipt, submit=submit)

    # -- the whole flow -----------------------------------------------------------------------------------------
    async def run(
        self,
        agent: Agent,
        request: SignRequest,
        tables: Mapping[Pubkey, Sequence[Pubkey]] | None,
    ) -> Answer:
        """The whole flow; ``tables`` None: not read (`prepare`), so never relayed (no decision is made without
        them)."""
        return await self.run_checks(lambda: (request, self.prepare(agent, request, tables)), tables or {})

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
                await s.run(give_back.failed, s, prepared, failure_code(exc))
            if isinstance(exc, ApiError):
                raise
            if isinstance(exc, Exception):
                raise ApiError(Code.ENCLAVE_UNAVAILABLE, "the enclave is unavailable; nothing was signed") from exc
            raise
        # The receipt is checked against the attested session key and the message sent (also for a refusal), then
        # the signer, in the same hop (`finish`).
        answer = await s.sessions.record_checked(
            s, enclave_answer.receipt, enclave_answer.receipt_signature,
            Expected("transaction", prepared.wallet.wallet_id, sent_hash,
                     signed=enclave_answer.signature is not None, decision=enclave_answer.decision),
            record=lambda checked: self.finish(
                prepared, enclave_answer, submit, transaction, sent_hash, session_public_key=checked.session_public_key
            ),
            on_failure=lambda error: give_back.failed(s, prepared, error),
        )  # fmt: skip
        if submit and answer.status == 200:  # a signed transaction (not an escalation by the enclave)
            return await submission.submit(s, prepared, answer)
        return answer
