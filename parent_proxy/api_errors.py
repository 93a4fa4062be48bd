"""The HTTP API's one error body and its closed set of stable codes.

Every error response, whatever raised it, has this body::

    {"error": {"code": "<stable code>", "message": "<human text>", "reasons": [...]}}

``reasons`` is present for policy refusals (the decision's machine-readable reasons) and for a policy install
refused because its multisig on chain does not conform (the failed checks). Codes are part of the
API contract (docs/api.md); messages are not. Lower-layer errors (store, clock, enclave, chain) become `ApiError`
in exactly one place, `translate`, with ``raise ... from exc``; their messages are replaced by fixed phrases so
that nothing internal (paths, SQL, peer addresses) reaches a client.
"""

from __future__ import annotations

import enum
from typing import Any

from parent_proxy.errors import (
    AlreadyDecided,
    ClockUnavailable,
    Conflict,
    IdempotencyInProgress,
    IdempotencyMismatch,
    InvalidInput,
    NotFound,
    StaleOrderSequence,
    StalePolicySequence,
    StoreUnavailable,
)
from policies.errors import PolicyEngineError, PolicySignatureError


class Code(enum.StrEnum):
    BAD_REQUEST = "bad_request"  # 400: not JSON (empty, unparsable, another content type), a bad Content-Length
    METHOD_NOT_ALLOWED = "method_not_allowed"  # 405: a method the path does not have (``Allow`` lists those it has)
    INVALID_REQUEST = "invalid_request"  # 422: JSON that fails validation
    UNAUTHORIZED = "unauthorized"  # 401: missing, unknown or revoked agent token
    OWNER_SIGNATURE_INVALID = "owner_signature_invalid"  # 401: owner request signature missing or wrong
    OWNER_REQUEST_REPLAYED = "owner_request_replayed"  # 401: nonce seen before, or timestamp outside the window
    NOT_FOUND = "not_found"  # 404: no such wallet / approval (or not this token's)
    SESSION_KEY_NOT_HERE = "session_key_not_here"  # 404: this host's enclave has another session key (ask again)
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"  # 409: same key, different request
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"  # 409: same key, first request not finished
    CONFLICT = "conflict"  # 409: already exists / already decided
    STALE_POLICY = "stale_policy"  # 409: policy sequence not above the installed one, or the policy has expired
    MULTISIG_NONCONFORMING = "multisig_nonconforming"  # 409: the policy's multisig on chain fails checks (reasons)
    PAYLOAD_TOO_LARGE = "payload_too_large"  # 413
    RATE_LIMITED = "rate_limited"  # 429
    POLICY_DENIED = "policy_denied"  # 403: decision DENY (reasons given)
    WALLET_FROZEN = "wallet_frozen"  # 403: the wallet is frozen (or this request froze it)
    LIMIT_EXCEEDED = "limit_exceeded"  # 403: a concurrent request used up the period limit first
    NO_POLICY = "no_policy"  # 403: the wallet has no installed policy: default deny
    ENCLAVE_REFUSED = "enclave_refused"  # 403: the enclave's authoritative check refused
    REJECTED_BY_OWNER = "rejected_by_owner"  # 403: the owner rejected the escalated request (its key's answer)
    ENCLAVE_UNAVAILABLE = "enclave_unavailable"  # 503: unreachable, slow, not ready, or answered nonsense
    ATTESTATION_REFUSED = "attestation_refused"  # 503: KMS did not accept the enclave's attestation
    ATTESTATION_INCONSISTENT = "attestation_inconsistent"  # 503: the attestation answer contradicts itself
    SIGNER_SECRET_MISMATCH = "signer_secret_mismatch"  # noqa: S105 (a code) 503: the signer opens no stored wallet
    STORE_UNAVAILABLE = "store_unavailable"  # 503
    CLOCK_UNAVAILABLE = "clock_unavailable"  # 503
    CHAIN_UNAVAILABLE = "chain_unavailable"  # 503: the chain could not be read (lookup tables, the multisig)
    INTERNAL = "internal_error"  # 500: a bug; nothing was signed


STATUS: dict[Code, int] = {
    Code.BAD_REQUEST: 400,
    Code.METHOD_NOT_ALLOWED: 405,
    Code.INVALID_REQUEST: 422,
    Code.UNAUTHORIZED: 401,
    Code.OWNER_SIGNATURE_INVALID: 401,
    Code.OWNER_REQUEST_REPLAYED: 401,
    Code.NOT_FOUND: 404,
    Code.SESSION_KEY_NOT_HERE: 404,
    Code.IDEMPOTENCY_KEY_REUSED: 409,
    Code.IDEMPOTENCY_IN_PROGRESS: 409,
    Code.CONFLICT: 409,
    Code.STALE_POLICY: 409,
    Code.MULTISIG_NONCONFORMING: 409,
    Code.PAYLOAD_TOO_LARGE: 413,
    Code.RATE_LIMITED: 429,
    Code.POLICY_DENIED: 403,
    Code.WALLET_FROZEN: 403,
    Code.LIMIT_EXCEEDED: 403,
    Code.NO_POLICY: 403,
    Code.ENCLAVE_REFUSED: 403,
    Code.REJECTED_BY_OWNER: 403,
    Code.ENCLAVE_UNAVAILABLE: 503,
    Code.ATTESTATION_REFUSED: 503,
    Code.ATTESTATION_INCONSISTENT: 503,
    Code.SIGNER_SECRET_MISMATCH: 503,
    Code.STORE_UNAVAILABLE: 503,
    Code.CLOCK_UNAVAILABLE: 503,
    Code.CHAIN_UNAVAILABLE: 503,
    Code.INTERNAL: 500,
}


class ApiError(Exception):
    """An error answered to the client as the uniform body with ``STATUS[code]``."""

    def __init__(self, code: Code, message: str, *, reasons: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reasons = reasons

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.reasons is not None:
            error["reasons"] = self.reasons
        return {"error": error}


def owner_document_refused(what: str, exc: PolicyEngineError) -> ApiError:
    """The answer to an owner-signed document (policy or order) the proxy refuses: 401 ``owner_signature_invalid``
    only when the owner's signature fails; a signed document with a field refused (expired, another wallet,
    another message, a sequence out of range, a malformed envelope) is 422 ``invalid_request`` naming it."""
    code = Code.OWNER_SIGNATURE_INVALID if isinstance(exc, PolicySignatureError) else Code.INVALID_REQUEST
    return ApiError(code, f"{what} refused: {exc}")


def translate(exc: Exception) -> ApiError:
    """The one place lower-layer errors become API errors (fixed messages; nothing internal leaks)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, StoreUnavailable):
        return ApiError(Code.STORE_UNAVAILABLE, "the state store is unavailable; nothing was signed")
    if isinstance(exc, ClockUnavailable):
        return ApiError(Code.CLOCK_UNAVAILABLE, "the clock is unavailable; nothing was signed")
    if isinstance(exc, IdempotencyMismatch):
        return ApiError(Code.IDEMPOTENCY_KEY_REUSED, "the idempotency key was used for a different request")
    if isinstance(exc, IdempotencyInProgress):
        return ApiError(Code.IDEMPOTENCY_IN_PROGRESS, "a request with this idempotency key is still in progress")
    if isinstance(exc, StalePolicySequence):
        return ApiError(Code.STALE_POLICY, f"policy sequence {exc.offered} is not above {exc.current}")
    if isinstance(exc, StaleOrderSequence):
        return ApiError(Code.CONFLICT, f"order sequence {exc.offered} is not above the last accepted {exc.current}")
    if isinstance(exc, AlreadyDecided):
        return ApiError(Code.CONFLICT, "the approval has already been decided")
    if isinstance(exc, Conflict):
        return ApiError(Code.CONFLICT, "the request conflicts with the stored state")
    if isinstance(exc, NotFound):
        return ApiError(Code.NOT_FOUND, "not found")
    if isinstance(exc, InvalidInput):
        return ApiError(Code.INVALID_REQUEST, f"{exc.field}: {exc.reason}")
    return ApiError(Code.INTERNAL, "internal error; nothing was signed")
