"""Domain values the state store reads and writes. All are frozen dataclasses; bytes stay bytes.

Times are float seconds since the Unix epoch, always passed in by the caller (see `parent_proxy.clock`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class OwnerOrder:
    """An owner freeze (``freeze``) or unfreeze order the parent accepted: its signed envelope as the proxy sent it
    (canonical JSON bytes). Kept so that each host's enclave can be sent the wallet's last order
    (`parent_proxy.enclave_relay`); not secret (the owner's signature over public fields)."""

    freeze: bool
    envelope: bytes = field(repr=False)


@dataclass(frozen=True)
class Wallet:
    """A wallet as the parent knows it. Keys are 32-byte Ed25519 public keys; the vault is a 32-byte address."""

    wallet_id: str
    agent_pubkey: bytes
    owner_pubkey: bytes
    vault_address: bytes
    sealed_key: bytes = field(repr=False)
    frozen: bool = False
    frozen_reason: str | None = None
    policy_document: bytes | None = field(default=None, repr=False)
    policy_sequence: int = 0
    order_sequence: int = 0
    """The sequence of the last owner freeze or unfreeze order the parent accepted (0: none yet)."""
    last_order: OwnerOrder | None = None
    """That order (None: none yet, or accepted before the store kept orders: SQLite schema 9)."""


@dataclass(frozen=True)
class IssuedToken:
    """The result of issuing an agent token. ``token`` is shown once and never stored; keep it out of logs."""

    token_id: str
    wallet_id: str
    token: str = field(repr=False)


class ReservationStatus(enum.StrEnum):
    PENDING = "pending"
    COMMITTED = "committed"
    RELEASED = "released"


@dataclass(frozen=True)
class Reservation:
    """Amounts (raw units per asset) held against a wallet's rolling-window limits for one request."""

    wallet_id: str
    request_id: str
    amounts: tuple[tuple[str, int], ...]
    created_at: float


class IdempotencyStatus(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


@dataclass(frozen=True)
class IdempotencyRecord:
    """A completed request stored under its idempotency key, to be replayed verbatim."""

    wallet_id: str
    key: str
    request_hash: bytes
    status: IdempotencyStatus
    response: bytes | None
    created_at: float


class ApprovalStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Approval:
    """An escalated request waiting for (or decided by) the owner. ``decision`` is the owner's signed answer.
    ``signing``: of an approved one, the request id of its signing while under way (`DecideApproval.signing`),
    None once that signing finished (`FinishApproval`) or if none was named. ``message_hash``: the SHA-256 of the
    transaction message it would sign (`parent_proxy.sign_parts.message_hash`), which makes it the one open approval
    of that message (`CreateApproval`); None on approvals stored before it was kept (SQLite schema 11)."""

    approval_id: str
    wallet_id: str
    request_payload: bytes
    status: ApprovalStatus
    created_at: float
    decision: bytes | None = None
    decided_at: float | None = None
    signing: str | None = None
    message_hash: bytes | None = None


@dataclass(frozen=True)
class WebhookConfig:
    """Where a wallet's notifications go. The secret signs them; it never appears in a repr or a log."""

    wallet_id: str
    url: str
    secret: bytes = field(repr=False)


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True)
class OutboxItem:
    """One webhook notification in the persistent outbox.

    ``attempts`` counts claims (incremented when a worker claims the item, so that a worker that crashes on an item
    still uses up an attempt). ``lease_id``/``lease_until`` are set while a worker holds the item.
    """

    event_id: str
    wallet_id: str
    event_type: str
    body: bytes
    created_at: float
    status: OutboxStatus = OutboxStatus.PENDING
    attempts: int = 0
    next_attempt_at: float = 0.0
    lease_id: str | None = None
    lease_until: float | None = None


@dataclass(frozen=True)
class DeliveryAttempt:
    """One line of the delivery log: what happened when an outbox item was posted."""

    event_id: str
    attempt: int
    at: float
    delivered: bool
    status_code: int | None
    error: str | None


@dataclass(frozen=True)
class AuditRecord:
    """One hash-chained audit record (see `parent_proxy.audit` for the hash and its verification)."""

    seq: int
    time: float
    wallet_id: str | None
    event_type: str
    payload: bytes
    receipt: bytes | None
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True)
class SigningClaim:
    """What `Store.begin_signing` did. With ``replay`` set nothing was written: answer with the stored response.
    Otherwise the idempotency key is claimed, the request recorded, and ``reservation`` held (None: nothing spent)."""

    replay: IdempotencyRecord | None
    reservation: Reservation | None


@dataclass(frozen=True)
class IdempotentAnswer:
    """The response to store under a claimed idempotency key (see `Store.finish_signing`)."""

    wallet_id: str
    key: str
    request_hash: bytes
    response: bytes = field(repr=False)


# -- state changes that `Store.apply_audited` writes in one transaction with their audit record ---------------
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
    (`ApprovalQueueFull`) if it would leave the wallet with more pending approvals than that, counted after all of
    its changes by the write itself (exact under concurrency). An approval with a ``message_hash`` is refused
    (`ApprovalPending`, naming the other, checked before the bound) while an approval of the same wallet and message
    is open: pending, or approved with its signing under way (`DecideApproval.signing`, until `FinishApproval`)."""

    approval: Approval
    max_pending: int | None = None


@dataclass(frozen=True)
class DecideApproval:
    """`Store.decide_approval`: a pending approval becomes approved, rejected or expired. ``signing`` (approved
    only): the request id of the signing that follows, a fresh one per decision; until that signing finishes
    (`FinishApproval`) the approval is listed by `Store.stalled_approvals`."""

    approval_id: str
    status: ApprovalStatus
    decision: bytes | None
    now: float
    signing: str | None = None


@dataclass(frozen=True)
class ReopenApproval:
    """`Store.reopen_approval`: an approval approved by ``decision`` for the signing ``signing`` (None: approved
    without one named) is pending again (nothing was signed); refused once that signing finished
    (`FinishApproval`), and for any other decision or signing."""

    approval_id: str
    decision: bytes = field(repr=False)
    signing: str | None = None


@dataclass(frozen=True)
class FinishApproval:
    """The signing ``signing`` of an approved approval finished (signed, or refused by the enclave): it stays
    approved and can no longer be reopened; refused (`AlreadyDecided`) unless the approval is approved for that
    very signing, so a signing whose approval was reopened meanwhile never finishes (`Store.finish_signing`)."""

    approval_id: str
    signing: str


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
class AgentKeyCandidate:
    """A new agent key the enclave made for a wallet, kept until an owner-signed switch makes it the wallet's agent
    key. ``agent_pubkey`` is the wallet's agent key it will replace; keys are 32-byte Ed25519 public keys."""

    wallet_id: str
    agent_pubkey: bytes
    candidate_pubkey: bytes
    sealed_key: bytes = field(repr=False)
    created_at: float


@dataclass(frozen=True)
class RetiredAgentKey:
    """An agent key a switch replaced, kept with its sealed blob (a premature switch loses nothing)."""

    wallet_id: str
    agent_pubkey: bytes
    sealed_key: bytes = field(repr=False)
    retired_at: float


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


GENESIS_PREV_HASH = bytes(32)
"""The ``prev_hash`` of the first audit record."""
