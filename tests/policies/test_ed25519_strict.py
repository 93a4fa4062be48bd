"""The one Ed25519 verification of the product (`policies.ed25519`): strict, as Solana verifies.

OpenSSL's verification (used before) accepts a signature under a small-order public key: with the identity point
as the key, ``R`` = identity and ``S`` = 0 verify for every message. A wallet or session created with such a key
would have had every owner order or receipt forgeable. The strict check refuses it, and everything RFC 8032
refuses; the checks built on it (policy envelopes, owner orders, receipts) refuse such forgeries too.
"""

from __future__ import annotations

import json

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st
from solders.pubkey import Pubkey
from solders.signature import Signature

from enclave_app.errors import ReceiptError
from enclave_app.receipts import RECEIPT_DOMAIN, Receipt, reasons_digest, verify_receipt
from policies.ed25519 import verify_ed25519
from policies.errors import PolicySignatureError
from policies.signing import POLICY_PURPOSE, load_signed_policy, signing_payload, verify_owner_signature
from tests.policies.rfc8032_vectors import RFC8032_MESSAGE, RFC8032_PUBLIC, RFC8032_SIGNATURE
from tests.support.policies import example_policy

IDENTITY = bytes([1]) + bytes(31)
"""The identity point's encoding (y = 1): a public key of small order (order 1)."""
FORGERY = IDENTITY + bytes(32)
"""R = identity, S = 0: [S]B = R + [k]A holds for every message when A is the identity."""
GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493


def test_openssl_accepts_the_small_order_forgery_the_strict_check_refuses() -> None:
    """Why the switch: the forgery passes OpenSSL for any message (if this ever fails, OpenSSL became strict)."""
    for message in (b"", b"any message", signing_payload(POLICY_PURPOSE, {"x": 1})):
        Ed25519PublicKey.from_public_bytes(IDENTITY).verify(FORGERY, message)  # no InvalidSignature
        assert not verify_ed25519(IDENTITY, FORGERY, message)


def test_rfc8032_vector_and_real_signatures_verify() -> None:
    assert verify_ed25519(RFC8032_PUBLIC, RFC8032_SIGNATURE, RFC8032_MESSAGE)
    assert not verify_ed25519(RFC8032_PUBLIC, RFC8032_SIGNATURE, b"\x73")
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    signature = key.sign(b"message")
    assert verify_ed25519(public, signature, b"message")
    assert not verify_ed25519(public, signature, b"messagf")
    assert not verify_ed25519(public, signature[:63] + bytes([signature[63] ^ 1]), b"message")


def test_a_non_canonical_s_is_refused_as_rfc8032_requires() -> None:
    key = Ed25519PrivateKey.generate()
    public, signature = key.public_key().public_bytes_raw(), key.sign(b"m")
    s = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s + GROUP_ORDER).to_bytes(32, "little")  # the same point equation, S >= L
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(public).verify(malleated, b"m")
    assert not verify_ed25519(public, malleated, b"m")


@pytest.mark.parametrize(
    ("public", "signature"),
    [
        (bytes(31), FORGERY),
        (IDENTITY + b"\x00", FORGERY),
        (IDENTITY, FORGERY[:63]),
        (b"\xff" * 32, FORGERY),
        (b"", b""),
    ],
    ids=["short key", "long key", "short signature", "key not on the curve", "empty"],
)
def test_bad_sizes_and_points_are_invalid_without_raising(public: bytes, signature: bytes) -> None:
    assert verify_ed25519(public, signature, b"m") is False


@given(st.binary(max_size=40), st.binary(max_size=70), st.binary(max_size=64))
def test_garbage_never_raises_and_never_verifies(public: bytes, signature: bytes, message: bytes) -> None:
    assert verify_ed25519(public, signature, message) is False


# -- the checks built on it ------------------------------------------------------------------------------------------


def test_a_policy_forged_under_a_small_order_owner_key_is_refused() -> None:
    envelope = json.dumps({"document": example_policy(), "signature": str(Signature.from_bytes(FORGERY))})
    with pytest.raises(PolicySignatureError, match="owner signature is invalid"):
        verify_owner_signature(signing_payload(POLICY_PURPOSE, example_policy()), FORGERY, Pubkey.from_bytes(IDENTITY))
    with pytest.raises(PolicySignatureError, match="owner signature is invalid"):
        load_signed_policy(envelope, owner=Pubkey.from_bytes(IDENTITY), wallet_id=example_policy()["wallet_id"])


def test_a_receipt_forged_under_a_small_order_session_key_is_refused() -> None:
    receipt = Receipt(
        kind="transaction", wallet_id="w1", policy_sequence=1, policy_hash=bytes(32), message_hash=bytes(32),
        verdict="allow", approved=False, reasons_digest=reasons_digest([]), time_ms=1, counter=1,
    ).encode()  # fmt: skip
    Ed25519PublicKey.from_public_bytes(IDENTITY).verify(FORGERY, RECEIPT_DOMAIN + receipt)  # OpenSSL: "valid"
    with pytest.raises(ReceiptError, match="signature invalid"):
        verify_receipt(receipt, FORGERY, IDENTITY)
