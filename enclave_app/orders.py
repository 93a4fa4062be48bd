"""Owner-signed orders the enclave obeys besides policies: freeze, unfreeze, and approval of an escalation.

The format and its checks are defined once in :mod:`policies.orders` (the parent proxy uses the same module).
This module adds the enclave's own replay guard (freeze sequences must increase per wallet; the enclave keeps the
last one) and translates failures into protocol error codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from solders.pubkey import Pubkey

from enclave_app.errors import StateError
from enclave_app.protocol import ErrorCode
from policies.errors import PolicyDocumentError, PolicyEngineError
from policies.orders import check_approval, check_freeze_order


@dataclass(frozen=True, slots=True)
class FreezeOrder:
    freeze: bool
    sequence: int


def verify_freeze_order(
    data: bytes, *, freeze: bool, owner: Pubkey, wallet_id: str, now: datetime, last_sequence: int
) -> FreezeOrder:
    """Verify a freeze (``freeze=True``) or unfreeze order and return it, or raise ``StateError``."""
    purpose = "freeze" if freeze else "unfreeze"
    # 1-4. Signature, fields, wallet, expiry, sequence range: the shared definition in policies.orders.
    try:
        sequence = check_freeze_order(data, freeze=freeze, owner=owner, wallet_id=wallet_id, now=now.timestamp())
    except PolicyEngineError as exc:
        raise refused_order(purpose, exc) from exc
    # 5. The enclave's replay guard: a sequence above the last one it accepted for this wallet.
    if sequence <= last_sequence:
        raise StateError(ErrorCode.ORDER_STALE, f"{purpose} order sequence not above the last accepted one")
    return FreezeOrder(freeze=freeze, sequence=sequence)


def verify_approval(data: bytes, *, owner: Pubkey, wallet_id: str, message_hash: bytes, now: datetime) -> None:
    """Return if ``data`` is the owner's unexpired approval of exactly ``message_hash``, else raise ``StateError``."""
    try:
        check_approval(data, owner=owner, wallet_id=wallet_id, message_hash=message_hash, now=now.timestamp())
    except PolicyEngineError as exc:
        raise refused_order("approval", exc) from exc


def refused_order(purpose: str, exc: PolicyEngineError) -> StateError:
    """The protocol error for an owner order of ``purpose`` the shared checks refused."""
    if isinstance(exc, PolicyDocumentError):
        return StateError(ErrorCode.ORDER_INVALID, f"{purpose} order refused: {exc}")
    return StateError(ErrorCode.ORDER_INVALID, f"{purpose} order signature or envelope invalid")
