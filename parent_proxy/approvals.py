"""Owner decisions on escalated requests (DESIGN.md section 4, tier ESCALATE).

An escalation holds no reservation while it waits. When the owner approves (a signed ``approval`` document bound
to the exact message of the stored transaction, with an expiry, see `policies.orders`; the owner
request signature over the URL binds the approval id):

0. the approval must still be pending: a second decision is 409 ``conflict`` before anything is evaluated or
   recorded (an owner retrying an approval that went through must not read "the policy denies this request",
   made true by the first approval's own spending, nor leave an ``approval.refused`` record); step 3 stays the
   atomic guard against a concurrent decision;
1. the document's signature is verified with the wallet's owner key, its wallet, message hash and expiry checked;
2. the wallet must not be frozen and its stored policy must verify (else 403 ``no_policy``); the request is
   evaluated again with today's counters: if the policy now DENIES it (e.g. the approval ceiling of a period is
   used up) the approval stays pending and the answer is 403;
3. the approval is marked approved (a second decision is 409: a request is signed at most once), in one store
   transaction with its ``approval.approved`` record; if that transaction's answer is lost, the store finds out
   from its record (DynamoDB), and when even that cannot tell (`StoreOutcomeUnknown`), the approval goes on only
   if it reads as approved by this very decision, else 503 (a pending one may be approved again);
4. the amounts are reserved against the *approval ceilings*, and the request is relayed with the owner's signed
   approval (the enclave verifies it itself) -- then the same commit/release, audit and notification as a direct
   signature. The owner's answer carries the signed transaction; the agent learns it from the webhook, and from
   its own idempotency key: the transaction that records the outcome (signed, or refused by the enclave) also
   replaces the 202 stored under it (`parent_proxy.escalation_answers`).
   A failure before a signature leaves the proxy (enclave unavailable or answering an error code, store failure
   at reserve or commit: mostly a 503) gives everything back, as for an agent request: the reservation is released
   and the approval is pending again, with its ``approval.reopened`` record in the same transaction, so the owner
   can approve it once more (if that transaction fails the approval stays consumed: never signed twice, never
   changed without its record). So does a signature withheld because the wallet was frozen while it was made
   (`parent_proxy.withheld`: 403 ``wallet_frozen``): the approval is pending again, for the owner to reject or to
   approve once unfrozen. An enclave decision to refuse (an answer with its reasons) is a decision: the approval
   stays consumed.
5. the approval names its signing (``signing``: the request id of step 4, fresh for each decision) from step 3
   until the transaction that records the signing's outcome (`Store.finish_signing` of a signature, the
   ``transaction.refused`` record of an enclave refusal) ends it with a `FinishApproval`, refused unless the
   approval is still approved for that signing. A process that dies in between (SIGKILL, OOM, power loss) leaves
   it approved with nothing signed: `parent_proxy.stalled_approvals` reopens it after
   `stalled_approvals.STALLED_APPROVAL_SECONDS`, conditionally on the same signing, so a signing and a reopening of
   one decision exclude each other and a reopened approval's first signing can never be recorded or handed out
   (see there for why this cannot sign twice).

A rejection (the owner request signature alone) marks the approval rejected, audits and notifies, and replaces the
agent's 202 by 403 ``rejected_by_owner``, in one store transaction (`Store.apply_audited`): if the record cannot be
written the approval stays pending (503).
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from solders.pubkey import Pubkey

from parent_proxy import escalation_answers, give_back
from parent_proxy.api_errors import ApiError, Code, owner_document_refused
from parent_proxy.clock import read_clock
from parent_proxy.errors import StoreOutcomeUnknown
from parent_proxy.services import Services
from parent_proxy.sign_flow import Answer, Prepared, SignFlow, decide, eval_context, refusal, spent_entries
from parent_proxy.sign_parts import OwnerApproval, message_hash, verified_policy
from parent_proxy.store.model import Approval, ApprovalStatus, Wallet
from parent_proxy.store.state_changes import DecideApproval, StateChange
from policies.decision import Verdict
from policies.errors import PolicyEngineError
from policies.orders import check_approval

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Pending:
    """The stored request of an approval, ready to be relayed."""

    prepared: Prepared
    transaction: bytes
    tables: tuple[Pubkey, ...]


class ApprovalFlow:
    def __init__(self, services: Services, flow: SignFlow) -> None:
        self.s = services
        self.flow = flow

    def _load(self, wallet_id: str, approval_id: str) -> tuple[Wallet, Approval, dict[str, Any]]:
        wallet = self.s.store.get_wallet(wallet_id)
        approval = self.s.store.get_approval(approval_id)
        if approval.wallet_id != wallet_id:
            raise ApiError(Code.NOT_FOUND, "not found")
        return wallet, approval, json.loads(approval.request_payload)

    def _load_pending(self, wallet_id: str, approval_id: str) -> tuple[Wallet, dict[str, Any]]:
        """Step 0: `_load`, and 409 unless the approval is still pending (step 3 is the atomic check; this one
        answers a decided approval before any other)."""
        wallet, approval, stored = self._load(wallet_id, approval_id)
        if approval.status is not ApprovalStatus.PENDING:
            raise ApiError(Code.CONFLICT, "the approval has already been decided")
        return wallet, stored

    def reject(self, wallet_id: str, approval_id: str) -> Answer:
        s = self.s
        _wallet, _approval, stored = self._load(wallet_id, approval_id)
        audit = {"approval_id": approval_id, "request_id": stored["request_id"]}
        webhook = s.webhook_item(wallet_id, "approval.rejected", audit)
        changes: list[StateChange] = [DecideApproval(approval_id, ApprovalStatus.REJECTED, None, read_clock(s.clock))]
        agent = escalation_answers.agent_answer(approval_id, stored)
        if agent is not None:  # the agent's 202 becomes the rejection, if its key still holds it
            error = escalation_answers.rejection(approval_id)
            changes.append(escalation_answers.settled(wallet_id, agent, error.status, error.body()))
        s.audit.append("approval.rejected", audit, wallet_id=wallet_id, webhook=webhook, changes=changes)
        return Answer(200, {"status": "rejected", "approval_id": approval_id})

    def prepare(self, wallet_id: str, approval_id: str, envelope: bytes, tables: dict[Pubkey, Any]) -> Pending:
        s = self.s
        wallet, stored = self._load_pending(wallet_id, approval_id)  # 0. Still pending.
        now = read_clock(s.clock)
        request = stored["request"]
        transaction = base64.b64decode(request["transaction"])
        # 1. The owner's approval of exactly this message, unexpired.
        try:
            check_approval(
                envelope, owner=Pubkey.from_bytes(wallet.owner_pubkey), wallet_id=wallet_id,
                message_hash=message_hash(transaction), now=now,
            )  # fmt: skip
        except PolicyEngineError as exc:
            raise owner_document_refused("approval", exc) from exc
        audit = {"approval_id": approval_id, "request_id": stored["request_id"]}
        # 2. Not frozen, and the policy (with today's counters) does not deny it.
        if wallet.frozen:
            raise ApiError(Code.WALLET_FROZEN, "the wallet is frozen until the owner unfreezes it")
        policy = verified_policy(s, wallet)  # one that no longer verifies: 403 no_policy, as for none
        if policy is None:
            raise ApiError(Code.NO_POLICY, "the wallet has no policy")
        ctx, requests, denials = eval_context(s, wallet, policy, now)
        verdict = decide(policy, transaction, tables, ctx)
        if verdict.verdict >= Verdict.DENY:
            s.audit.append("approval.refused", {**audit, "decision": verdict.to_json()}, wallet_id=wallet_id)
            raise refusal(verdict, frozen=False)
        # 3. Decided once (a second approval is 409), with its record: one store transaction. The approval names
        # this signing (its request id) until the signing finishes (`sign_flow`): a reopening needs it.
        request_id = uuid.uuid4().hex
        approved = DecideApproval(approval_id, ApprovalStatus.APPROVED, envelope, now, signing=request_id)
        try:
            s.audit.append("approval.approved", audit, wallet_id=wallet_id, changes=[approved])
        except StoreOutcomeUnknown:
            if not self._decided_by(approved):
                raise
        # 4. Reserved against the approval ceilings.
        approval = OwnerApproval(approval_id, envelope, escalation_answers.agent_answer(approval_id, stored))
        try:
            reservation = self.flow.reserve(
                wallet, policy, verdict, request_id, now, approved=True, audit_base={**audit, "request_id": request_id}
            )
        except BaseException:  # nothing reserved (a concurrent request took the ceiling, or the store failed)
            give_back.reopen_quietly(self.s, request_id, wallet_id, approval)
            raise
        prepared = Prepared(
            wallet, policy, request_id, f"approval:{approval_id}", b"", reservation, spent_entries(ctx),
            requests, denials, verdict, idempotent=False, submit=bool(request.get("submit")),
            approval=approval,
        )  # fmt: skip
        return Pending(prepared, transaction, tuple(Pubkey.from_string(t) for t in request["lookup_tables"]))

    def _decided_by(self, d: DecideApproval) -> bool:
        """Step 3's transaction is written or not, the store cannot say (`StoreOutcomeUnknown`; the store has
        already looked for its audit record): whether the approval reads as decided by ``d`` (its envelope, at its
        time), in which case the approval goes on. Not so (still pending: nothing decided, the owner may approve
        again; or unreadable), the 503 stands."""
        try:
            approval = self.s.store.get_approval(d.approval_id)
        except Exception:
            logger.exception("approval %s: whether it was approved is unknown", d.approval_id)
            return False
        return (approval.status, approval.decision, approval.decided_at, approval.signing) == (
            d.status, d.decision, d.now, d.signing
        )  # fmt: skip

    def stored_tables(self, wallet_id: str, approval_id: str) -> tuple[Pubkey, ...]:
        """The lookup tables the approval's request names, read before `prepare` (they come from the chain).
        Step 0 first: a decided approval is 409 before any chain read, as when the chain answers."""
        _wallet, stored = self._load_pending(wallet_id, approval_id)
        return tuple(Pubkey.from_string(t) for t in stored["request"]["lookup_tables"])
