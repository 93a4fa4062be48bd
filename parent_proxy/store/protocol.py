"""The state-store seam: one `Store` protocol, implemented by `SqliteStore` (embedded) and `DynamoStore` (fleet).

Both adapters pass the same contract suite (``tests/proxy/test_store_contract.py``). Every method either does all
it says or nothing; failures raise the errors drawn in `parent_proxy.errors`. Times are passed in (``now``),
never read from the system clock here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from parent_proxy.store.model import (
    AgentKeyCandidate,
    Approval,
    ApprovalStatus,
    AuditRecord,
    DeliveryAttempt,
    IdempotencyRecord,
    IdempotentAnswer,
    IssuedToken,
    OutboxItem,
    Reservation,
    ReservationStatus,
    RetiredAgentKey,
    SigningClaim,
    Wallet,
    WebhookConfig,
)
from parent_proxy.store.sealed_keys import SealedKeyReplacement
from parent_proxy.store.state_changes import FinishApproval, ReplaceAnswer, StateChange, StillUnfrozen

Limits = Mapping[tuple[str, int], int]
"""Caps per ``(asset, window_seconds)``: raw units that may be spent within any rolling window of that length."""

AuditSealer = Callable[[AuditRecord | None], AuditRecord]
"""Builds the next audit record from the current head (None: the log is empty); see `parent_proxy.audit`."""


class Store(Protocol):
    """Everything the parent proxy persists. See the module docstring for the shared rules."""

    # -- reads together -------------------------------------------------------------------------------------
    def reading(self) -> AbstractContextManager[None]:
        """A block whose reads (of the calling thread) may share one consistent view of the store and its cost
        (SQLite: one read transaction, begun by the first read); an adapter without read transactions reads as
        outside (DynamoDB). A write in the block is never affected and is seen by the reads after it (SQLite: the
        write ends the read transaction first). Nothing is held when the block ends."""
        ...

    # -- agent tokens ---------------------------------------------------------------------------------------
    def issue_token(self, wallet_id: str, now: float) -> IssuedToken:
        """Create a token bound to ``wallet_id``; only its hash is stored. The clear token is returned once."""
        ...

    def authenticate_token(self, token: str) -> str:
        """Return the wallet id the token is bound to; `NotFound` for unknown, malformed or revoked tokens."""
        ...

    def revoke_token(self, token_id: str, now: float) -> None:
        """Revoke a token (idempotent). `NotFound` if the id was never issued."""
        ...

    def token_wallet(self, token_id: str) -> str:
        """The wallet a token (revoked or not) is bound to; `NotFound` if the id was never issued."""
        ...

    # -- wallets --------------------------------------------------------------------------------------------
    def create_wallet(self, wallet: Wallet) -> None:
        """Store a new wallet; `Conflict` if the id exists."""
        ...

    def get_wallet(self, wallet_id: str) -> Wallet: ...

    def set_frozen(self, wallet_id: str, frozen: bool, reason: str | None) -> None:
        """Freeze (a reason is required) or unfreeze (no reason) a wallet."""
        ...

    def install_policy(self, wallet_id: str, document: bytes, sequence: int) -> None:
        """Install a policy document; `StalePolicySequence` unless ``sequence`` > the installed one."""
        ...

    # -- period limits --------------------------------------------------------------------------------------
    def reserve(
        self, wallet_id: str, request_id: str, amounts: Mapping[str, int], limits: Limits, now: float
    ) -> Reservation:
        """Atomically hold ``amounts`` if every applicable rolling-window cap still holds, else `LimitExceeded`.

        A limit applies when its asset appears in ``amounts``. Pending and committed reservations count while
        ``now - created_at < window_seconds``; released ones never count.
        """
        ...

    def commit(self, reservation: Reservation) -> None:
        """Mark a reservation spent (idempotent). `Conflict` if it was released."""
        ...

    def release(self, reservation: Reservation) -> None:
        """Give a pending reservation back (idempotent). `Conflict` if it was committed."""
        ...

    def reservation_status(self, wallet_id: str, request_id: str) -> ReservationStatus: ...

    def spent_in_window(self, wallet_id: str, asset: str, window_seconds: int, now: float) -> int:
        """Committed plus pending amounts of ``asset`` within the rolling window ending at ``now``."""
        ...

    # -- rate limits and denial bursts ----------------------------------------------------------------------
    def record_request(self, wallet_id: str, now: float) -> None: ...

    def recent_requests(self, wallet_id: str, since: float) -> list[float]:
        """Timestamps of recorded requests at or after ``since``, oldest first."""
        ...

    def record_denial(self, wallet_id: str, now: float) -> None: ...

    def recent_denials(self, wallet_id: str, since: float) -> list[float]: ...

    def count_requests(self, wallet_id: str, since: float) -> int:
        """``len(recent_requests(wallet_id, since))``, without reading the timestamps."""
        ...

    def count_denials(self, wallet_id: str, since: float) -> int:
        """``len(recent_denials(wallet_id, since))``, without reading the timestamps."""
        ...

    # -- idempotency ----------------------------------------------------------------------------------------
    def begin_idempotent(self, wallet_id: str, key: str, request_hash: bytes, now: float) -> IdempotencyRecord | None:
        """Claim ``key``: None means "new, proceed"; a completed record means "replay its response".

        Raises `IdempotencyMismatch` (same key, other request) or `IdempotencyInProgress` (not finished yet). A
        record that expired at ``now`` (`validation.idempotency_expired`: completed more than a day ago, or in
        progress for longer than a request can live) no longer holds the key: it is replaced by this claim.
        """
        ...

    def complete_idempotent(self, wallet_id: str, key: str, request_hash: bytes, response: bytes) -> None:
        """Store the response of a claimed key. `Conflict` unless it is in progress with this hash."""
        ...

    def replace_idempotent(
        self, wallet_id: str, key: str, request_hash: bytes, response: bytes, *, previous: bytes | None = None
    ) -> None:
        """Replace the stored response of a completed key (a signed ``submit`` answer with its broadcast's outcome,
        `parent_proxy.submission`); its expiry stays. `NotFound` if the key has no record, `Conflict` unless it is
        completed with this hash and, with ``previous``, holds exactly that response (nothing else is overwritten)."""
        ...

    def abandon_idempotent(self, wallet_id: str, key: str, request_hash: bytes) -> None:
        """Drop an in-progress claim (the request failed before any effect), so the key may be retried."""
        ...

    def lookup_idempotent(self, wallet_id: str, key: str, request_hash: bytes, now: float) -> IdempotencyRecord | None:
        """Read-only `begin_idempotent`: None if ``key`` is free at ``now`` (nothing is claimed), the completed record
        to replay; raises `IdempotencyMismatch` or `IdempotencyInProgress` like `begin_idempotent`."""
        ...

    # -- wallet-creation nonces ----------------------------------------------------------------------------
    def claim_creation_nonce(self, owner: bytes, nonce: str, now: float, held_until: float) -> None:
        """Record that the owner key ``owner`` used ``nonce`` to create a wallet, held until ``held_until``
        (inclusive; `parent_proxy.store.creation_nonces`). One atomic write: `NonceUsed` (nothing written) if a
        claim of the same key and nonce still holds at ``now``; one that expired before ``now`` is replaced.
        `InvalidInput` for a key that is not 32 bytes, a nonce that is not 1-64 of ``A-Z a-z 0-9 _ -``, or a
        ``held_until`` before ``now`` or more than `creation_nonces.MAX_HOLD_SECONDS` after it."""
        ...

    # -- the signing path in two transactions ---------------------------------------------------------------
    def begin_signing(
        self,
        wallet_id: str,
        key: str,
        request_hash: bytes,
        *,
        request_id: str,
        amounts: Mapping[str, int],
        limits: Limits,
        now: float,
    ) -> SigningClaim:
        """All or nothing: `begin_idempotent` + `record_request` + `reserve` (skipped when ``amounts`` is empty).

        A completed key is returned as ``replay`` with nothing written; `IdempotencyMismatch`,
        `IdempotencyInProgress` and `LimitExceeded` are raised with nothing written. An adapter may make this
        transaction durable only with the next durable write (SQLite: the log sync of `finish_signing`), so the
        caller answers nothing on the strength of it alone: the answer follows `finish_signing`, or a failure's
        `release` / `abandon_idempotent`.
        """
        ...

    def finish_signing(
        self,
        reservation: Reservation | None,
        audit: AuditSealer,
        webhook: OutboxItem | None,
        answer: IdempotentAnswer | None,
        approval: FinishApproval | None = None,
        *,
        replaced: ReplaceAnswer | None = None,
        unfrozen: StillUnfrozen | None = None,
    ) -> AuditRecord:
        """All or nothing: `commit` the reservation, append the record ``audit`` builds from the head, enqueue
        ``webhook``, `complete_idempotent` with ``answer``, finish an owner approval's signing (``approval``:
        `AlreadyDecided`, nothing written, unless the approval is approved for that very signing; with its
        ``answer``, kept as the approval's `Approval.signed_answer`), and replace the
        answer under another key if it still holds the one named (``replaced``: the agent's 202 of an approval,
        never a refusal, see `ReplaceAnswer`); with ``unfrozen``, only if the wallet is still as the request read
        it (`StillUnfrozen`: else `FrozenMeanwhile`, nothing written; checked first). Returns the appended audit
        record."""
        ...

    # -- an audited state change -----------------------------------------------------------------------------
    def apply_audited(
        self, changes: Sequence[StateChange], audit: AuditSealer, webhook: OutboxItem | None = None
    ) -> AuditRecord:
        """All or nothing: apply ``changes`` in order (each as its own method: `set_frozen`, `record_request` /
        `record_denial`, `create_approval`, `decide_approval`, `reopen_approval`, `complete_idempotent`; the
        signing's end `FinishApproval`, the conditions `StillUnfrozen` (`FrozenMeanwhile`) and `ApprovalStillOpen`
        (`ApprovalClosed`; `NotFound` for an approval not of that wallet), the conditional
        `ReplaceAnswer` (never a refusal) and the agent-key changes `SetAgentKeyCandidate` and `SwitchAgentKey` as
        their docstrings say), append the record ``audit`` builds from the head (the event that describes them),
        enqueue ``webhook`` (its notification, if any). Returns the appended record.

        Refusals are those of the methods (`NotFound`, `AlreadyDecided`, `Conflict` for an existing approval id or
        a key not in progress for this request; for the agent-key changes: `NotFound` for an unknown wallet,
        `Conflict` for a wallet whose agent key is not the one named, that already has a candidate (set), or whose
        candidate is not the one named (switch)) and
        of `append_audit` (`Conflict` for a webhook event id ever enqueued); nothing is written then, nor when the
        audit record or the webhook item cannot be written. `InvalidInput` (`validation_changes.check_changes`) for a
        malformed change, an agent-key change (or a `StillUnfrozen`) that is not the only change of its wallet's
        record in ``changes``, an `ApprovalStillOpen` with another change of its approval, or two changes of one
        idempotency key's answer.
        A head moved by another appender is not a refusal: the record is built again from the new head (as in
        `finish_signing`)."""
        ...

    # -- agent-key rotation (the changes are `apply_audited`'s; see `parent_proxy.store.agent_keys`) -----------
    def get_agent_key_candidate(self, wallet_id: str) -> AgentKeyCandidate | None:
        """The wallet's candidate agent key, None if it has none; `NotFound` if the wallet does not exist."""
        ...

    def retired_agent_keys(self, wallet_id: str) -> list[RetiredAgentKey]:
        """The agent keys switches replaced, with their blobs, oldest first (in the order of the switches);
        `NotFound` if the wallet does not exist."""
        ...

    # -- re-sealed agent keys -------------------------------------------------------------------------------
    def replace_sealed_keys(self, replacements: Sequence[SealedKeyReplacement], audit: AuditSealer) -> AuditRecord:
        """All or nothing: each named wallet's sealed key becomes the new blob if it is still the old one, and the
        record ``audit`` builds from the head (the event naming them) is appended. Returns that record.

        Refusals, with nothing written: `InvalidInput` (no replacement, a wallet named twice, an empty blob, a new
        blob equal to the old; DynamoDB: more than one transaction can hold, `dynamodb_sealed_keys`), `NotFound`
        (an unknown wallet), `Conflict` (a blob that is no longer the old one). Blobs stay opaque to the store:
        that the new one opens to the same key is the caller's check (`parent_proxy.store.sealed_keys`)."""
        ...

    # -- housekeeping ---------------------------------------------------------------------------------------
    def prune(self, now: float) -> None:
        """Delete what no answer at or after ``now`` can depend on: request/denial timestamps and reservations
        older than `validation.MAX_WINDOW_SECONDS` (the longest window any limit may use), expired idempotency
        records and wallet-creation nonces (an adapter may leave these to its backend's expiry; they are ignored
        once expired either way), and webhook outbox items delivered or dead for longer than
        `validation.OUTBOX_RETENTION_SECONDS`, with their delivery log (DynamoDB: the TTL; pending items stay)."""
        ...

    # -- pending approvals ----------------------------------------------------------------------------------
    def create_approval(self, approval: Approval) -> None: ...

    def get_approval(self, approval_id: str) -> Approval: ...

    def decide_approval(
        self, approval_id: str, status: ApprovalStatus, decision: bytes | None, now: float, signing: str | None = None
    ) -> Approval:
        """Move a pending approval to approved/rejected/expired; `AlreadyDecided` if it is not pending. ``signing``
        (required to approve, refused otherwise, `DecideApproval.signing`): the signing that follows, listed by
        `stalled_approvals` until a `FinishApproval` or a reopening ends it."""
        ...

    def reopen_approval(self, approval_id: str, decision: bytes, signing: str) -> Approval:
        """Return an approved approval to pending (its signing failed before a signature left the proxy).

        Only the approval this exact owner ``decision`` approved for the signing ``signing`` is reopened, never one
        whose signing finished (signed, or refused by the enclave) and never one that names no signing;
        `AlreadyDecided` otherwise (`ReopenApproval`).
        """
        ...

    def stalled_approvals(self, decided_before: float, limit: int) -> list[Approval]:
        """Approved approvals whose signing (`DecideApproval.signing`) has neither finished nor been reopened, decided
        before ``decided_before``: oldest first, at most ``limit`` (1 to `validation.MAX_STALLED_APPROVALS`)."""
        ...

    def pending_approvals(self, wallet_id: str) -> list[Approval]: ...

    # -- webhooks -------------------------------------------------------------------------------------------
    def set_webhook(self, config: WebhookConfig) -> None: ...

    def get_webhook(self, wallet_id: str) -> WebhookConfig | None: ...

    def enqueue_webhook(self, item: OutboxItem) -> None: ...

    def claim_webhooks(
        self, now: float, lease_seconds: float, limit: int, *, skip_wallets: Collection[str] = ()
    ) -> list[OutboxItem]:
        """Lease up to ``limit`` due pending items (next attempt reached, no live lease); attempts += 1.

        In due order, at most one item per wallet, and none of a wallet that already has an item under a live
        lease: each wallet has at most one delivery in flight, so a receiver that never answers holds up only its
        own wallet's notifications. Exact on both adapters: claims serialise on SQLite's write lock; on DynamoDB a
        claim leases its item and puts the lease on the wallet's head in one conditional transaction
        (`dynamodb_outbox_heads`). The work does not grow with any wallet's backlog: both go through one head per
        wallet with pending items. DynamoDB finds due wallets through an eventually consistent index: an item
        written a moment ago may wait for the next claim. No item of a wallet in ``skip_wallets`` is leased (the
        worker's slow receivers when their lanes are full: `parent_proxy.webhook_lanes`)."""
        ...

    def mark_delivered(self, event_id: str, lease_id: str, *, now: float, status_code: int) -> None: ...

    def mark_failed(
        self,
        event_id: str,
        lease_id: str,
        *,
        now: float,
        error: str,
        status_code: int | None,
        next_attempt_at: float | None,
    ) -> None:
        """Record a failed attempt; retry at ``next_attempt_at``, or give up (dead) when it is None. A retry also pauses
        the item's wallet, in the same transaction: no item of the wallet is claimed before
        `validation_outbox.wallet_pause_until` (``next_attempt_at``, at most
        `validation_outbox.WALLET_PAUSE_CAP_SECONDS` after ``now``). Any other finish of the wallet's items
        (`mark_delivered`, a give-up) leaves it unpaused."""
        ...

    def get_outbox_item(self, event_id: str) -> OutboxItem: ...

    def delivery_log(self, event_id: str) -> list[DeliveryAttempt]: ...

    # -- audit log ------------------------------------------------------------------------------------------
    def append_audit(self, record: AuditRecord, webhook: OutboxItem | None = None) -> None:
        """All or nothing: append the next record and enqueue ``webhook`` (the event's notification, if any).

        `Conflict` unless the record extends the current head (seq + 1, prev_hash), or if the webhook's event id
        was ever enqueued; `NotFound` if the webhook's wallet does not exist. Nothing is written then."""
        ...

    def audit_head(self) -> AuditRecord | None: ...

    def audit_records(self, after_seq: int, limit: int) -> list[AuditRecord]:
        """Records with seq > ``after_seq``, in seq order, at most ``limit``."""
        ...

    def close(self) -> None: ...
