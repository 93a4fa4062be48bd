"""Agent bearer tokens: format, generation and the stored hash.

A token is ``waiaas_<token_id>_<secret>``: ``token_id`` (16 hex characters) is the lookup key and may appear in
logs; ``secret`` is 32 random bytes (url-safe base64) and must never be logged or stored. The store keeps
SHA-256(secret). A plain hash is enough here because the secret has 256 bits of entropy: there is no dictionary to
try, so a slow password hash (Argon2, scrypt) would only cost latency on every request; the hash still means a
copy of the database does not yield usable tokens. Lookup is by ``token_id`` and the hash is compared with
`hmac.compare_digest`, so response time does not depend on how much of a guessed secret is right.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

TOKEN_PREFIX = "waiaas"  # noqa: S105 - a public prefix, not a secret
SECRET_BYTES = 32
TOKEN_ID_BYTES = 8
_TOKEN_RE = re.compile(r"waiaas_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_DUMMY_HASH = hashlib.sha256(b"no such token").digest()


def new_token() -> tuple[str, str, bytes]:
    """Return (token_id, clear token, SHA-256 of its secret)."""
    token_id = secrets.token_hex(TOKEN_ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return token_id, f"{TOKEN_PREFIX}_{token_id}_{secret}", hash_secret(secret)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def parse_token(token: object) -> tuple[str, str] | None:
    """(token_id, secret), or None if ``token`` is not a well-formed token."""
    if not isinstance(token, str):
        return None
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        return None
    return match.group(1), match.group(2)


def secret_matches(secret: str, stored_hash: bytes | None) -> bool:
    """Constant-time comparison; a missing row is compared against a dummy so both paths do the same work."""
    expected = _DUMMY_HASH if stored_hash is None else stored_hash
    return hmac.compare_digest(hash_secret(secret), expected) and stored_hash is not None
