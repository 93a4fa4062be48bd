"""An agent-key receipt names one of the three rotation purposes, 32-byte keys, and a 32-byte message hash exactly
when it is a rotation's (docs/enclave.md and docs/rotation.md; `enclave_app.receipts`): the enclave does not sign
another (``AgentKeyReceipt.encode`` refuses it), and the verifier refuses one signed by the session key all the
same (`verify_agent_key_receipt`). A provisioning receipt's keys are 32 bytes (``ProvisionReceipt.encode``)."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_app.errors import ReceiptError
from enclave_app.receipts import (
    AGENT_KEY_RECEIPT_DOMAIN,
    AgentKeyReceipt,
    ProvisionReceipt,
    SessionKey,
    verify_agent_key_receipt,
)

SEED = bytes(range(7, 39))
SESSION = SessionKey(SEED)
KEY, NEW_KEY, OWNER, HASH = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32, bytes([4]) * 32

GOOD = {
    "candidate": ("agent_key_candidate", KEY, NEW_KEY, OWNER, None),
    "rotation": ("agent_key_rotation", KEY, NEW_KEY, OWNER, HASH),
    "switch": ("agent_key_switch", KEY, NEW_KEY, OWNER, None),
}
BAD = {
    "a provisioning purpose": ("provision", KEY, NEW_KEY, OWNER, None),
    "a short agent key": ("agent_key_candidate", KEY[:31], NEW_KEY, OWNER, None),
    "a long new agent key": ("agent_key_switch", KEY, NEW_KEY + b"\x00", OWNER, None),
    "a short owner key": ("agent_key_candidate", KEY, NEW_KEY, OWNER[:31], None),
    "a candidate with a message hash": ("agent_key_candidate", KEY, NEW_KEY, OWNER, HASH),
    "a switch with a message hash": ("agent_key_switch", KEY, NEW_KEY, OWNER, HASH),
    "a rotation without a message hash": ("agent_key_rotation", KEY, NEW_KEY, OWNER, None),
    "a rotation with a short message hash": ("agent_key_rotation", KEY, NEW_KEY, OWNER, HASH[:31]),
}


def _receipt(fields: tuple[Any, ...]) -> AgentKeyReceipt:
    purpose, agent, new_agent, owner, message_hash = fields
    return AgentKeyReceipt(purpose, "w1", agent, new_agent, owner, message_hash, 1)


def _signed_anyway(fields: tuple[Any, ...]) -> tuple[bytes, bytes]:
    """The receipt's map as cbor2 encodes it, signed by the session key over the agent-key domain (what the
    enclave's encoder refuses to make)."""
    purpose, agent, new_agent, owner, message_hash = fields
    encoded = cbor2.dumps({"v": 1, "purpose": purpose, "wallet_id": "w1", "agent_public_key": agent,
                           "new_agent_public_key": new_agent, "owner_public_key": owner,
                           "message_hash": message_hash, "time_ms": 1})  # fmt: skip
    return encoded, Ed25519PrivateKey.from_private_bytes(SEED).sign(AGENT_KEY_RECEIPT_DOMAIN + encoded)


@pytest.mark.parametrize("case", GOOD)
def test_each_purpose_with_its_fields_is_signed_and_verifies(case: str) -> None:
    """The control: the same construction, well formed, verifies as it was made."""
    receipt = _receipt(GOOD[case])
    assert verify_agent_key_receipt(*SESSION.sign_agent_key(receipt), SESSION.public_key) == receipt
    assert verify_agent_key_receipt(*_signed_anyway(GOOD[case]), SESSION.public_key) == receipt


@pytest.mark.parametrize("case", BAD)
def test_the_enclave_does_not_sign_a_malformed_agent_key_receipt(case: str) -> None:
    with pytest.raises(ReceiptError):
        SESSION.sign_agent_key(_receipt(BAD[case]))


@pytest.mark.parametrize("case", BAD)
def test_a_malformed_agent_key_receipt_is_refused_though_signed(case: str) -> None:
    with pytest.raises(ReceiptError):
        verify_agent_key_receipt(*_signed_anyway(BAD[case]), SESSION.public_key)


@pytest.mark.parametrize(("agent", "owner"), [(KEY[:31], OWNER), (KEY, OWNER + b"\x00")], ids=["agent", "owner"])
def test_the_enclave_does_not_sign_a_provisioning_receipt_with_a_key_of_other_size(agent: bytes, owner: bytes) -> None:
    with pytest.raises(ReceiptError, match="32 bytes"):
        SESSION.sign_provision(ProvisionReceipt("w1", agent, owner, 1))
