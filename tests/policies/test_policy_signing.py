"""Owner signatures over policy documents: Ed25519 with a domain prefix, verified before use."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.message import from_bytes_versioned
from solders.pubkey import Pubkey

from policies.errors import PolicyDocumentError, PolicySignatureError
from policies.signing import (
    DOMAIN_PREFIX,
    POLICY_PURPOSE,
    load_signed_policy,
    sign_document,
    signing_payload,
    verify_owner_signature,
)
from tests.policies.rfc8032_vectors import RFC8032_MESSAGE, RFC8032_PUBLIC, RFC8032_SIGNATURE
from tests.support.policies import example_policy, owner_public_key


@pytest.fixture
def owner() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_rfc8032_vector_verifies() -> None:
    verify_owner_signature(RFC8032_MESSAGE, RFC8032_SIGNATURE, Pubkey.from_bytes(RFC8032_PUBLIC))
    with pytest.raises(PolicySignatureError, match="invalid"):
        verify_owner_signature(b"\x73", RFC8032_SIGNATURE, Pubkey.from_bytes(RFC8032_PUBLIC))


def test_signed_policy_round_trip(owner: Ed25519PrivateKey) -> None:
    envelope = json.dumps(sign_document(POLICY_PURPOSE, example_policy(), owner))
    policy = load_signed_policy(envelope, owner=owner_public_key(owner), wallet_id="demo-wallet")
    assert policy.sequence == 1


def test_signature_covers_the_canonical_form_not_the_whitespace(owner: Ed25519PrivateKey) -> None:
    envelope = sign_document(POLICY_PURPOSE, example_policy(), owner)
    reformatted = json.dumps(envelope, indent=7, sort_keys=True)
    load_signed_policy(reformatted, owner=owner_public_key(owner), wallet_id="demo-wallet")


def test_any_change_to_the_document_breaks_the_signature(owner: Ed25519PrivateKey) -> None:
    envelope = sign_document(POLICY_PURPOSE, example_policy(), owner)
    envelope["document"]["rules"]["limits"][0]["per_transaction"]["approval"] = "99999999999999"
    with pytest.raises(PolicySignatureError, match="invalid"):
        load_signed_policy(json.dumps(envelope), owner=owner_public_key(owner), wallet_id="demo-wallet")


def test_another_owner_is_refused(owner: Ed25519PrivateKey) -> None:
    envelope = json.dumps(sign_document(POLICY_PURPOSE, example_policy(), owner))
    stranger = owner_public_key(Ed25519PrivateKey.generate())
    with pytest.raises(PolicySignatureError, match="invalid"):
        load_signed_policy(envelope, owner=stranger, wallet_id="demo-wallet")


def test_signature_for_another_purpose_is_refused(owner: Ed25519PrivateKey) -> None:
    envelope = json.dumps(sign_document("approval", example_policy(), owner))
    with pytest.raises(PolicySignatureError, match="invalid"):
        load_signed_policy(envelope, owner=owner_public_key(owner), wallet_id="demo-wallet")


def test_policy_for_another_wallet_is_refused(owner: Ed25519PrivateKey) -> None:
    envelope = json.dumps(sign_document(POLICY_PURPOSE, example_policy(), owner))
    with pytest.raises(PolicyDocumentError, match="not 'other-wallet'") as info:
        load_signed_policy(envelope, owner=owner_public_key(owner), wallet_id="other-wallet")
    assert info.value.field == "wallet_id"


@pytest.mark.parametrize(
    ("envelope", "field", "reason"),
    [
        ({"document": [], "signature": "1" * 88}, "envelope.document", "must be an object"),
        ({"document": {}, "signature": 5}, "envelope.signature", "base58 Ed25519 signature"),
        ({"document": {}, "signature": "0" * 88}, "envelope.signature", "base58 Ed25519 signature"),
        ({"document": {}, "signature": "1" * 88, "note": "x"}, "envelope.note", "unknown field"),
    ],
)
def test_malformed_envelope(envelope: dict[str, object], field: str, reason: str) -> None:
    with pytest.raises(PolicyDocumentError, match=reason) as info:
        load_signed_policy(json.dumps(envelope), owner=Pubkey.default(), wallet_id="demo-wallet")
    assert info.value.field == field


def test_signed_document_is_validated_after_verification(owner: Ed25519PrivateKey) -> None:
    doc = example_policy()
    doc["rules"]["rate"]["max_requests"] = 0
    envelope = json.dumps(sign_document(POLICY_PURPOSE, doc, owner))
    with pytest.raises(PolicyDocumentError, match="between 1"):
        load_signed_policy(envelope, owner=owner_public_key(owner), wallet_id="demo-wallet")


def test_signing_payload_can_never_be_a_transaction_message() -> None:
    payload = signing_payload(POLICY_PURPOSE, example_policy())
    assert payload.startswith(DOMAIN_PREFIX + b"policy\x00")
    with pytest.raises(ValueError, match="127"):  # 0xff: versioned-message prefix with the unknown version 127
        from_bytes_versioned(payload)


def test_signing_payload_is_the_purpose_then_the_documents_sha256() -> None:
    """Known answer: the signed bytes name the document by the SHA-256 of its canonical JSON (a fixed 73 bytes at
    most, whatever the document's size: within AWS KMS's 4096-byte RAW message limit)."""
    payload = signing_payload("freeze", {"b": [1, 2], "a": "x"})
    digest = bytes.fromhex("721ef82f2d6c0997bffb7a8ab3f40f8fb45b0b52ce2af3afa6b0f05efbdc317f")
    assert payload[: len(b"\xffwaiaas/freeze\x00")] == b"\xffwaiaas/freeze\x00"
    assert payload[len(b"\xffwaiaas/freeze\x00") :] == digest
    big = {"x": "y" * 100_000}
    assert len(signing_payload("a" * 32, big)) == 73


def test_signing_purpose_is_validated() -> None:
    with pytest.raises(ValueError, match="invalid signing purpose"):
        signing_payload("Policy\x00evil", {})


def test_short_signature_is_refused() -> None:
    with pytest.raises(PolicySignatureError, match="invalid"):
        verify_owner_signature(b"x", b"\x00" * 63, Pubkey.default())
