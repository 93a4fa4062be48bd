"""Owner-signed orders the enclave obeys besides policies: freeze, unfreeze, and approval of an escalation.

All use the owner-signature scheme of :mod:`policies.signing` (domain prefix + purpose + canonical JSON), with
purposes ``freeze``, ``unfreeze`` and ``approval``, so no order can pass for another kind or for a policy.

Documents (exactly these fields)::

    freeze / unfreeze: {"wallet_id": str, "sequence": int >= 1, "expires_at": int (unix seconds)}
    approval:          {"wallet_id": str, "message_hash": "<64 hex chars: SHA-256 of the message bytes>",
                        "expires_at": int (unix seconds)}

Replay: freeze/unfreeze sequences must increase per wallet (the enclave keeps the last one); an order must not be
expired and may not claim a lifetime over :data:`MAX_ORDER_LIFETIME_SECONDS`, which bounds replays after a
restart (when the enclave's memory of sequences is gone). An approval binds one exact message: re-signing the
same message yields the same signature, so replaying it gains nothing within its short lifetime.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from solders.pubkey import Pubkey

from enclave_app.errors import StateError
from enclave_app.protocol import ErrorCode
from policies.errors import PolicyEngineError
from policies.signing import open_envelope

FREEZE_PURPOSE = "freeze"
UNFREEZE_PURPOSE = "unfreeze"
APPROVAL_PURPOSE = "approval"

MAX_ORDER_LIFETIME_SECONDS = 3600
"""Longest validity an order may claim (ours: an owner acts on a fresh notification; one hour of slack)."""
MAX_SEQUENCE = 2**53
"""Largest sequence (JSON integers beyond 2**53 are not portable)."""
_ORDER_FIELDS = frozenset({"wallet_id", "sequence", "expires_at"})
_APPROVAL_FIELDS = frozenset({"wallet_id", "message_hash", "expires_at"})


def _refuse(message: str) -> StateError:
    return StateError(ErrorCode.ORDER_INVALID, message)


def _open(data: bytes, purpose: str, owner: Pubkey, fields: frozenset[str], wallet_id: str) -> dict[str, Any]:
    try:
        document = open_envelope(data, purpose, owner)
    except PolicyEngineError as exc:
        raise _refuse(f"{purpose} order signature or envelope invalid") from exc
    if set(document) != fields:
        raise _refuse(f"{purpose} order has missing or extra fields")
    if document["wallet_id"] != wallet_id:
        raise _refuse(f"{purpose} order is for another wallet")
    return document


def _check_expiry(value: Any, now: datetime, purpose: str) -> None:
    if type(value) is not int:
        raise _refuse(f"{purpose} order expiry must be an integer")
    now_s = now.timestamp()
    if value <= now_s:
        raise _refuse(f"{purpose} order expired")
    if value > now_s + MAX_ORDER_LIFETIME_SECONDS:
        raise _refuse(f"{purpose} order lifetime too long")


@dataclass(frozen=True, slots=True)
class FreezeOrder:
    freeze: bool
    sequence: int


def verify_freeze_order(
    data: bytes, *, freeze: bool, owner: Pubkey, wallet_id: str, now: datetime, last_sequence: int
) -> FreezeOrder:
    """Verify a freeze (``freeze=True``) or unfreeze order and return it, or raise ``StateError``."""
    purpose = FREEZE_PURPOSE if freeze else UNFREEZE_PURPOSE
    # 1. Owner signature under the purpose; 2. exact fields and wallet; 3. expiry; 4. sequence above the last.
    document = _open(data, purpose, owner, _ORDER_FIELDS, wallet_id)
    _check_expiry(document["expires_at"], now, purpose)
    sequence = document["sequence"]
    if type(sequence) is not int or not 1 <= sequence <= MAX_SEQUENCE:
        raise _refuse(f"{purpose} order sequence invalid")
    if sequence <= last_sequence:
        raise StateError(ErrorCode.ORDER_STALE, f"{purpose} order sequence not above the last accepted one")
    return FreezeOrder(freeze=freeze, sequence=sequence)


def verify_approval(data: bytes, *, owner: Pubkey, wallet_id: str, message_hash: bytes, now: datetime) -> None:
    """Return if ``data`` is the owner's unexpired approval of exactly ``message_hash``, else raise."""
    # 1. Owner signature under "approval"; 2. exact fields and wallet; 3. expiry; 4. the message it binds.
    document = _open(data, APPROVAL_PURPOSE, owner, _APPROVAL_FIELDS, wallet_id)
    _check_expiry(document["expires_at"], now, APPROVAL_PURPOSE)
    approved = document["message_hash"]
    if type(approved) is not str or len(approved) != 64:
        raise _refuse("approval message hash malformed")
    try:
        approved_bytes = bytes.fromhex(approved)
    except ValueError as exc:
        raise _refuse("approval message hash malformed") from exc
    if not hmac.compare_digest(approved_bytes, message_hash):
        raise _refuse("approval is for another message")
