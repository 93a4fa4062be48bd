"""Owner orders (freeze, unfreeze, approval): the one definition both services check."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from policies.errors import PolicyDocumentError, PolicySignatureError
from policies.orders import (
    APPROVAL_PURPOSE,
    FREEZE_PURPOSE,
    MAX_ORDER_LIFETIME_SECONDS,
    UNFREEZE_PURPOSE,
    approval_document,
    check_approval,
    check_freeze_order,
    checked_freeze_order,
    freeze_document,
)
from policies.signing import document_sha256, sign_document
from tests.support.policies import owner_public_key

NOW = 1_800_000_000
OWNER = Ed25519PrivateKey.generate()
MESSAGE_HASH = hashlib.sha256(b"the transaction message").digest()


def _signed(purpose: str, document: dict[str, Any], key: Ed25519PrivateKey = OWNER) -> bytes:
    return json.dumps(sign_document(purpose, document, key)).encode()


def _freeze(data: bytes, *, freeze: bool = True, wallet_id: str = "w1") -> int:
    return check_freeze_order(data, freeze=freeze, owner=owner_public_key(OWNER), wallet_id=wallet_id, now=NOW)


def _approve(data: bytes, message_hash: bytes = MESSAGE_HASH) -> None:
    check_approval(data, owner=owner_public_key(OWNER), wallet_id="w1", message_hash=message_hash, now=NOW)


def test_freeze_and_unfreeze_orders_return_their_sequence() -> None:
    assert _freeze(_signed(FREEZE_PURPOSE, freeze_document("w1", 7, NOW + 60))) == 7
    assert _freeze(_signed(UNFREEZE_PURPOSE, freeze_document("w1", 8, NOW + 60)), freeze=False) == 8


def test_a_freeze_orders_document_hash_is_the_same_whatever_the_envelopes_serialization() -> None:
    """What an order receipt names (`enclave_app.order_receipts`): the canonical document's SHA-256, so the owner
    computes it from their own file however the parent re-serialized the envelope; another order differs."""
    envelope = sign_document(FREEZE_PURPOSE, freeze_document("w1", 3, NOW + 60), OWNER)
    compact = json.dumps(envelope, separators=(",", ":")).encode()
    pretty = json.dumps(envelope, indent=4, sort_keys=False).encode()
    owner = owner_public_key(OWNER)
    checked = [
        checked_freeze_order(data, freeze=True, owner=owner, wallet_id="w1", now=NOW) for data in (compact, pretty)
    ]
    assert checked[0] == checked[1] and checked[0].sequence == 3
    document = envelope["document"]
    expected = hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).digest()
    assert checked[0].document_sha256 == document_sha256(document) == expected
    assert document_sha256(freeze_document("w1", 3, NOW + 61)) != expected


def test_a_freeze_order_is_not_an_unfreeze_order() -> None:
    with pytest.raises(PolicySignatureError, match="invalid"):
        _freeze(_signed(FREEZE_PURPOSE, freeze_document("w1", 7, NOW + 60)), freeze=False)


def test_another_owner_is_refused() -> None:
    with pytest.raises(PolicySignatureError, match="invalid"):
        _freeze(_signed(FREEZE_PURPOSE, freeze_document("w1", 7, NOW + 60), Ed25519PrivateKey.generate()))


@pytest.mark.parametrize(
    ("document", "field", "reason"),
    [
        ({"wallet_id": "w1", "sequence": 1}, "freeze", "exactly the fields"),
        ({**freeze_document("w1", 1, NOW + 60), "note": "x"}, "freeze", "exactly the fields"),
        (freeze_document("w2", 1, NOW + 60), "wallet_id", "another wallet"),
        (freeze_document("w1", 1, NOW), "expires_at", "expired"),
        (freeze_document("w1", 1, NOW + MAX_ORDER_LIFETIME_SECONDS + 1), "expires_at", "lifetime over"),
        ({"wallet_id": "w1", "sequence": 1, "expires_at": str(NOW + 60)}, "expires_at", "integer"),
        (freeze_document("w1", 0, NOW + 60), "sequence", "from 1 to"),
        ({"wallet_id": "w1", "sequence": True, "expires_at": NOW + 60}, "sequence", "from 1 to"),
    ],
)
def test_malformed_freeze_orders(document: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(PolicyDocumentError, match=reason) as info:
        _freeze(_signed(FREEZE_PURPOSE, document))
    assert info.value.field == field


def test_approval_binds_one_message() -> None:
    approval = _signed(APPROVAL_PURPOSE, approval_document("w1", MESSAGE_HASH, NOW + 300))
    _approve(approval)
    with pytest.raises(PolicyDocumentError, match="another message"):
        _approve(approval, hashlib.sha256(b"another message").digest())


@pytest.mark.parametrize(
    ("message_hash", "reason"),
    [("ab" * 31, "64 hex"), ("zz" * 32, "64 hex"), (5, "64 hex")],
)
def test_malformed_approvals(message_hash: object, reason: str) -> None:
    document = {"wallet_id": "w1", "message_hash": message_hash, "expires_at": NOW + 60}
    with pytest.raises(PolicyDocumentError, match=reason):
        _approve(_signed(APPROVAL_PURPOSE, document))


def test_an_approval_is_not_a_freeze_order() -> None:
    with pytest.raises(PolicySignatureError, match="invalid"):
        _approve(_signed(FREEZE_PURPOSE, approval_document("w1", MESSAGE_HASH, NOW + 60)))
