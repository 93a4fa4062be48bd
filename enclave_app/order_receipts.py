"""Order receipts: what the enclave states when it applies an owner's order, signed by its per-boot session key.

The owner's freeze, unfreeze and policy install reach the enclave through the parent, which is not trusted
(DESIGN section 1): without a receipt the owner has only the parent's word that an order arrived. So the enclave
answers each order it applies (``freeze`` / ``unfreeze`` -> ``wallet_frozen``, ``install_policy`` ->
``policy_installed``) with a receipt, a CBOR map (fields in this order; the signature covers the exact bytes)::

    {"v": 1, "purpose": "freeze" | "unfreeze" | "policy", "wallet_id": str, "sequence": int,
     "document_hash": bstr(32), "frozen": bool, "policy_hash": bstr(32) | null, "time_ms": int, "counter": int}

``sequence`` is the order's (freeze, unfreeze) or the policy's; ``document_hash`` is the SHA-256 of the canonical
document the owner signed (`policies.signing.document_sha256`: independent of how the envelope was serialized on
the way, so the owner computes it from their own file); ``frozen`` and ``policy_hash`` are the wallet's state once
the order is applied (the installed policy's hash, ``Policy.canonical``'s SHA-256 as in decision receipts; null while
no policy is installed). Consistency, checked on encoding and decoding: a freeze leaves the wallet frozen, an
unfreeze leaves it unfrozen, and after a policy install ``policy_hash`` is ``document_hash``. ``counter`` comes from
the session's one per-boot sequence (`enclave_app.receipts.SessionKey.next_counter`), shared with decision
receipts. Signed over ``ORDER_RECEIPT_DOMAIN + receipt``, a domain of its own.

Verifying (the owner, ``waiaas owner verify-order``; the proxy when the answer arrives; the auditor): 1. take the
session key from a verified attestation document; 2. :func:`verify_order_receipt`; 3. compare purpose, wallet,
sequence and document hash with the order (and the frozen flag or policy hash it must have led to).
"""

from __future__ import annotations

from dataclasses import dataclass

from enclave_app.errors import ReceiptError
from enclave_app.receipts import ORDER_RECEIPT_DOMAIN, RECEIPT_VERSION, cbor_value, encode_map, verified_fields

FREEZE = "freeze"
UNFREEZE = "unfreeze"
POLICY = "policy"
ORDER_PURPOSES = frozenset({FREEZE, UNFREEZE, POLICY})
HASH_BYTES = 32
_U64 = 2**64

_ORDER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "v": int, "purpose": str, "wallet_id": str, "sequence": int, "document_hash": bytes, "frozen": bool,
    "policy_hash": (bytes, type(None)), "time_ms": int, "counter": int,
}  # fmt: skip
_ORDER_KEYS = {name: cbor_value(name) for name in _ORDER_FIELDS}


@dataclass(frozen=True, slots=True)
class OrderReceipt:
    """What the enclave states when it applies an owner's order (see the module docstring)."""

    purpose: str
    wallet_id: str
    sequence: int
    document_hash: bytes
    frozen: bool
    policy_hash: bytes | None
    time_ms: int
    counter: int

    def encode(self) -> bytes:
        """Deterministic CBOR (the bytes ``cbor2.dumps`` emits for the map, fields in the documented order)."""
        _check_order_fields(self)
        values: tuple[str | bytes | int | None, ...] = (
            RECEIPT_VERSION, self.purpose, self.wallet_id, self.sequence, self.document_hash, self.frozen,
            self.policy_hash, self.time_ms, self.counter,
        )  # fmt: skip
        return encode_map(_ORDER_KEYS, values)


def _check_order_fields(receipt: OrderReceipt) -> None:
    """`ReceiptError` unless the receipt is one the enclave can state (sizes, ranges, and the consistency rules)."""
    if receipt.purpose not in ORDER_PURPOSES:
        raise ReceiptError("not an order receipt purpose")
    if len(receipt.document_hash) != HASH_BYTES or (
        receipt.policy_hash is not None and len(receipt.policy_hash) != HASH_BYTES
    ):
        raise ReceiptError("order receipt hashes must be 32 bytes")
    if not (0 <= receipt.sequence < _U64 and 0 <= receipt.time_ms < _U64 and 1 <= receipt.counter < _U64):
        raise ReceiptError("order receipt number out of range")
    if receipt.purpose == POLICY:
        if receipt.policy_hash != receipt.document_hash:
            raise ReceiptError("a policy receipt names the policy it installed as the wallet's policy")
    elif receipt.frozen != (receipt.purpose == FREEZE):
        raise ReceiptError("a freeze leaves the wallet frozen and an unfreeze unfrozen")


def verify_order_receipt(receipt: bytes, signature: bytes, session_public_key: bytes) -> OrderReceipt:
    """Check the session key's signature on an order receipt and decode it, or raise :class:`ReceiptError`.

    The caller must have taken ``session_public_key`` from a verified attestation document, and must still compare
    purpose, wallet, sequence and document hash with the order it sent or signed.
    """
    fields = verified_fields(
        receipt, signature, session_public_key, domain=ORDER_RECEIPT_DOMAIN, fields=_ORDER_FIELDS,
        what="order receipt",
    )  # fmt: skip
    stated = OrderReceipt(**fields)
    _check_order_fields(stated)
    return stated
