"""Input checks shared by every store adapter, so that bad input fails the same way everywhere.

Each check raises `InvalidInput` naming the field; adapters run them before touching the backend, so a refused
call changes nothing. The webhook checks (a receiver, an outbox item, a delivery attempt's outcome) are in
`validation_outbox`, those of `Store.apply_audited`'s state changes in `validation_changes`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping

from parent_proxy.errors import Conflict, InvalidInput
from parent_proxy.store.model import (
    GENESIS_PREV_HASH,
    AgentKeyCandidate,
    Approval,
    ApprovalStatus,
    AuditRecord,
    IdempotencyStatus,
    IdempotentAnswer,
    OwnerOrder,
    Wallet,
)
from policies.identifiers import WALLET_ID_RULE, is_wallet_id

ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""Wallet ids, request ids, asset names (``SOL``, a base58 mint, or ``fees``), event and approval ids."""
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")
"""Printable ASCII, no spaces, like the common ``Idempotency-Key`` header conventions."""
PUBKEY_BYTES = 32
"""Ed25519 public keys and Solana addresses are 32 bytes."""
SHA256_BYTES = 32
MAX_U64 = 2**64 - 1
"""SPL token amounts and lamports are u64 on chain; no amount or cap can exceed that."""
MAX_WINDOW_SECONDS = 31 * 86_400
"""Longest rolling window the store keeps history for (a month); DynamoDB items expire after it."""
IDEMPOTENCY_RETENTION_SECONDS = 86_400
"""A completed idempotency key replays its answer for a day after its first request; then the key is free again."""
OUTBOX_RETENTION_SECONDS = 30 * 86_400
"""A webhook outbox item that was delivered or given up (dead), with its delivery-log lines, is kept this long after
the attempt that finished it (a month to look into a receiver's complaint), then deleted (`Store.prune`; DynamoDB:
the TTL). A pending item is never deleted. An event id is unique for as long as its item is kept (the proxy's are
random: `parent_proxy.webhooks.event_item`)."""
IDEMPOTENCY_STALE_SECONDS = 900
"""An idempotency claim still in progress this long after it was taken belongs to a request that died (a crashed
process: every request ends within its enclave and store timeouts, seconds): the key is free again. Nothing of such
a request was answered, so a retry signs at most what the first attempt would have (an unanswered reservation stays
counted until its window passes)."""
MAX_BLOB_BYTES = 64 * 1024
"""Policy documents, sealed keys, request payloads, responses and webhook bodies (DynamoDB items are <= 400 KB)."""
MAX_REASON_CHARS = 500
MAX_PENDING_BOUND = 10_000
"""Largest bound on a wallet's pending approvals a `CreateApproval` may ask for (the proxy asks for 100)."""
MAX_STALLED_APPROVALS = 1000
"""Most approvals one `Store.stalled_approvals` call may list (the proxy's sweep asks for 100 at a time)."""
MAX_ORDER_SEQUENCE = 2**53
"""Largest owner order sequence (the orders' own bound, `policies.orders.MAX_SEQUENCE`; a test keeps them equal)."""
MAX_ORDER_BYTES = 4 * 1024
"""Largest owner order envelope kept (a freeze order is three small fields and a signature, under 300 bytes as the
proxy re-serializes it)."""


def check_id(field: str, value: object) -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise InvalidInput(field, "must be 1-128 characters of A-Z a-z 0-9 . _ : -")
    return value


def check_ids(field: str, values: object) -> frozenset[str]:
    """A collection of ids, each as `check_id` (a bare string is refused: it would read as its characters)."""
    if isinstance(values, str | bytes) or not isinstance(values, Collection):
        raise InvalidInput(field, "must be a collection of ids")
    return frozenset(check_id(field, value) for value in values)


def idempotency_expired(status: str, created_at: float, now: float) -> bool:
    """Whether an idempotency record (``status``, taken at ``created_at``) no longer holds its key at ``now``."""
    if status == IdempotencyStatus.IN_PROGRESS:
        return created_at < now - IDEMPOTENCY_STALE_SECONDS
    return created_at < now - IDEMPOTENCY_RETENTION_SECONDS


def check_idempotency_key(value: object) -> str:
    if not isinstance(value, str) or not IDEMPOTENCY_KEY_RE.fullmatch(value):
        raise InvalidInput("key", "must be 1-255 printable ASCII characters without spaces")
    return value


def check_time(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInput(field, "must be a finite, non-negative number of seconds")
    return float(value)


def check_blob(field: str, value: object, *, max_bytes: int = MAX_BLOB_BYTES) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidInput(field, "must be bytes")
    if len(value) > max_bytes:
        raise InvalidInput(field, f"is {len(value)} bytes, more than {max_bytes}")
    return value


def check_digest(field: str, value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != SHA256_BYTES:
        raise InvalidInput(field, f"must be a {SHA256_BYTES}-byte digest")
    return value


def check_count(field: str, value: object, *, minimum: int = 0, maximum: int = MAX_U64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidInput(field, f"must be an integer in [{minimum}, {maximum}]")
    return value


def check_reason(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_REASON_CHARS:
        raise InvalidInput(field, f"must be a non-blank string of at most {MAX_REASON_CHARS} characters")
    return value


def check_amounts(amounts: object) -> tuple[tuple[str, int], ...]:
    """Positive u64 amounts per asset, returned sorted by asset."""
    if not isinstance(amounts, Mapping):
        raise InvalidInput("amounts", "must be a mapping of asset to amount")
    checked = {check_id("amounts.asset", a): check_count(f"amounts[{a}]", v, minimum=1) for a, v in amounts.items()}
    return tuple(sorted(checked.items()))


def check_limits(limits: object) -> dict[tuple[str, int], int]:
    if not isinstance(limits, Mapping):
        raise InvalidInput("limits", "must be a mapping of (asset, window_seconds) to cap")
    checked: dict[tuple[str, int], int] = {}
    for key, cap in limits.items():
        if not isinstance(key, tuple) or len(key) != 2:
            raise InvalidInput("limits", "keys must be (asset, window_seconds) pairs")
        asset = check_id("limits.asset", key[0])
        window = check_count(f"limits[{asset}].window_seconds", key[1], minimum=1, maximum=MAX_WINDOW_SECONDS)
        checked[(asset, window)] = check_count(f"limits[{asset}, {window}]", cap)
    return checked


def check_wallet(wallet: object) -> Wallet:
    if not isinstance(wallet, Wallet):
        raise InvalidInput("wallet", "must be a Wallet")
    if not is_wallet_id(wallet.wallet_id):  # the API's and the enclave's rule: a new wallet's id enters here only
        raise InvalidInput("wallet_id", f"must be {WALLET_ID_RULE}")
    for name in ("agent_pubkey", "owner_pubkey", "vault_address"):
        check_pubkey(name, getattr(wallet, name))
    if not check_blob("sealed_key", wallet.sealed_key):
        raise InvalidInput("sealed_key", "must not be empty")
    check_frozen(wallet.frozen, wallet.frozen_reason)
    if wallet.policy_document is not None:
        check_blob("policy_document", wallet.policy_document)
    check_count("policy_sequence", wallet.policy_sequence)
    check_count("order_sequence", wallet.order_sequence, maximum=MAX_ORDER_SEQUENCE)
    if wallet.last_order is not None:
        if not isinstance(wallet.last_order, OwnerOrder) or not isinstance(wallet.last_order.freeze, bool):
            raise InvalidInput("last_order", "must be an OwnerOrder")
        check_order("last_order", wallet.last_order.envelope, wallet.order_sequence)
    return wallet


def check_order(field: str, envelope: object, sequence: int | None) -> bytes:
    """An owner order's envelope, kept with the order's sequence (``sequence``: None or 0 when there is none)."""
    if not sequence:
        raise InvalidInput(field, "an order envelope goes with its order sequence")
    kept = check_blob(field, envelope, max_bytes=MAX_ORDER_BYTES)
    if not kept:
        raise InvalidInput(field, "must not be empty")
    return kept


def check_pubkey(field: str, value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != PUBKEY_BYTES:
        raise InvalidInput(field, f"must be {PUBKEY_BYTES} bytes")
    return value


def check_agent_keys(agent_pubkey: object, candidate_pubkey: object) -> None:
    """A wallet's agent key and the candidate that replaces it: two different 32-byte keys."""
    check_pubkey("agent_pubkey", agent_pubkey)
    if check_pubkey("candidate_pubkey", candidate_pubkey) == agent_pubkey:
        raise InvalidInput("candidate_pubkey", "is the agent key it would replace")


def check_agent_key_candidate(candidate: object) -> AgentKeyCandidate:
    """A new candidate agent key (`SetAgentKeyCandidate`); ``created_at`` normalised. The blob is never echoed."""
    if not isinstance(candidate, AgentKeyCandidate):
        raise InvalidInput("candidate", "must be an AgentKeyCandidate")
    check_id("wallet_id", candidate.wallet_id)
    check_agent_keys(candidate.agent_pubkey, candidate.candidate_pubkey)
    if not check_blob("sealed_key", candidate.sealed_key):
        raise InvalidInput("sealed_key", "must not be empty")
    created_at = check_time("created_at", candidate.created_at)
    return AgentKeyCandidate(
        candidate.wallet_id, candidate.agent_pubkey, candidate.candidate_pubkey, candidate.sealed_key, created_at
    )


def check_frozen(frozen: object, reason: object) -> None:
    if not isinstance(frozen, bool):
        raise InvalidInput("frozen", "must be a bool")
    if frozen:
        check_reason("frozen_reason", reason)
    elif reason is not None:
        raise InvalidInput("frozen_reason", "must be None when the wallet is not frozen")


def check_approval(approval: object) -> Approval:
    if not isinstance(approval, Approval):
        raise InvalidInput("approval", "must be an Approval")
    check_id("approval_id", approval.approval_id)
    check_id("wallet_id", approval.wallet_id)
    check_blob("request_payload", approval.request_payload)
    check_time("created_at", approval.created_at)
    if (
        approval.status != "pending"
        or approval.decision is not None
        or approval.decided_at is not None
        or (approval.signing is not None or approval.signed_answer is not None)
    ):
        raise InvalidInput("status", "a new approval must be pending and undecided")
    if approval.message_hash is not None:
        check_digest("message_hash", approval.message_hash)
    return approval


def check_claim(wallet_id: object, key: object, request_hash: object) -> None:
    """An idempotency claim: a wallet id, a key, a 32-byte request digest."""
    check_id("wallet_id", wallet_id)
    check_idempotency_key(key)
    check_digest("request_hash", request_hash)


def check_signing_start(
    wallet_id: object, key: object, request_hash: object, *, request_id: object, amounts: object, limits: object,
    now: object,
) -> tuple[tuple[tuple[str, int], ...], dict[tuple[str, int], int], float]:  # fmt: skip
    """The arguments of `Store.begin_signing`: (amounts wanted, caps, now), checked."""
    check_claim(wallet_id, key, request_hash)
    check_id("request_id", request_id)
    wanted = check_amounts(amounts) if amounts else ()
    return wanted, check_limits(limits), check_time("now", now)


def check_answer(answer: object) -> IdempotentAnswer:
    """The stored answer `Store.finish_signing` completes an idempotency claim with."""
    if not isinstance(answer, IdempotentAnswer):
        raise InvalidInput("answer", "must be an IdempotentAnswer")
    check_stored_answer(answer.wallet_id, answer.key, answer.request_hash, answer.response)
    return answer


def check_stored_answer(wallet_id: object, key: object, request_hash: object, response: object) -> None:
    """An answer stored under an idempotency claim (`Store.complete_idempotent`, `Store.replace_idempotent`)."""
    check_claim(wallet_id, key, request_hash)
    check_blob("response", response)


def check_approval_decision(
    approval_id: object, status: object, decision: object, now: object, signing: object = None
) -> float:
    """The arguments of `Store.decide_approval` (a final status, the owner's answer if any, and for an approval the
    signing that follows it, always named); returns ``now``."""
    check_id("approval_id", approval_id)
    if status not in (ApprovalStatus.APPROVED, ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED):
        raise InvalidInput("status", "must be approved, rejected or expired")
    if decision is not None:
        check_blob("decision", decision)
    if status is ApprovalStatus.APPROVED:
        if signing is None:
            raise InvalidInput("signing", "an approval names the signing that follows it")
        check_id("signing", signing)
    elif signing is not None:
        raise InvalidInput("signing", "only an approval is followed by a signing")
    return check_time("now", now)


def check_approval_reopening(approval_id: object, decision: object, signing: object) -> None:
    """The arguments of `Store.reopen_approval` (the signing that failed is always named)."""
    check_id("approval_id", approval_id)
    check_blob("decision", decision)
    check_id("signing", signing)


def check_stalled_query(decided_before: object, limit: object) -> float:
    """The arguments of `Store.stalled_approvals`; returns ``decided_before``."""
    check_count("limit", limit, minimum=1, maximum=MAX_STALLED_APPROVALS)
    return check_time("decided_before", decided_before)


def check_extends(record: AuditRecord, head: tuple[int, bytes] | None) -> None:
    """`Conflict` unless ``record`` follows ``head`` (the current head's seq and hash; None: the log is empty)."""
    expected_seq, expected_prev = (1, GENESIS_PREV_HASH) if head is None else (head[0] + 1, head[1])
    if record.seq != expected_seq or record.prev_hash != expected_prev:
        raise Conflict(f"audit record {record.seq} does not extend the head (expected seq {expected_seq})")
