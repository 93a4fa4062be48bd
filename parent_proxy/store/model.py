"""Domain values the state store reads and writes. All are frozen dataclasses; bytes stay bytes.

Times are float seconds since the Unix epoch, always passed in by the caller (see `parent_proxy.clock`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


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
    of that message (`CreateApproval`); None on approvals stored before it was kept (SQLite schema 11).
    ``signed_answer``: of an approved one whose signing recorded a signature (`FinishApproval.answer`), the answer
    stored for replay (``{"status_code": 200, "body": ...}``, as its agent's key replays it), kept with the approval
    for as long as it is kept (never pruned), so that the same message escalated again is answered with it
    (`CreateApproval`); None otherwise, and on approvals signed before it was kept (SQLite schema 12)."""

    approval_id: str
    wallet_id: str
    request_payload: bytes
    status: ApprovalStatus
    created_at: float
    decision: bytes | None = None
    decided_at: float | None = None
    signing: str | None = None
    message_hash: bytes | None = None
    signed_answer: bytes | None = field(default=None, repr=False)

    @property
    def is_open(self) -> bool:
        """Waiting for the owner, or approved with its signing under way: what holds its message
        (`CreateApproval`) and what a join needs (`ApprovalStillOpen`)."""
        return self.status is ApprovalStatus.PENDING or (
            self.status is ApprovalStatus.APPROVED and self.signing is not None
        )

    @property
    def is_signed(self) -> bool:
        """Approved, and its signing recorded a signature (`signed_answer`): what answers its message from then on
        (`CreateApproval`)."""
        return self.status is ApprovalStatus.APPROVED and self.signed_answer is not None


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


GENESIS_PREV_HASH = bytes(32)
"""The ``prev_hash`` of the first audit record."""
