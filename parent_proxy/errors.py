"""Errors raised by the `parent_proxy` package (state layer, audit log, webhooks, clock).

    ProxyError
    +-- ClockUnavailable         the injected clock raised or returned something that is not a time
    +-- StoreError               anything the state store refuses
    |   +-- StoreUnavailable     the backend cannot be reached / is locked / is broken (the API maps it to 503)
    |   |   +-- StoreOutcomeUnknown  a write was sent but never answered: applied or not, the store cannot tell
    |   +-- InvalidInput         an argument is malformed; nothing was changed
    |   +-- NotFound             the named wallet, token, reservation, approval, ... does not exist
    |   +-- LimitExceeded        a reservation would push a rolling-window total past its cap; nothing recorded
    |   +-- Conflict             the write contradicts stored state; nothing was changed
    |       +-- StalePolicySequence      a policy with a sequence <= the installed one
    |       +-- StaleOrderSequence       an owner freeze order with a sequence <= the last accepted one
    |       +-- IdempotencyMismatch      same idempotency key, different request hash
    |       +-- IdempotencyInProgress    same key and hash, but the first request has not completed
    |       +-- AlreadyDecided           an approval that is no longer pending
    |       +-- ApprovalPending          another approval of the same message is still open (pending, or signing)
    |       +-- ApprovalClosed           a join refused: the approval it names was decided since (no longer open)
    |       +-- FrozenMeanwhile          a signature's record refused: the wallet was frozen since the request read it
    |       +-- AlreadyRevoked           an audited revocation of a token that is revoked already
    |       +-- NonceUsed                a wallet-creation nonce claimed already, and its claim still holds
    |       +-- LeaseLost                a webhook outbox lease that expired or was taken over
    +-- AuditChainError          the audit log's hash chain is broken (names the first bad seq)
    +-- WebhookError             a webhook configuration or signature is invalid (opaque about secrets)
    +-- CoreDumpError            the process could not be kept from dumping core (start-up refused)

Lower-layer exceptions (sqlite3, botocore) are translated in exactly one place per adapter
(``parent_proxy.store.sqlite_base._translate`` and ``parent_proxy.store.dynamodb_base.translation``) with
``raise ... from exc``. Authentication failures (unknown token, revoked token, wrong secret) all raise the same
``NotFound("unknown or revoked token")`` so that a caller learns nothing about which part was wrong.
"""

from __future__ import annotations

from collections.abc import Mapping


class ProxyError(Exception):
    """Base class of every error the parent proxy's state, audit and webhook layers raise."""


class ClockUnavailable(ProxyError):
    """The clock could not be read. Time-dependent work stops: there is no default time."""


class StoreError(ProxyError):
    """Base class of every state-store error."""


class StoreUnavailable(StoreError):
    """The store cannot serve the request now (unreachable, locked past its timeout, throttled, broken)."""


class StoreOutcomeUnknown(StoreUnavailable):
    """A write whose answer never came (connection lost, read timeout, a 5xx), sent again as the same request and
    still unanswered: it was applied in full or not at all, and the store cannot tell which. Unlike any other
    `StoreUnavailable`, it does not mean "nothing was written": a caller that would give something back on a
    failure must first find out (DynamoDB only: a SQLite transaction is committed or not before it returns)."""


class InvalidInput(StoreError):
    """An argument is malformed. ``field`` names it. Nothing was changed."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(StoreError):
    """The named object does not exist."""


class LimitExceeded(StoreError):
    """A reservation was refused: for each offending (asset, window) the would-be total and the cap.

    ``excess`` maps ``(asset, window_seconds)`` to ``(would_be_total, cap)``. Nothing was recorded.
    """

    def __init__(self, wallet_id: str, excess: Mapping[tuple[str, int], tuple[int, int]]) -> None:
        parts = ", ".join(
            f"{asset}/{window}s: {total} > {cap}" for (asset, window), (total, cap) in sorted(excess.items())
        )
        super().__init__(f"wallet {wallet_id}: period limit exceeded ({parts})")
        self.wallet_id = wallet_id
        self.excess = dict(excess)


class Conflict(StoreError):
    """The write contradicts the stored state (duplicate id, wrong status, ...). Nothing was changed."""


class StalePolicySequence(Conflict):
    """A policy document whose sequence is not greater than the installed one."""

    def __init__(self, wallet_id: str, offered: int, current: int) -> None:
        super().__init__(f"wallet {wallet_id}: policy sequence {offered} is not greater than {current}")
        self.offered = offered
        self.current = current


class StaleOrderSequence(Conflict):
    """An owner freeze or unfreeze order whose sequence is not greater than the last one accepted."""

    def __init__(self, wallet_id: str, offered: int, current: int) -> None:
        super().__init__(f"wallet {wallet_id}: order sequence {offered} is not greater than {current}")
        self.offered = offered
        self.current = current


class IdempotencyMismatch(Conflict):
    """The idempotency key was already used with a different request."""


class IdempotencyInProgress(Conflict):
    """The idempotency key belongs to a request that is still being processed (or crashed while it was)."""


class AlreadyDecided(Conflict):
    """The approval is no longer pending; its first decision stands."""


class ApprovalPending(Conflict):
    """An escalation refused because an approval of the same message of the same wallet still waits for the owner
    (pending, or approved with its signing under way): ``approval_id`` names it. Nothing was changed."""

    def __init__(self, wallet_id: str, approval_id: str) -> None:
        super().__init__(f"wallet {wallet_id}: approval {approval_id} of the same message is still open")
        self.wallet_id = wallet_id
        self.approval_id = approval_id


class ApprovalSigned(Conflict):
    """An escalation refused because an approval of the same message of the same wallet was approved and its
    signing recorded a signature (`Approval.signed_answer`): ``approval_id`` names it. Nothing was changed; the
    request is answered with that signature (`parent_proxy.sign_outcomes.join_signed`), never a second approval."""

    def __init__(self, wallet_id: str, approval_id: str) -> None:
        super().__init__(f"wallet {wallet_id}: approval {approval_id} of the same message was signed")
        self.wallet_id = wallet_id
        self.approval_id = approval_id


class ApprovalClosed(Conflict):
    """A transaction refused (`state_changes.ApprovalStillOpen`): the approval it was conditional on is no longer
    open (rejected, expired, or approved and its signing over). Nothing of the transaction was written."""

    def __init__(self, wallet_id: str, approval_id: str) -> None:
        super().__init__(f"wallet {wallet_id}: approval {approval_id} is no longer open")
        self.wallet_id = wallet_id
        self.approval_id = approval_id


class FrozenMeanwhile(Conflict):
    """A signing's record refused (`state_changes.StillUnfrozen`): since the request read the wallet, it was frozen
    or took an owner freeze or unfreeze order. Nothing of the transaction was written."""

    def __init__(self, wallet_id: str) -> None:
        super().__init__(f"wallet {wallet_id} was frozen, or took an owner order, since the request read it")
        self.wallet_id = wallet_id


class AlreadyRevoked(Conflict):
    """The token is revoked already: an audited revocation (`RevokeToken`) writes nothing, not even its record."""


class NonceUsed(Conflict):
    """The owner key's wallet-creation nonce is claimed already and its claim still holds (a replayed request)."""


class ApprovalQueueFull(Conflict):
    """A wallet already has ``limit`` approvals pending: a new one is refused. Nothing was changed."""

    def __init__(self, wallet_id: str, limit: int) -> None:
        super().__init__(f"wallet {wallet_id}: {limit} approvals are pending already (at most {limit})")
        self.wallet_id = wallet_id
        self.limit = limit


class LeaseLost(Conflict):
    """The outbox item's lease expired or another worker holds it now."""


class AuditChainError(ProxyError):
    """The audit log's hash chain is broken at ``seq`` (the first record that does not verify)."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"audit chain broken at seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


class WebhookError(ProxyError):
    """A webhook configuration, delivery or signature problem. Never carries the secret."""


class CoreDumpError(ProxyError):
    """The proxy could not lower its core-file limit, or (Linux) clear its dumpable flag: it refuses to start
    (`parent_proxy.core_dumps`)."""
