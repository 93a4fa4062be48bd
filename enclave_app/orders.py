"""Owner-signed orders the enclave obeys: policies, freeze, unfreeze, and approval of an escalation.

The format and its checks are defined once in :mod:`policies.orders` and :mod:`policies.signing` (the parent proxy
uses the same modules). This module adds the enclave's own replay guard (freeze sequences must increase per wallet;
the enclave keeps the last one), applies policies and freeze orders with an order receipt for each
(:mod:`enclave_app.order_receipts`), and translates failures into protocol error codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from solders.pubkey import Pubkey

from enclave_app.errors import StateError
from enclave_app.order_receipts import FREEZE, POLICY, UNFREEZE, OrderReceipt
from enclave_app.protocol import (
    ErrorCode,
    FreezeRequest,
    InstallPolicyRequest,
    PolicyInstalledResponse,
    UnfreezeRequest,
    WalletFrozenResponse,
)
from enclave_app.state import Enclave, Wallet
from policies.errors import PolicyDocumentError, PolicyEngineError
from policies.orders import check_approval, checked_freeze_order
from policies.signing import load_signed_policy


@dataclass(frozen=True, slots=True)
class FreezeOrder:
    freeze: bool
    sequence: int
    document_hash: bytes
    """SHA-256 of the order's canonical document (`policies.signing.document_sha256`): what its receipt names."""


def verify_freeze_order(
    data: bytes, *, freeze: bool, owner: Pubkey, wallet_id: str, now: datetime, last_sequence: int
) -> FreezeOrder:
    """Verify a freeze (``freeze=True``) or unfreeze order and return it, or raise ``StateError``."""
    purpose = FREEZE if freeze else UNFREEZE
    # 1-4. Signature, fields, wallet, expiry, sequence range: the shared definition in policies.orders.
    try:
        order = checked_freeze_order(data, freeze=freeze, owner=owner, wallet_id=wallet_id, now=now.timestamp())
    except PolicyEngineError as exc:
        raise refused_order(purpose, exc) from exc
    # 5. The enclave's replay guard: a sequence above the last one it accepted for this wallet.
    if order.sequence <= last_sequence:
        raise StateError(ErrorCode.ORDER_STALE, f"{purpose} order sequence not above the last accepted one")
    return FreezeOrder(freeze=freeze, sequence=order.sequence, document_hash=order.document_sha256)


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


def _receipt(enclave: Enclave, wallet: Wallet, purpose: str, sequence: int, digest: bytes) -> tuple[bytes, bytes]:
    """The order receipt of what was just applied to ``wallet``: its state now, this boot's next counter."""
    time_ms = int(enclave.clock().timestamp() * 1000)
    stated = OrderReceipt(purpose, wallet.wallet_id, sequence, digest, wallet.frozen, wallet.policy_hash,
                          time_ms, enclave.session.next_counter())  # fmt: skip
    return enclave.session.sign_order(stated)


def apply_policy(enclave: Enclave, request: InstallPolicyRequest) -> PolicyInstalledResponse:
    """Install an owner-signed policy (sequence above the installed one, unexpired) and answer with its receipt."""
    wallet = enclave.wallet(request.wallet_id)
    try:
        policy = load_signed_policy(request.signed_policy, owner=wallet.owner, wallet_id=wallet.wallet_id)
    except PolicyEngineError as exc:
        raise StateError(ErrorCode.POLICY_INVALID, "policy signature or document invalid") from exc
    digest = enclave.install_policy(wallet, policy)
    receipt, signature = _receipt(enclave, wallet, POLICY, policy.sequence, digest)
    return PolicyInstalledResponse(
        wallet_id=wallet.wallet_id, sequence=policy.sequence, policy_hash=digest, receipt=receipt,
        receipt_signature=signature,
    )  # fmt: skip


def apply_freeze_order(enclave: Enclave, request: FreezeRequest | UnfreezeRequest) -> WalletFrozenResponse:
    """Apply an owner's freeze or unfreeze order (sequence above the last accepted) and answer with its receipt."""
    wallet = enclave.wallet(request.wallet_id)
    freeze = isinstance(request, FreezeRequest)
    order = verify_freeze_order(
        request.order, freeze=freeze, owner=wallet.owner, wallet_id=wallet.wallet_id, now=enclave.clock(),
        last_sequence=wallet.order_sequence,
    )  # fmt: skip
    wallet.order_sequence = order.sequence
    wallet.frozen = order.freeze
    receipt, signature = _receipt(enclave, wallet, FREEZE if freeze else UNFREEZE, order.sequence, order.document_hash)
    return WalletFrozenResponse(
        wallet_id=wallet.wallet_id, frozen=wallet.frozen, order_sequence=order.sequence, receipt=receipt,
        receipt_signature=signature,
    )  # fmt: skip
