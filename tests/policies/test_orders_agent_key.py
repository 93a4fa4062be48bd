"""Owner orders of an agent-key rotation: the rotation order (binds one message) and the switch order."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from policies.errors import PolicyDocumentError, PolicySignatureError
from policies.orders import (
    AGENT_KEY_ROTATION_PURPOSE,
    AGENT_KEY_SWITCH_PURPOSE,
    APPROVAL_PURPOSE,
    FREEZE_PURPOSE,
    MAX_ORDER_LIFETIME_SECONDS,
    UNFREEZE_PURPOSE,
    AgentKeyOrder,
    approval_document,
    check_approval,
    check_rotation_order,
    check_switch_order,
    rotation_document,
    switch_document,
)
from policies.signing import sign_document
from tests.support.policies import owner_public_key

NOW = 1_800_000_000
OWNER_KEY = Ed25519PrivateKey.generate()
OWNER = owner_public_key(OWNER_KEY)
AGENT, NEW_AGENT = Pubkey.new_unique(), Pubkey.new_unique()
MESSAGE_HASH = hashlib.sha256(b"the rotation message").digest()
KEY_FIELDS = ("agent_public_key", "new_agent_public_key")


def _signed(purpose: str, document: dict[str, Any], key: Ed25519PrivateKey = OWNER_KEY) -> bytes:
    return json.dumps(sign_document(purpose, document, key)).encode()


def _rotation(document: dict[str, Any] | None = None, purpose: str = AGENT_KEY_ROTATION_PURPOSE) -> bytes:
    default = rotation_document("w1", AGENT, NEW_AGENT, MESSAGE_HASH, NOW + 300)
    return _signed(purpose, default if document is None else document)


def _switch(document: dict[str, Any] | None = None, purpose: str = AGENT_KEY_SWITCH_PURPOSE) -> bytes:
    default = switch_document("w1", AGENT, NEW_AGENT, NOW + 300)
    return _signed(purpose, default if document is None else document)


def _check_rotation(data: bytes, message_hash: bytes = MESSAGE_HASH) -> AgentKeyOrder:
    return check_rotation_order(data, owner=OWNER, wallet_id="w1", message_hash=message_hash, now=NOW)


def _check_switch(data: bytes) -> AgentKeyOrder:
    return check_switch_order(data, owner=OWNER, wallet_id="w1", now=NOW)


def test_documents_have_exactly_the_documented_fields() -> None:
    assert rotation_document("w1", AGENT, NEW_AGENT, MESSAGE_HASH, NOW) == {
        "wallet_id": "w1",
        "agent_public_key": str(AGENT),
        "new_agent_public_key": str(NEW_AGENT),
        "message_hash": MESSAGE_HASH.hex(),
        "expires_at": NOW,
    }
    assert switch_document("w1", AGENT, NEW_AGENT, NOW) == {
        "wallet_id": "w1",
        "agent_public_key": str(AGENT),
        "new_agent_public_key": str(NEW_AGENT),
        "expires_at": NOW,
    }


def test_round_trips() -> None:
    assert _check_rotation(_rotation()) == AgentKeyOrder(AGENT, NEW_AGENT)
    assert _check_switch(_switch()) == AgentKeyOrder(AGENT, NEW_AGENT)


def test_the_rotation_order_binds_one_message() -> None:
    with pytest.raises(PolicyDocumentError, match="for another message") as info:
        _check_rotation(_rotation(), hashlib.sha256(b"another message").digest())
    assert info.value.field == "message_hash"


def test_purposes_are_all_distinct() -> None:
    purposes = {AGENT_KEY_ROTATION_PURPOSE, AGENT_KEY_SWITCH_PURPOSE, APPROVAL_PURPOSE, FREEZE_PURPOSE}
    assert len(purposes | {UNFREEZE_PURPOSE}) == 5


@pytest.mark.parametrize("purpose", [APPROVAL_PURPOSE, AGENT_KEY_SWITCH_PURPOSE, FREEZE_PURPOSE, UNFREEZE_PURPOSE])
def test_a_rotation_document_signed_for_another_purpose_is_no_rotation_order(purpose: str) -> None:
    with pytest.raises(PolicySignatureError, match="invalid"):
        _check_rotation(_rotation(purpose=purpose))


@pytest.mark.parametrize("purpose", [APPROVAL_PURPOSE, AGENT_KEY_ROTATION_PURPOSE, FREEZE_PURPOSE, UNFREEZE_PURPOSE])
def test_a_switch_document_signed_for_another_purpose_is_no_switch_order(purpose: str) -> None:
    with pytest.raises(PolicySignatureError, match="invalid"):
        _check_switch(_switch(purpose=purpose))


def test_an_approval_is_no_rotation_order_and_a_rotation_order_no_approval() -> None:
    approval = _signed(APPROVAL_PURPOSE, approval_document("w1", MESSAGE_HASH, NOW + 300))
    with pytest.raises(PolicySignatureError, match="invalid"):
        _check_rotation(approval)
    # the approval's document under the rotation purpose: still not an approval
    with pytest.raises(PolicySignatureError, match="invalid"):
        check_approval(
            _signed(AGENT_KEY_ROTATION_PURPOSE, approval_document("w1", MESSAGE_HASH, NOW + 300)),
            owner=OWNER,
            wallet_id="w1",
            message_hash=MESSAGE_HASH,
            now=NOW,
        )
    with pytest.raises(PolicySignatureError, match="invalid"):
        check_approval(_rotation(), owner=OWNER, wallet_id="w1", message_hash=MESSAGE_HASH, now=NOW)


def test_a_rotation_order_is_no_switch_order_and_back() -> None:
    with pytest.raises(PolicySignatureError, match="invalid"):
        _check_switch(_rotation())
    with pytest.raises(PolicySignatureError, match="invalid"):
        _check_rotation(_switch())


def test_another_owner_or_a_changed_document_is_refused() -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(PolicySignatureError, match="invalid"):
        document = rotation_document("w1", AGENT, NEW_AGENT, MESSAGE_HASH, NOW + 300)
        _check_rotation(_signed(AGENT_KEY_ROTATION_PURPOSE, document, other))
    envelope = json.loads(_switch())
    envelope["document"]["new_agent_public_key"] = str(Pubkey.new_unique())
    with pytest.raises(PolicySignatureError, match="invalid"):
        _check_switch(json.dumps(envelope).encode())


def _base58(raw: bytes) -> str:
    """Plain base58 (Bitcoin alphabet), for keys of the wrong length."""
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    number, out = int.from_bytes(raw, "big"), ""
    while number:
        number, digit = divmod(number, 58)
        out = alphabet[digit] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out


def test_the_base58_helper_matches_solders() -> None:
    assert _base58(bytes(AGENT)) == str(AGENT)
    assert _base58(bytes(32)) == str(Pubkey.default())


BAD_KEYS: list[tuple[object, str]] = [
    (None, "wrong type"),
    (12345, "wrong type"),
    ([str(AGENT)], "wrong type"),
    ("0" * 44, "bad base58"),
    ("I" + str(AGENT)[1:], "bad base58"),
    ("é" * 40, "not ascii"),
    (_base58(bytes(range(1, 32))), "31 bytes"),
    (_base58(bytes(range(1, 34))), "33 bytes"),
    ("1" + str(AGENT), "a leading zero byte: 33 bytes"),
    ("abc", "too short"),
    ("A" * 100, "too long"),
]


@pytest.mark.parametrize("field", KEY_FIELDS)
@pytest.mark.parametrize(("value", "what"), BAD_KEYS, ids=[what for _, what in BAD_KEYS])
def test_malformed_keys_are_refused_by_name(field: str, value: object, what: str) -> None:
    rotation = {**rotation_document("w1", AGENT, NEW_AGENT, MESSAGE_HASH, NOW + 300), field: value}
    with pytest.raises(PolicyDocumentError, match="base58 Solana address") as info:
        _check_rotation(_rotation(rotation))
    assert info.value.field == field, what
    switch = {**switch_document("w1", AGENT, NEW_AGENT, NOW + 300), field: value}
    with pytest.raises(PolicyDocumentError, match="base58 Solana address") as info:
        _check_switch(_switch(switch))
    assert info.value.field == field, what


KEY_CASES = [
    (AGENT, AGENT, "new_agent_public_key", "must differ"),
    (OWNER, NEW_AGENT, "agent_public_key", "owner key"),
    (AGENT, OWNER, "new_agent_public_key", "owner key"),
]


@pytest.mark.parametrize(("agent", "new_agent", "field", "reason"), KEY_CASES)
def test_equal_keys_and_the_owner_key_are_refused(agent: Pubkey, new_agent: Pubkey, field: str, reason: str) -> None:
    with pytest.raises(PolicyDocumentError, match=reason) as info:
        _check_rotation(_rotation(rotation_document("w1", agent, new_agent, MESSAGE_HASH, NOW + 300)))
    assert info.value.field == field
    with pytest.raises(PolicyDocumentError, match=reason) as info:
        _check_switch(_switch(switch_document("w1", agent, new_agent, NOW + 300)))
    assert info.value.field == field


def _variants(document: dict[str, Any], purpose: str) -> list[tuple[dict[str, Any], str, str]]:
    """(document, field named, reason) for every envelope-level defect the two orders share."""
    out = [({k: v for k, v in document.items() if k != name}, purpose, "exactly the fields") for name in document]
    out += [
        ({**document, "note": "x"}, purpose, "exactly the fields"),
        ({**document, "wallet_id": "w2"}, "wallet_id", "another wallet"),
        ({**document, "expires_at": NOW}, "expires_at", "expired"),
        ({**document, "expires_at": NOW + MAX_ORDER_LIFETIME_SECONDS + 1}, "expires_at", "lifetime over"),
        ({**document, "expires_at": str(NOW + 60)}, "expires_at", "integer"),
        ({**document, "expires_at": True}, "expires_at", "integer"),
    ]
    return out


ROTATION_CASES = [
    *_variants(rotation_document("w1", AGENT, NEW_AGENT, MESSAGE_HASH, NOW + 300), AGENT_KEY_ROTATION_PURPOSE),
    ({**rotation_document("w1", AGENT, NEW_AGENT, MESSAGE_HASH, NOW + 300), "message_hash": "ab" * 31},
     "message_hash", "64 hex"),
    ({**rotation_document("w1", AGENT, NEW_AGENT, MESSAGE_HASH, NOW + 300), "message_hash": "zz" * 32},
     "message_hash", "64 hex"),
    ({**rotation_document("w1", AGENT, NEW_AGENT, MESSAGE_HASH, NOW + 300), "message_hash": 5},
     "message_hash", "64 hex"),
    (rotation_document("w1", AGENT, NEW_AGENT, hashlib.sha256(b"other").digest(), NOW + 300), "message_hash",
     "another message"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "field", "reason"), ROTATION_CASES)
def test_malformed_rotation_orders(document: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(PolicyDocumentError, match=reason) as info:
        _check_rotation(_rotation(document))
    assert info.value.field == field


@pytest.mark.parametrize(
    ("document", "field", "reason"),
    [
        *_variants(switch_document("w1", AGENT, NEW_AGENT, NOW + 300), AGENT_KEY_SWITCH_PURPOSE),
        (
            {**switch_document("w1", AGENT, NEW_AGENT, NOW + 300), "message_hash": MESSAGE_HASH.hex()},
            AGENT_KEY_SWITCH_PURPOSE,
            "exactly the fields",
        ),
    ],
)
def test_malformed_switch_orders(document: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(PolicyDocumentError, match=reason) as info:
        _check_switch(_switch(document))
    assert info.value.field == field


def test_the_last_second_of_the_lifetime_is_accepted() -> None:
    document = switch_document("w1", AGENT, NEW_AGENT, NOW + MAX_ORDER_LIFETIME_SECONDS)
    assert _check_switch(_switch(document)) == AgentKeyOrder(AGENT, NEW_AGENT)
