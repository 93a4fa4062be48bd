"""`parent_proxy.agent_key_receipts.verify_candidate_answer` refuses, as a failed check
(`CandidateVerificationError`, never another exception), an expected agent or owner key that is not a base58 public
key: the owner's own input to ``waiaas owner verify-candidate`` (docs/rotation.md), checked before the answer."""

from __future__ import annotations

import base64

import pytest
from solders.pubkey import Pubkey
from solders.signature import Signature

from enclave_app.receipts import AgentKeyReceipt, SessionKey
from parent_proxy.agent_key_receipts import CandidateVerificationError, verify_candidate_answer

SESSION = SessionKey(bytes(range(32)))
OWNER, AGENT, CANDIDATE = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()


def _answer() -> dict[str, object]:
    receipt, signature = SESSION.sign_agent_key(
        AgentKeyReceipt("agent_key_candidate", "w1", bytes(AGENT), bytes(CANDIDATE), bytes(OWNER), None, 1)
    )
    return {"wallet_id": "w1", "agent_public_key": str(AGENT), "candidate_public_key": str(CANDIDATE),
            "receipt": {"receipt": base64.b64encode(receipt).decode(),
                        "signature": str(Signature.from_bytes(signature))}}  # fmt: skip


def _check(agent: str, owner: str) -> str:
    verified = verify_candidate_answer(_answer(), wallet_id="w1", agent_public_key=agent, owner_public_key=owner,
                                       session_public_key=SESSION.public_key)  # fmt: skip
    return verified.candidate_public_key


def test_the_answer_verifies_with_readable_expected_keys() -> None:
    """The control: the same answer with the keys as given."""
    assert _check(str(AGENT), str(OWNER)) == str(CANDIDATE)


@pytest.mark.parametrize(
    ("agent", "owner"), [("0OIl", str(OWNER)), (str(AGENT), "0OIl"), (str(AGENT), "")], ids=["agent", "owner", "empty"]
)
def test_an_expected_key_that_is_not_base58_is_a_failed_check(agent: str, owner: str) -> None:
    with pytest.raises(CandidateVerificationError, match="expected agent or owner key is not a base58 public key"):
        _check(agent, owner)
