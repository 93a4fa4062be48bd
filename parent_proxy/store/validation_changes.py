"""The checks of `Store.apply_audited`'s state changes, shared by every store adapter: each change checked as its
own method checks its arguments (`validation`, `validation_outbox`), and at most one change of a wallet's record
per call."""

from __future__ import annotations

from collections.abc import Sequence

from parent_proxy.errors import InvalidInput
from parent_proxy.store.model import IdempotentAnswer
from parent_proxy.store.state_changes import (
    ApprovalStillOpen,
    CompleteIdempotent,
    CreateApproval,
    CreateWallet,
    DecideApproval,
    FinishApproval,
    InstallPolicy,
    RecordEvent,
    ReopenApproval,
    ReplaceAnswer,
    RevokeToken,
    SetAgentKeyCandidate,
    SetFrozen,
    SetWebhook,
    StateChange,
    StillUnfrozen,
    StoreToken,
    SwitchAgentKey,
)
from parent_proxy.store.validation import (
    MAX_ORDER_SEQUENCE,
    MAX_PENDING_BOUND,
    check_agent_key_candidate,
    check_agent_keys,
    check_answer,
    check_approval,
    check_approval_decision,
    check_approval_reopening,
    check_blob,
    check_count,
    check_digest,
    check_frozen,
    check_id,
    check_order,
    check_time,
    check_wallet,
)
from parent_proxy.store.validation_outbox import check_webhook


def check_change(change: object) -> StateChange:
    """One change of `Store.apply_audited`, checked as its own method checks its arguments (times normalised)."""
    match change:
        case CreateWallet(wallet=wallet):
            check_wallet(wallet)
            return change
        case InstallPolicy(wallet_id=wallet_id, document=document, sequence=sequence):
            check_id("wallet_id", wallet_id)
            check_blob("document", document)
            check_count("sequence", sequence, minimum=1)
            return change
        case StoreToken(token_id=token_id, wallet_id=wallet_id, secret_hash=secret_hash, created_at=created_at):
            check_id("token_id", token_id)
            check_id("wallet_id", wallet_id)
            check_digest("secret_hash", secret_hash)
            return StoreToken(token_id, wallet_id, secret_hash, check_time("created_at", created_at))
        case RevokeToken(token_id=token_id, wallet_id=wallet_id, now=now):
            check_id("token_id", token_id)
            check_id("wallet_id", wallet_id)
            return RevokeToken(token_id, wallet_id, check_time("now", now))
        case SetWebhook(config=config):
            return SetWebhook(check_webhook(config))
        case SetFrozen(wallet_id=wallet_id, frozen=frozen, reason=reason, order_sequence=order_sequence, order=order):
            check_id("wallet_id", wallet_id)
            check_frozen(frozen, reason)
            if order_sequence is not None:
                check_count("order_sequence", order_sequence, minimum=1, maximum=MAX_ORDER_SEQUENCE)
            if order is not None:
                check_order("order", order, order_sequence)
            return change
        case RecordEvent(wallet_id=wallet_id, kind=kind, at=at):
            check_id("wallet_id", wallet_id)
            if kind not in ("request", "denial"):
                raise InvalidInput("kind", "must be request or denial")
            return RecordEvent(wallet_id, kind, check_time("at", at))
        case CreateApproval(approval=approval, max_pending=max_pending):
            check_approval(approval)
            if max_pending is not None:
                check_count("max_pending", max_pending, minimum=1, maximum=MAX_PENDING_BOUND)
            return change
        case DecideApproval(approval_id=approval_id, status=status, decision=decision, now=now, signing=signing):
            now = check_approval_decision(approval_id, status, decision, now, signing)
            return DecideApproval(approval_id, status, decision, now, signing)
        case ReopenApproval(approval_id=approval_id, decision=decision, signing=signing):
            check_approval_reopening(approval_id, decision, signing)
            return change
        case FinishApproval(approval_id=approval_id, signing=signing, answer=answer):
            check_id("approval_id", approval_id)
            check_id("signing", signing)
            if answer is not None:
                check_blob("answer", answer)
            return change
        case StillUnfrozen(wallet_id=wallet_id, order_sequence=order_sequence):
            check_id("wallet_id", wallet_id)
            check_count("order_sequence", order_sequence, maximum=MAX_ORDER_SEQUENCE)
            return change
        case ApprovalStillOpen(wallet_id=wallet_id, approval_id=approval_id):
            check_id("wallet_id", wallet_id)
            check_id("approval_id", approval_id)
            return change
        case CompleteIdempotent(answer=answer):
            return CompleteIdempotent(check_answer(answer))
        case ReplaceAnswer(answer=answer, previous=previous):
            return ReplaceAnswer(check_answer(answer), check_blob("previous", previous))
        case SetAgentKeyCandidate(candidate=candidate):
            return SetAgentKeyCandidate(check_agent_key_candidate(candidate))
        case SwitchAgentKey(wallet_id=wallet_id, agent_pubkey=agent, candidate_pubkey=candidate, now=now):
            check_id("wallet_id", wallet_id)
            check_agent_keys(agent, candidate)
            return SwitchAgentKey(wallet_id, agent, candidate, check_time("now", now))
    raise InvalidInput("changes", f"{type(change).__name__} is not a state change")


def _wallet_record_changed(change: StateChange) -> str | None:
    """The wallet whose record ``change`` writes or checks (DynamoDB: its ``WALLET`` item), if any."""
    match change:
        case (
            SetFrozen(wallet_id=wallet_id)
            | SwitchAgentKey(wallet_id=wallet_id)
            | InstallPolicy(wallet_id=wallet_id)
            | StillUnfrozen(wallet_id=wallet_id)
        ):
            return wallet_id
        case SetAgentKeyCandidate(candidate=candidate):
            return candidate.wallet_id
        case CreateWallet(wallet=wallet):
            return wallet.wallet_id
    return None


def _approval_changed(change: StateChange) -> str | None:
    """The approval whose item ``change`` writes or checks, if any."""
    match change:
        case (
            ApprovalStillOpen(approval_id=approval_id)
            | DecideApproval(approval_id=approval_id)
            | ReopenApproval(approval_id=approval_id)
            | FinishApproval(approval_id=approval_id)
        ):
            return approval_id
        case CreateApproval(approval=approval):
            return approval.approval_id
    return None


def _answer_changed(change: StateChange) -> tuple[str, str] | None:
    """The idempotency key (wallet, key) whose stored answer ``change`` writes, if any."""
    match change:
        case CompleteIdempotent(answer=answer) | ReplaceAnswer(answer=answer):
            return answer.wallet_id, answer.key
    return None


def check_changes(changes: object) -> list[StateChange]:
    """The changes of `Store.apply_audited`, each checked by `check_change`; at most one change of a wallet's record,
    at most one of an idempotency key's answer, and no other change of an approval with an `ApprovalStillOpen` of it
    in the list (`InvalidInput` otherwise, on every adapter): DynamoDB writes or checks an item at most once per
    transaction, and the rotation needs no other change of the wallet with it."""
    if not isinstance(changes, Sequence) or isinstance(changes, str | bytes):
        raise InvalidInput("changes", "must be a sequence of state changes")
    checked = [check_change(c) for c in changes]
    touched = [_wallet_record_changed(c) for c in checked]
    for wallet_id in touched:
        if wallet_id is not None and touched.count(wallet_id) > 1:
            raise InvalidInput("changes", f"wallet {wallet_id}: at most one change of its wallet's record")
    approvals = [_approval_changed(c) for c in checked]
    for change in checked:
        if isinstance(change, ApprovalStillOpen) and approvals.count(change.approval_id) > 1:
            raise InvalidInput("changes", f"approval {change.approval_id}: a condition on it is its only change")
    answers = [key for key in map(_answer_changed, checked) if key is not None]
    if len(set(answers)) < len(answers):
        raise InvalidInput("changes", "at most one change of an idempotency key's answer")
    return checked


def check_unfrozen(unfrozen: object) -> StillUnfrozen:
    """`Store.finish_signing`'s ``unfrozen``: a `StillUnfrozen`, checked as `check_change` does."""
    if not isinstance(unfrozen, StillUnfrozen):
        raise InvalidInput("unfrozen", "must be a StillUnfrozen")
    check_change(unfrozen)
    return unfrozen


def check_replaced(replaced: object, answer: IdempotentAnswer | None) -> ReplaceAnswer:
    """`Store.finish_signing`'s ``replaced``: a `ReplaceAnswer` (checked as `check_change` does) of another key than
    the ``answer`` it completes, if any (`InvalidInput` otherwise, as in `check_changes`)."""
    if not isinstance(replaced, ReplaceAnswer):
        raise InvalidInput("replaced", "must be a ReplaceAnswer")
    checked = ReplaceAnswer(check_answer(replaced.answer), check_blob("previous", replaced.previous))
    if answer is not None and (answer.wallet_id, answer.key) == (checked.answer.wallet_id, checked.answer.key):
        raise InvalidInput("changes", "at most one change of an idempotency key's answer")
    return checked
