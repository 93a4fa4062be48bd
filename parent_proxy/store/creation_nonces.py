"""Wallet-creation nonces (`Store.claim_creation_nonce`): what both adapters share.

An owner request for an existing wallet keeps its nonce with the wallet (an idempotency record,
`parent_proxy.owner_auth.StoreNonceRegistry`). A creation (``POST /v1/wallets``) has no wallet yet, so its nonce is
kept apart, keyed by the owner key that signed the request and the nonce, and held until a time the caller names
(the last moment any parent process would still accept the request's timestamp):

    SQLite     table ``creation_nonces`` (owner, nonce) -> held_until  (`sqlite_creation_nonces`)
    DynamoDB   item ``CN#<owner hex>`` / ``N#<nonce>`` with held_until  (`dynamodb_creation_nonces`)

Nothing of the request's body (the wallet id it names) is part of the key: the caller claims the nonce before the
body is even parsed, and an id that will never exist costs the store nothing more than any other. A claim is one
atomic write (a held nonce refuses it; an expired one is replaced), so two processes claiming the same nonce at
once cannot both succeed.

Clocks: whether a claim still holds is judged by the claiming process's clock against a time derived from the
request's own signed timestamp, the comparison by which that process accepts the timestamp at all, so clocks that
differ between processes open no window. Only deletion runs on another clock: SQLite's prune on the one host that
shares the file; DynamoDB's TTL on AWS's, from a second after the hold (a proxy whose clock lagged AWS's by more
than 450 s minus its configured skew could meet a claim deleted early).

The number of records is bounded by the caller: the proxy claims only after the owner signature verified under a
configured owner key and the timestamp is fresh (see `parent_proxy.owner_auth`); the store refuses a hold longer
than `MAX_HOLD_SECONDS`.
"""

from __future__ import annotations

import re

from parent_proxy.errors import InvalidInput
from parent_proxy.store import validation as v

NONCE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Characters a nonce may have in the store: the owner header's alphabet (`parent_proxy.owner_auth.NONCE_RE`, 16-64
of them), which keys hold unchanged in both adapters."""
MAX_HOLD_SECONDS = 3600
"""Longest a claim may be held past ``now``: an hour, well over what the proxy asks (at most twice
`parent_proxy.owner_auth.MAX_SKEW_SECONDS`, 900 s). It bounds how long a record can stay, whatever the caller."""


def check_claim(owner: object, nonce: object, now: object, held_until: object) -> tuple[bytes, str, float, float]:
    """The checked arguments of `Store.claim_creation_nonce`, or `InvalidInput` naming the first bad one."""
    key = v.check_pubkey("owner", owner)
    if not isinstance(nonce, str) or not NONCE_RE.fullmatch(nonce):
        raise InvalidInput("nonce", "must be 1-64 of A-Z a-z 0-9 _ -")
    at = v.check_time("now", now)
    until = v.check_time("held_until", held_until)
    if not at <= until <= at + MAX_HOLD_SECONDS:
        raise InvalidInput("held_until", f"must be from now to {MAX_HOLD_SECONDS} s after it")
    return key, nonce, at, until


def expired(held_until: float, now: float) -> bool:
    """Whether a claim held until ``held_until`` (inclusive) no longer holds its nonce at ``now``."""
    return held_until < now
