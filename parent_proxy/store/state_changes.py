"""The state changes that `Store.apply_audited` writes in one transaction with their audit record (and the ones
`Store.finish_signing` takes): each a frozen dataclass naming what it writes or checks, refused as a whole
(nothing of the transaction written) when its condition fails. The values they carry are in
`parent_proxy.store.model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from parent_proxy.store.model import (
    AgentKeyCandidate,
    Approval,
    ApprovalStatus,
    IdempotentAnswer,
    Wallet,
    WebhookConfig,
)


@dataclass(frozen=True)
class CreateWallet:
    """`Store.create_wallet`: a new wallet (`Conflict` if the id is taken)."""

    wallet: Wallet


@dataclass(frozen=True)
class InstallPolicy:
    """`Store.install_policy`: the owner-signed policy ``document`` with a sequence above the installed one."""

    wallet_id: str
    document: bytes = field(repr=False)
    sequence: int


@dataclass(frozen=True)
class StoreToken:
    """`Store.issue_token`'s write: a new agent token of ``wallet_id``, kept as the SHA-256 of its secret only (the
    caller made it with `tokens.new_token` and hands the clear token out once)."""

    token_id: str
    wallet_id: str
    secret_hash: bytes = field(repr=False)
    created_at: float


@dataclass(frozen=True)
class RevokeToken:
    """`Store.revoke_token` of a token of ``wallet_id`` (`NotFound` for another wallet's token, as for an unknown
    one); a token revoked already is `AlreadyRevoked`, so the transaction writes nothing (no second record) and the
    first revocation time stands."""

    token_id: str
    wallet_id: str
    now: float


@dataclass(frozen=True)
class SetWebhook:
    """`Store.set_webhook`: where the wallet's notifications go, and their secret."""

    config: WebhookConfig


@dataclass(frozen=True)
class SetFrozen:
    """`Store.set_frozen`: freeze (a reason is required) or unfreeze (no reason) a wallet. ``order_sequence``: the
    owner's signed order this carries out, if any: the change is refused (`StaleOrderSequence`) unless it is above
    the wallet's last accepted one, which it becomes; a freeze of the parent's own (a denial burst, an attack)
    carries none and leaves it as it is. ``order``: that order's envelope (only with ``order_sequence``), kept as
    the wallet's `Wallet.last_order` (a freeze if ``frozen``); an order change without one keeps no envelope."""

    wallet_id: str
    frozen: bool
    reason: str | None
    order_sequence: int | None = None
    order: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RecordEvent:
    """`Store.record_request` (``kind`` "request") or `Store.record_denial` ("denial") at ``at``."""

    wallet_id: str
    kind: Literal["request", "denial"]
    at: float


@dataclass(frozen=True)
class CreateApproval:
    """`Store.create_approval`: a new pending approval; with ``max_pending``, the transaction is refused
    (`ApprovalQueueFull`) if it would leave the wallet with more open approvals than that (pending, or approved with
    its signing under way: those can return to pending, `ReopenApproval`), counted after all of its changes by the
    write itself (exact under concurrency). Creation is the only change that makes an approval open, so the bound
    holds at all times: a reopening only turns an open approval back to pending (approved with its signing under
    way: an approval always names its signing, `DecideApproval`, and a reopening the same one). An approval with a
    ``message_hash`` is refused, before the bound, while an approval of the same wallet and message is open
    (`ApprovalPending`, naming it) or was signed (`ApprovalSigned`, naming it: approved, and its signing recorded a
    signature, `FinishApproval.answer`)."""

    approval: Approval
    max_pending: int | None = None


@dataclass(frozen=True)
class DecideApproval:
    """`Store.decide_approval`: a pending approval becomes approved, rejected or expired. ``signing`` (required for
    an approval, refused otherwise): the request id of the signing that follows, a fresh one per decision; until that
    signing finishes (`FinishApproval`) the approval is listed by `Store.stalled_approvals`."""

    approval_id: str
    status: ApprovalStatus
    decision: bytes | None
    now: float
    signing: str | None = None


@dataclass(frozen=True)
class ReopenApproval:
    """`Store.reopen_approval`: an approval approved by ``decision`` for the signing ``signing`` is pending again
    (nothing was signed); refused once that signing finished (`FinishApproval`: signed, or refused by the enclave,
    which is a decision), for any other decision or signing, and for an approval that names no signing (one decided
    by a build before the signing was named: whether something was signed for it cannot be told)."""

    approval_id: str
    decision: bytes = field(repr=False)
    signing: str


@dataclass(frozen=True)
class FinishApproval:
    """The signing ``signing`` of an approved approval finished (signed, or refused by the enclave): it stays
    approved and can no longer be reopened; refused (`AlreadyDecided`) unless the approval is approved for that
    very signing, so a signing whose approval was reopened meanwhile never finishes (`Store.finish_signing`).
    ``answer``: of a signature, the signed answer as stored for replay, kept as `Approval.signed_answer` (the
    approval then holds its message for good: `CreateApproval`); None for an enclave refusal (the message is free)."""

    approval_id: str
    signing: str
    answer: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StillUnfrozen:
    """A condition, nothing written: the wallet is not frozen and its last accepted owner order is still
    ``order_sequence`` (`Wallet.order_sequence`), as a signing request read it; else `FrozenMeanwhile` and nothing
    of the transaction is written (`Store.finish_signing`'s ``unfrozen``, `Store.apply_audited`). So a signature
    is recorded, and handed out, only if no freeze was stored since the request read the wallet (a freeze then an
    unfreeze moves the sequence too)."""

    wallet_id: str
    order_sequence: int


@dataclass(frozen=True)
class ApprovalStillOpen:
    """A condition, nothing written: the approval ``approval_id`` of ``wallet_id`` is still open, as
    `CreateApproval` counts it (pending, or approved with its signing under way); else `ApprovalClosed` (`NotFound`
    if the wallet has no such approval) and nothing of the transaction is written (`Store.apply_audited`). So an
    escalation that joins an open approval (`parent_proxy.sign_outcomes.join`) stores that approval's 202 only if
    the owner has not decided it since the store named it. The only change of that approval in its transaction."""

    wallet_id: str
    approval_id: str


@dataclass(frozen=True)
class CompleteIdempotent:
    """`Store.complete_idempotent`: the answer stored under a key this request claimed."""

    answer: IdempotentAnswer


@dataclass(frozen=True)
class ReplaceAnswer:
    """The answer stored under a completed key becomes ``answer.response``, only if the key holds exactly
    ``previous`` for ``answer.request_hash`` (an escalation's 202, replaced by the owner's decision:
    `Store.apply_audited`, `Store.finish_signing`). Never a refusal: a key that holds anything else (another answer,
    another request's, a claim in progress, or nothing: expired and deleted) is left as it is, and the rest of the
    transaction is written all the same. Its expiry stays."""

    answer: IdempotentAnswer
    previous: bytes = field(repr=False)


# -- agent-key rotation (see `parent_proxy.store.agent_keys`) -------------------------------------------------
@dataclass(frozen=True)
class SetAgentKeyCandidate:
    """Keep ``candidate`` as its wallet's one candidate agent key: only if the wallet's agent key is
    ``candidate.agent_pubkey`` and the wallet has no candidate yet (`Store.apply_audited`)."""

    candidate: AgentKeyCandidate


@dataclass(frozen=True)
class SwitchAgentKey:
    """The wallet's candidate becomes its agent key (key and sealed blob), only if the wallet's agent key is
    ``agent_pubkey`` and its candidate's key is ``candidate_pubkey``; the old key is retired at ``now``."""

    wallet_id: str
    agent_pubkey: bytes
    candidate_pubkey: bytes
    now: float


StateChange = (
    CreateWallet
    | InstallPolicy
    | StoreToken
    | RevokeToken
    | SetWebhook
    | SetFrozen
    | RecordEvent
    | CreateApproval
    | DecideApproval
    | ReopenApproval
    | FinishApproval
    | StillUnfrozen
    | ApprovalStillOpen
    | CompleteIdempotent
    | ReplaceAnswer
    | SetAgentKeyCandidate
    | SwitchAgentKey
)
"""The closed set of changes an audited event may describe (`Store.apply_audited`)."""


def pending_bounds(changes: Sequence[StateChange]) -> dict[str, int]:
    """Per wallet, the tightest `CreateApproval.max_pending` among ``changes`` (wallets without one: absent)."""
    bounds: dict[str, int] = {}
    for change in changes:
        if isinstance(change, CreateApproval) and change.max_pending is not None:
            wallet_id = change.approval.wallet_id
            bounds[wallet_id] = min(change.max_pending, bounds.get(wallet_id, change.max_pending))
    return bounds
