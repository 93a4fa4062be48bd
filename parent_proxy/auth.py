"""Agent authentication: a bearer token bound to one wallet, and a rate limit per token (and the anonymous
attestation route's own limit, `attestation_limiter`).

1. The ``Authorization`` header must be ``Bearer <token>``; the token's format is checked before any lookup.
2. The store compares SHA-256(secret) in constant time (see `parent_proxy.store.tokens`); unknown, malformed and
   revoked tokens are indistinguishable (401 ``unauthorized``).
3. The token's wallet must be the wallet named in the path; otherwise 404 (the caller learns nothing about other
   wallets).
4. A token bucket per token id bounds the request rate (429). It is per process: with several parent instances
   the effective rate is at most instances x rate, and the policy's own ``rate`` rule (counted in the shared
   store) still applies.

The clear token is never logged; only its public ``token_id`` may be.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from parent_proxy.api_errors import ApiError, Code
from parent_proxy.errors import NotFound
from parent_proxy.store import tokens
from parent_proxy.store.protocol import Store

MAX_TRACKED_TOKENS = 100_000
"""Token buckets kept in memory (least recently used evicted; an evicted bucket starts full again)."""
ATTESTATION_BUCKET = "attestation"
"""The one bucket of ``GET /v1/attestation`` (`attestation_limiter`): its callers are anonymous."""
OWNER_ATTESTATION_PREFIX = "owner-attestation:"
"""Key prefix of an owner key's own attestation bucket (`owner_attestation_bucket`)."""


@dataclass(frozen=True, slots=True)
class Agent:
    """An authenticated agent: its token's public id and the wallet the token is bound to."""

    token_id: str
    wallet_id: str


def bearer_token(header: str | None) -> str:
    """The token from an ``Authorization: Bearer ...`` header, or 401."""
    if header is None:
        raise ApiError(Code.UNAUTHORIZED, "missing bearer token")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or tokens.parse_token(value.strip()) is None:
        raise ApiError(Code.UNAUTHORIZED, "invalid bearer token")
    return value.strip()


def authenticate_agent(store: Store, header: str | None, wallet_id: str) -> Agent:
    """Steps 1-3 of the module docstring. Store failures propagate (they become 503, not 401)."""
    token = bearer_token(header)
    parsed = tokens.parse_token(token)
    if parsed is None:  # pragma: no cover - bearer_token checked the format
        raise ApiError(Code.UNAUTHORIZED, "invalid bearer token")
    try:
        bound = store.authenticate_token(token)
    except NotFound as exc:
        raise ApiError(Code.UNAUTHORIZED, "invalid bearer token") from exc
    if bound != wallet_id:
        raise ApiError(Code.NOT_FOUND, "no such wallet for this token")
    return Agent(token_id=parsed[0], wallet_id=bound)


class RateLimiter:
    """Token buckets keyed by token id (or any key: `ATTESTATION_BUCKET`); ``check`` raises 429 ``rate_limited``
    with ``refusal`` as its message when the bucket is empty. Thread-safe."""

    def __init__(
        self, rate_per_second: float, burst: int, *, refusal: str = "too many requests for this token"
    ) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("rate and burst must be positive")
        self._refusal = refusal
        self._rate = rate_per_second
        self._burst = float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, key: str, now: float) -> None:
        with self._lock:
            level, last = self._buckets.pop(key, (self._burst, now))
            level = min(self._burst, level + max(0.0, now - last) * self._rate)
            allowed = level >= 1.0
            self._buckets[key] = (level - 1.0 if allowed else level, now)
            while len(self._buckets) > MAX_TRACKED_TOKENS:
                self._buckets.popitem(last=False)
        if not allowed:
            raise ApiError(Code.RATE_LIMITED, self._refusal)


def attestation_limiter(rate_per_second: float, burst: int) -> RateLimiter:
    """The limit of ``GET /v1/attestation``, each call one NSM attestation in the enclave: one bucket per process
    (`ATTESTATION_BUCKET`), not per client. Callers are anonymous, and behind the cloud load balancer every client
    has the balancer's address; the resource protected is the one enclave, whoever asks. One caller can use up the
    bucket for all (the signing routes are not affected: their attestations, one per session change, are not
    counted). Per process, like the token buckets: N workers or instances allow N x the rate.

    The owner routes that carry an attestation (``?nonce=``) draw on the same limiter but not on that bucket: each
    verified owner key has a bucket of its own (`owner_attestation_bucket`), so anonymous callers cannot hold an
    owner at 429, and a stolen owner key still asks the enclave at most at the configured rate."""
    return RateLimiter(rate_per_second, burst, refusal="too many attestation requests; try again later")


def owner_attestation_bucket(owner: bytes) -> str:
    """The attestation bucket of the owner key ``owner`` (32 bytes), whose request signature was verified: only an
    owner's signed, fresh, never-seen request draws on it (the nonce is claimed first), so neither an anonymous
    caller nor a replay of a captured owner request can spend it."""
    return OWNER_ATTESTATION_PREFIX + owner.hex()
