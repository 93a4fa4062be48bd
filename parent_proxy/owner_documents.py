"""Owner-signed orders besides policies: freeze, unfreeze, and approval of an escalated request.

The format is the enclave's (``enclave_app.orders``), which verifies them again authoritatively; the proxy checks
them first so that it can refuse early and keep its own state (frozen flag, approval status) in step:

    freeze / unfreeze (purposes "freeze" / "unfreeze"): {"wallet_id": str, "sequence": int >= 1, "expires_at": int}
    approval (purpose "approval"): {"wallet_id": str, "message_hash": "<hex SHA-256 of the message bytes>",
                                    "expires_at": int}

Checks here: 1. owner signature under the purpose (`policies.signing.open_envelope`); 2. exactly these fields and
this wallet; 3. not expired and a lifetime of at most `MAX_ORDER_LIFETIME_SECONDS`; 4. for an approval, the exact
message. Freeze sequences must increase: the enclave keeps the last one, the proxy relies on the owner request's
nonce (`parent_proxy.owner_auth`) against replays at the HTTP layer. Errors: `PolicyDocumentError` (field named)
or `PolicySignatureError` (opaque).
"""

from __future__ import annotations

import hmac
from typing import Any

from solders.pubkey import Pubkey

from policies.errors import PolicyDocumentError
from policies.signing import open_envelope

FREEZE_PURPOSE = "freeze"
UNFREEZE_PURPOSE = "unfreeze"
APPROVAL_PURPOSE = "approval"
MAX_ORDER_LIFETIME_SECONDS = 3600
"""Same bound as ``enclave_app.orders.MAX_ORDER_LIFETIME_SECONDS``."""
MAX_SEQUENCE = 2**53


def freeze_document(wallet_id: str, sequence: int, expires_at: int) -> dict[str, Any]:
    return {"wallet_id": wallet_id, "sequence": sequence, "expires_at": expires_at}


def approval_document(wallet_id: str, message_hash: bytes, expires_at: int) -> dict[str, Any]:
    return {"wallet_id": wallet_id, "message_hash": message_hash.hex(), "expires_at": expires_at}


def _open(
    data: bytes, purpose: str, owner: Pubkey, fields: frozenset[str], *, wallet_id: str, now: float
) -> dict[str, Any]:
    document = open_envelope(data, purpose, owner)
    if set(document) != fields:
        raise PolicyDocumentError(purpose, "missing or extra fields")
    if document["wallet_id"] != wallet_id:
        raise PolicyDocumentError("wallet_id", "the order is for another wallet")
    expires_at = document["expires_at"]
    if type(expires_at) is not int or expires_at <= now:
        raise PolicyDocumentError("expires_at", "the order has expired")
    if expires_at > now + MAX_ORDER_LIFETIME_SECONDS:
        raise PolicyDocumentError("expires_at", f"lifetime over {MAX_ORDER_LIFETIME_SECONDS} seconds")
    return document


def check_freeze_order(data: bytes, *, freeze: bool, owner: Pubkey, wallet_id: str, now: float) -> int:
    """Verify a freeze (or unfreeze) order; return its sequence."""
    purpose = FREEZE_PURPOSE if freeze else UNFREEZE_PURPOSE
    document = _open(
        data, purpose, owner, frozenset({"wallet_id", "sequence", "expires_at"}), wallet_id=wallet_id, now=now
    )
    sequence = document["sequence"]
    if type(sequence) is not int or not 1 <= sequence <= MAX_SEQUENCE:
        raise PolicyDocumentError("sequence", "must be an integer >= 1")
    return sequence


def check_approval(data: bytes, *, owner: Pubkey, wallet_id: str, message_hash: bytes, now: float) -> None:
    """Return if ``data`` is the owner's unexpired approval of exactly ``message_hash``; else raise."""
    document = _open(
        data,
        APPROVAL_PURPOSE,
        owner,
        frozenset({"wallet_id", "message_hash", "expires_at"}),
        wallet_id=wallet_id,
        now=now,
    )
    approved = document["message_hash"]
    try:
        approved_bytes = bytes.fromhex(approved) if isinstance(approved, str) and len(approved) == 64 else b""
    except ValueError:
        approved_bytes = b""
    if not approved_bytes or not hmac.compare_digest(approved_bytes, message_hash):
        raise PolicyDocumentError("message_hash", "the approval is for another message")
