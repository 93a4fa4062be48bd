"""What `enclave_app.receipts.verified_fields` refuses before it decodes a receipt, and what the session key never
shows (docs/enclave.md, Receipts): a receipt larger than `MAX_RECEIPT_BYTES` is refused even when the session key
signed it; signed bytes that are not CBOR are a malformed receipt (`ReceiptError`, nothing else); a session key's
repr shows its public key, never its seed."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_app.errors import ReceiptError
from enclave_app.receipts import (
    MAX_RECEIPT_BYTES,
    PROVISION_RECEIPT_DOMAIN,
    ProvisionReceipt,
    SessionKey,
    verify_provision_receipt,
)

SEED = bytes(range(100, 132))
SESSION = SessionKey(SEED)


def _signed(wallet_id: str) -> tuple[bytes, bytes]:
    return SESSION.sign_provision(ProvisionReceipt(wallet_id, bytes(32), bytes(range(32)), 1))


def test_a_receipt_within_the_bound_verifies() -> None:
    """The control: the largest wallet name that keeps the receipt within `MAX_RECEIPT_BYTES`."""
    receipt, signature = _signed("w")
    receipt, signature = _signed("w" * (MAX_RECEIPT_BYTES - len(receipt) + 1 - 2))  # a 2-byte text head from 24 on
    assert len(receipt) == MAX_RECEIPT_BYTES
    assert verify_provision_receipt(receipt, signature, SESSION.public_key).wallet_id.startswith("w")


def test_a_signed_receipt_beyond_the_bound_is_refused() -> None:
    receipt, signature = _signed("w" * MAX_RECEIPT_BYTES)
    with pytest.raises(ReceiptError, match="size out of bounds"):
        verify_provision_receipt(receipt, signature, SESSION.public_key)


def test_signed_bytes_that_are_not_cbor_are_a_malformed_receipt() -> None:
    garbage = b"\xff\x00not cbor"
    signature = Ed25519PrivateKey.from_private_bytes(SEED).sign(PROVISION_RECEIPT_DOMAIN + garbage)  # the session key's
    with pytest.raises(ReceiptError, match="provisioning receipt malformed"):
        verify_provision_receipt(garbage, signature, SESSION.public_key)


def test_a_session_keys_repr_shows_its_public_key_and_never_its_seed() -> None:
    shown = repr(SESSION)
    assert shown == f"SessionKey(public_key={SESSION.public_key.hex()})"
    assert SEED.hex() not in shown and str(SEED) not in shown
