"""Decision receipts: what the enclave decided, signed by its per-boot session key.

The session key is an Ed25519 key created at boot; its public key is placed in every attestation document the
enclave hands out (``public_key`` field), so a receipt verified under that key was issued by an attested enclave.
A receipt is a CBOR map (fields in this order; the signature covers the exact bytes)::

    {"v": 1, "kind": "transaction" | "message", "wallet_id": str, "policy_sequence": int | null,
     "policy_hash": bstr(32) | null, "message_hash": bstr(32), "verdict": str, "approved": bool,
     "reasons_digest": bstr(32), "time_ms": int, "counter": int}

``message_hash`` is SHA-256 of the Solana message bytes that were (or would have been) signed, or of the raw
request bytes when they do not parse. ``reasons_digest`` is SHA-256 of the decision's reasons as compact JSON with
sorted keys. ``counter`` increases by one per receipt within a boot (gaps reveal withheld receipts).
The signature covers ``RECEIPT_DOMAIN + receipt``; the domain keeps it apart from every other signed kind.

Encoding is done here by hand, not by cbor2, because it runs on every signing request: the same bytes cbor2 emits
for this map (definite lengths, shortest integer heads, UTF-8 text), checked against ``cbor2.dumps`` by the tests.
The fields fixed by a wallet's installed policy (``v`` .. ``policy_hash``) are encoded once into a prefix
(:func:`receipt_prefix`); per request only the rest is appended (:func:`encode_receipt`).

Verifying (an auditor): 1. verify the attestation document and take its ``public_key``;
2. :func:`verify_receipt` with that key; 3. compare ``message_hash`` and ``wallet_id`` with the audit record.

Provisioning receipts (the answer to ``provision_wallet``) bind a new wallet's agent key to the owner key the
enclave was given, so the owner can check, before adding the agent key on chain, that the enclave holds the agent
key under *their* owner key (a parent that substituted its own owner key would control every policy)::

    {"v": 1, "purpose": "provision", "wallet_id": str, "agent_public_key": bstr(32),
     "owner_public_key": bstr(32), "time_ms": int}

signed over ``PROVISION_RECEIPT_DOMAIN + receipt`` (a domain of its own: never confused with a decision receipt).
It uses no ``counter``: decision receipts' counters stay gap-free. Verify with :func:`verify_provision_receipt`.

Agent-key receipts (agent-key rotation, DESIGN section 3) state what the enclave did with a wallet's agent key::

    {"v": 1, "purpose": "agent_key_candidate" | "agent_key_rotation" | "agent_key_switch", "wallet_id": str,
     "agent_public_key": bstr(32), "new_agent_public_key": bstr(32), "owner_public_key": bstr(32),
     "message_hash": bstr(32) | null, "time_ms": int}

``agent_key_candidate``: the enclave made and sealed ``new_agent_public_key`` to replace ``agent_public_key``
under this owner key (so the owner can check, before adding it on chain, that the enclave holds it);
``agent_key_rotation``: the old agent key co-signed the membership change whose message SHA-256 is
``message_hash`` (null in the other two); ``agent_key_switch``: the wallet now signs with the new key. Signed
over ``AGENT_KEY_RECEIPT_DOMAIN + receipt``, without a ``counter`` (owner-ordered, like provisioning). Verify with
:func:`verify_agent_key_receipt`.

Order receipts (an owner's freeze, unfreeze or policy the enclave applied) are defined in
:mod:`enclave_app.order_receipts`, signed over ``ORDER_RECEIPT_DOMAIN + receipt``. They take their ``counter`` from
the same per-boot sequence as decision receipts, so one sequence orders every decision and every owner order of a
boot, and a receipt of either kind missing from the audit log leaves a gap.

The provisioning, agent-key and order receipts are encoded by :func:`encode_map` (each value by :func:`cbor_value`,
as the decision receipt's are), and every kind is checked by :func:`verified_fields`: shared with
:mod:`enclave_app.order_receipts`, which defines no encoding of its own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_app.errors import CborDecodeError, ReceiptError
from enclave_app.safe_cbor import loads_untrusted
from policies.ed25519 import verify_ed25519

if TYPE_CHECKING:
    from enclave_app.order_receipts import OrderReceipt

RECEIPT_DOMAIN = b"\xffwaiaas/receipt\x00"
PROVISION_RECEIPT_DOMAIN = b"\xffwaiaas/provision-receipt\x00"
AGENT_KEY_RECEIPT_DOMAIN = b"\xffwaiaas/agent-key-receipt\x00"
ORDER_RECEIPT_DOMAIN = b"\xffwaiaas/order-receipt\x00"
PROVISION_PURPOSE = "provision"
AGENT_KEY_PURPOSES = frozenset({"agent_key_candidate", "agent_key_rotation", "agent_key_switch"})
RECEIPT_VERSION = 1
MAX_RECEIPT_BYTES = 4096
_U64 = 2**64
_FIELDS: dict[str, tuple[type, ...]] = {
    "v": (int,), "kind": (str,), "wallet_id": (str,), "policy_sequence": (int, type(None)),
    "policy_hash": (bytes, type(None)), "message_hash": (bytes,), "verdict": (str,), "approved": (bool,),
    "reasons_digest": (bytes,), "time_ms": (int,), "counter": (int,),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Receipt:
    kind: str
    wallet_id: str
    policy_sequence: int | None
    policy_hash: bytes | None
    message_hash: bytes
    verdict: str
    approved: bool
    reasons_digest: bytes
    time_ms: int
    counter: int

    def encode(self) -> bytes:
        prefix = receipt_prefix(self.kind, self.wallet_id, self.policy_sequence, self.policy_hash)
        return encode_receipt(
            prefix,
            message_hash=self.message_hash,
            verdict=self.verdict,
            approved=self.approved,
            reasons_digest=self.reasons_digest,
            time_ms=self.time_ms,
            counter=self.counter,
        )


def _head(major: int, value: int) -> bytes:
    """A CBOR head with the shortest argument (RFC 8949 section 3; what cbor2 emits)."""
    if value < 24:
        return bytes((major << 5 | value,))
    if value < 0x100:
        return bytes((major << 5 | 24, value))
    if value < 0x10000:
        return bytes((major << 5 | 25,)) + value.to_bytes(2, "big")
    if value < 0x1_0000_0000:
        return bytes((major << 5 | 26,)) + value.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + value.to_bytes(8, "big")


def cbor_value(value: str | bytes | int | bool | None) -> bytes:
    """One receipt value: exact types only (a bool is not an int here); integers within the u64/negative-u64
    range (beyond it cbor2 would emit a bignum tag, which no receipt field needs)."""
    if type(value) is str:
        data = value.encode()
        return _head(3, len(data)) + data
    if type(value) is bytes:
        return _head(2, len(value)) + value
    if type(value) is bool:
        return b"\xf5" if value else b"\xf4"
    if value is None:
        return b"\xf6"
    if type(value) is int:
        if 0 <= value < _U64:
            return _head(0, value)
        if -_U64 <= value < 0:
            return _head(1, -1 - value)
    raise ReceiptError("receipt value out of range")


_MAP_HEAD = _head(5, 11)
_KEYS = {name: cbor_value(name) for name in _FIELDS}


def receipt_prefix(kind: str, wallet_id: str, policy_sequence: int | None, policy_hash: bytes | None) -> bytes:
    """The encoded map head and its first five entries (fixed per wallet, kind and installed policy)."""
    return b"".join(
        (
            _MAP_HEAD, _KEYS["v"], cbor_value(RECEIPT_VERSION), _KEYS["kind"], cbor_value(kind),
            _KEYS["wallet_id"], cbor_value(wallet_id), _KEYS["policy_sequence"], cbor_value(policy_sequence),
            _KEYS["policy_hash"], cbor_value(policy_hash),
        )
    )  # fmt: skip


def encode_receipt(
    prefix: bytes,
    *,
    message_hash: bytes,
    verdict: str,
    approved: bool,
    reasons_digest: bytes,
    time_ms: int,
    counter: int,
) -> bytes:
    """The whole receipt: ``prefix`` (from :func:`receipt_prefix`) and the per-decision fields."""
    return b"".join(
        (
            prefix, _KEYS["message_hash"], cbor_value(message_hash), _KEYS["verdict"], cbor_value(verdict),
            _KEYS["approved"], cbor_value(approved), _KEYS["reasons_digest"], cbor_value(reasons_digest),
            _KEYS["time_ms"], cbor_value(time_ms), _KEYS["counter"], cbor_value(counter),
        )
    )  # fmt: skip


def _digest_json(reasons: list[dict[str, Any]]) -> bytes:
    return hashlib.sha256(json.dumps(reasons, sort_keys=True, separators=(",", ":")).encode()).digest()


EMPTY_REASONS_DIGEST = _digest_json([])
"""Digest of no reasons (most ALLOW decisions), computed once."""


def reasons_digest(reasons: list[dict[str, Any]]) -> bytes:
    return _digest_json(reasons) if reasons else EMPTY_REASONS_DIGEST


class SessionKey:
    """The per-boot receipt-signing key. ``public_key`` goes into attestation documents; the private half never
    leaves this object (no accessor, not in repr)."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("session key seed must be 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._key.public_key().public_bytes_raw()
        self._counter = 0

    def __repr__(self) -> str:
        return f"SessionKey(public_key={self.public_key.hex()})"

    def next_counter(self) -> int:
        self._counter += 1
        return self._counter

    def sign(self, receipt: Receipt) -> tuple[bytes, bytes]:
        """The encoded receipt and its signature."""
        encoded = receipt.encode()
        return encoded, self.sign_encoded(encoded)

    def sign_encoded(self, encoded: bytes) -> bytes:
        """The signature over ``RECEIPT_DOMAIN + encoded``; ``encoded`` must come from :func:`encode_receipt`."""
        return self._key.sign(RECEIPT_DOMAIN + encoded)

    def sign_provision(self, receipt: ProvisionReceipt) -> tuple[bytes, bytes]:
        """The encoded provisioning receipt and the signature over ``PROVISION_RECEIPT_DOMAIN + encoded``."""
        encoded = receipt.encode()
        return encoded, self._key.sign(PROVISION_RECEIPT_DOMAIN + encoded)

    def sign_agent_key(self, receipt: AgentKeyReceipt) -> tuple[bytes, bytes]:
        """The encoded agent-key receipt and the signature over ``AGENT_KEY_RECEIPT_DOMAIN + encoded``."""
        encoded = receipt.encode()
        return encoded, self._key.sign(AGENT_KEY_RECEIPT_DOMAIN + encoded)

    def sign_order(self, receipt: OrderReceipt) -> tuple[bytes, bytes]:
        """The encoded order receipt and the signature over ``ORDER_RECEIPT_DOMAIN + encoded`` (its ``counter`` from
        :meth:`next_counter`, taken by the caller)."""
        encoded = receipt.encode()
        return encoded, self._key.sign(ORDER_RECEIPT_DOMAIN + encoded)


def verified_fields(
    receipt: bytes, signature: bytes, session_public_key: bytes, *, domain: bytes, fields: dict[str, Any], what: str
) -> dict[str, Any]:
    """The decoded fields of a receipt of kind ``what`` after its signature verified, or :class:`ReceiptError`.

    ``fields`` maps each field to its type or a tuple of allowed types."""
    # 1. Sizes, then the signature before looking at the content.
    if not 0 < len(receipt) <= MAX_RECEIPT_BYTES or len(signature) != 64 or len(session_public_key) != 32:
        raise ReceiptError("receipt, signature or key size out of bounds")
    if not verify_ed25519(session_public_key, signature, domain + receipt):  # strict: see `policies.ed25519`
        raise ReceiptError(f"{what} signature invalid")
    # 2. Content: exactly the documented fields with their types, and our version.
    try:
        decoded = loads_untrusted(receipt, max_depth=1)
    except CborDecodeError as exc:
        raise ReceiptError(f"{what} malformed") from exc
    if not isinstance(decoded, dict) or set(decoded) != set(fields):
        raise ReceiptError(f"{what} malformed")
    for name, kinds in fields.items():
        if type(decoded[name]) not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            raise ReceiptError(f"{what} malformed")
    if decoded.pop("v") != RECEIPT_VERSION:
        raise ReceiptError("receipt version unsupported")
    return decoded


def verify_receipt(receipt: bytes, signature: bytes, session_public_key: bytes) -> Receipt:
    """Check the session key's signature on ``receipt`` and decode it, or raise :class:`ReceiptError`.

    The caller must have taken ``session_public_key`` from a verified attestation document.
    """
    fields = verified_fields(
        receipt, signature, session_public_key, domain=RECEIPT_DOMAIN, fields=_FIELDS, what="receipt"
    )
    return Receipt(**fields)


def encode_map(keys: dict[str, bytes], values: tuple[str | bytes | int | None, ...]) -> bytes:
    """A CBOR map of ``keys`` (pre-encoded, in order) to ``values``: the bytes ``cbor2.dumps`` emits for it."""
    parts = [_head(5, len(keys))]
    for key, value in zip(keys.values(), values, strict=True):
        parts += (key, cbor_value(value))
    return b"".join(parts)


_PROVISION_FIELDS: dict[str, type] = {
    "v": int, "purpose": str, "wallet_id": str, "agent_public_key": bytes, "owner_public_key": bytes, "time_ms": int,
}  # fmt: skip
_PROVISION_KEYS = {name: cbor_value(name) for name in _PROVISION_FIELDS}


@dataclass(frozen=True, slots=True)
class ProvisionReceipt:
    """What the enclave states when it provisions a wallet: this agent key was made for this owner key."""

    wallet_id: str
    agent_public_key: bytes
    owner_public_key: bytes
    time_ms: int
    purpose: str = PROVISION_PURPOSE

    def encode(self) -> bytes:
        """Deterministic CBOR (the bytes ``cbor2.dumps`` emits for the map, fields in the documented order)."""
        if len(self.agent_public_key) != 32 or len(self.owner_public_key) != 32:
            raise ReceiptError("provisioning receipt keys must be 32 bytes")
        values: tuple[str | bytes | int, ...] = (
            RECEIPT_VERSION, self.purpose, self.wallet_id, self.agent_public_key, self.owner_public_key, self.time_ms,
        )  # fmt: skip
        return encode_map(_PROVISION_KEYS, values)


def verify_provision_receipt(receipt: bytes, signature: bytes, session_public_key: bytes) -> ProvisionReceipt:
    """Check the session key's signature on a provisioning receipt and decode it, or raise :class:`ReceiptError`.

    The caller must have taken ``session_public_key`` from a verified attestation document, and must still compare
    ``wallet_id``, ``agent_public_key`` and ``owner_public_key`` with what it expects.
    """
    fields = verified_fields(
        receipt,
        signature,
        session_public_key,
        domain=PROVISION_RECEIPT_DOMAIN,
        fields=_PROVISION_FIELDS,
        what="provisioning receipt",
    )
    if fields["purpose"] != PROVISION_PURPOSE:
        raise ReceiptError("receipt is not a provisioning receipt")
    if len(fields["agent_public_key"]) != 32 or len(fields["owner_public_key"]) != 32:
        raise ReceiptError("provisioning receipt malformed")
    return ProvisionReceipt(**fields)


_AGENT_KEY_FIELDS: dict[str, type | tuple[type, ...]] = {
    "v": int, "purpose": str, "wallet_id": str, "agent_public_key": bytes, "new_agent_public_key": bytes,
    "owner_public_key": bytes, "message_hash": (bytes, type(None)), "time_ms": int,
}  # fmt: skip
_AGENT_KEY_KEYS = {name: cbor_value(name) for name in _AGENT_KEY_FIELDS}


@dataclass(frozen=True, slots=True)
class AgentKeyReceipt:
    """What the enclave states about a wallet's agent key during rotation (see the module docstring)."""

    purpose: str
    wallet_id: str
    agent_public_key: bytes
    new_agent_public_key: bytes
    owner_public_key: bytes
    message_hash: bytes | None
    time_ms: int

    def encode(self) -> bytes:
        """Deterministic CBOR (the bytes ``cbor2.dumps`` emits for the map, fields in the documented order)."""
        _check_agent_key_fields(self.purpose, self.agent_public_key, self.new_agent_public_key,
                                self.owner_public_key, self.message_hash)  # fmt: skip
        values: tuple[str | bytes | int | None, ...] = (
            RECEIPT_VERSION, self.purpose, self.wallet_id, self.agent_public_key, self.new_agent_public_key,
            self.owner_public_key, self.message_hash, self.time_ms,
        )  # fmt: skip
        return encode_map(_AGENT_KEY_KEYS, values)


def _check_agent_key_fields(
    purpose: str, agent: bytes, new_agent: bytes, owner: bytes, message_hash: bytes | None
) -> None:
    if purpose not in AGENT_KEY_PURPOSES:
        raise ReceiptError("not an agent-key receipt purpose")
    if len(agent) != 32 or len(new_agent) != 32 or len(owner) != 32:
        raise ReceiptError("agent-key receipt keys must be 32 bytes")
    expects_hash = purpose == "agent_key_rotation"
    if (message_hash is not None) != expects_hash or (message_hash is not None and len(message_hash) != 32):
        raise ReceiptError("an agent-key receipt has a 32-byte message hash exactly when it is a rotation's")


def verify_agent_key_receipt(receipt: bytes, signature: bytes, session_public_key: bytes) -> AgentKeyReceipt:
    """Check the session key's signature on an agent-key receipt and decode it, or raise :class:`ReceiptError`.

    The caller must have taken ``session_public_key`` from a verified attestation document, and must still compare
    the purpose, wallet and keys (and the message hash of a rotation) with what it expects.
    """
    fields = verified_fields(
        receipt, signature, session_public_key, domain=AGENT_KEY_RECEIPT_DOMAIN, fields=_AGENT_KEY_FIELDS,
        what="agent-key receipt",
    )  # fmt: skip
    _check_agent_key_fields(fields["purpose"], fields["agent_public_key"], fields["new_agent_public_key"],
                            fields["owner_public_key"], fields["message_hash"])  # fmt: skip
    return AgentKeyReceipt(**fields)
