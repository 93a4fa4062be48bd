"""What an agent-key receipt must state (agent-key rotation, DESIGN.md section 3; `enclave_app.receipts`).

Each answer to the three rotation steps carries an agent-key receipt signed by the enclave's session key. The proxy
checks it when the answer arrives (`parent_proxy.enclave_sessions.EnclaveSessions.record_checked`, which also
records the session key in force first) and writes it into the step's audit record; the auditor
(``waiaas audit verify --receipts``, `parent_proxy.audit_receipts`) checks it again against that record. Both use
:class:`ExpectedAgentKey`:

==========================  ==========================  ==========================================================
audit event                 receipt purpose             what the receipt must name
==========================  ==========================  ==========================================================
``agent_key.candidate``     ``agent_key_candidate``     wallet, agent key, candidate, owner key; no message hash
``agent_key.rotation_signed``  ``agent_key_rotation``   the same and the co-signed message's SHA-256
``agent_key.switched``      ``agent_key_switch``        wallet, previous agent key, new agent key, owner key
==========================  ==========================  ==========================================================

and a time within `parent_proxy.receipt_checks.RECEIPT_TIME_TOLERANCE_SECONDS` of the proxy's clock (or of the
record's time). Agent-key receipts have no counter (the owner orders each step), so the auditor refuses the same
receipt recorded twice instead of checking a sequence.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from solders.pubkey import Pubkey
from solders.signature import Signature

from enclave_app.errors import ReceiptError
from enclave_app.receipts import AgentKeyReceipt, verify_agent_key_receipt
from parent_proxy.provisioning import OTHER_SESSION
from parent_proxy.receipt_checks import check_receipt_time

AGENT_KEY_EVENT_PURPOSES = {
    "agent_key.candidate": "agent_key_candidate",
    "agent_key.rotation_signed": "agent_key_rotation",
    "agent_key.switched": "agent_key_switch",
}
"""Audit event -> the purpose of the receipt it must hold."""


@dataclass(frozen=True, slots=True)
class ExpectedAgentKey:
    """What an agent-key receipt must state: the step's answer (the proxy) or its audit record (the auditor)."""

    purpose: str
    wallet_id: str
    agent_public_key: bytes
    new_agent_public_key: bytes
    owner_public_key: bytes
    message_hash: bytes | None = None

    def verify(self, receipt: bytes, signature: bytes, session_public_key: bytes) -> AgentKeyReceipt:
        """The receipt, if ``session_public_key`` signed it as an agent-key receipt (else `ReceiptError`)."""
        return verify_agent_key_receipt(receipt, signature, session_public_key)

    def check(self, stated: object, *, at: float) -> None:
        """`ReceiptError` unless ``stated`` (a verified agent-key receipt) says what this expects, at about ``at``."""
        check_receipt_time(self.check_content(stated).time_ms, at=at)

    def check_content(self, stated: object) -> AgentKeyReceipt:
        """``stated`` if it says what this expects (its time is not compared), else `ReceiptError`."""
        if not isinstance(stated, AgentKeyReceipt):
            raise ReceiptError("not an agent-key receipt")
        if stated.purpose != self.purpose:
            raise ReceiptError(f"agent-key receipt of purpose {stated.purpose!r}, expected {self.purpose!r}")
        if stated.wallet_id != self.wallet_id:
            raise ReceiptError("agent-key receipt names another wallet")
        for name in ("agent_public_key", "new_agent_public_key", "owner_public_key"):
            if not hmac.compare_digest(getattr(stated, name), getattr(self, name)):
                raise ReceiptError(f"agent-key receipt names another {name.replace('_', ' ')}")
        if (stated.message_hash is None) != (self.message_hash is None) or (
            self.message_hash is not None
            and stated.message_hash is not None
            and not hmac.compare_digest(stated.message_hash, self.message_hash)
        ):
            raise ReceiptError("agent-key receipt is about another message")
        return stated


class CandidateVerificationError(Exception):
    """The candidate must not be put on chain: the message says why."""


@dataclass(frozen=True, slots=True)
class VerifiedCandidate:
    wallet_id: str
    agent_public_key: str
    candidate_public_key: str
    owner_public_key: str
    time_ms: int


def _answer_key(answer: Mapping[str, Any], name: str) -> bytes:
    try:
        return bytes(Pubkey.from_string(answer[name]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CandidateVerificationError(f"{name} missing or not a base58 public key") from exc


def verify_candidate_answer(
    answer: Mapping[str, Any], *, wallet_id: str, agent_public_key: str, owner_public_key: str,
    session_public_key: bytes,
) -> VerifiedCandidate:  # fmt: skip
    """The owner's check of a ``POST .../agent-key/candidate`` answer before putting the candidate on chain: its
    receipt verifies under ``session_public_key`` (from an attestation the owner verified,
    `parent_proxy.provisioning.session_key_from_attestation`) and states that the enclave made the answer's
    candidate to replace ``agent_public_key`` in ``wallet_id`` for ``owner_public_key`` (both base58); else
    :class:`CandidateVerificationError`. The receipt's time is not compared (the check may come later)."""
    try:
        agent, owner = bytes(Pubkey.from_string(agent_public_key)), bytes(Pubkey.from_string(owner_public_key))
    except ValueError as exc:
        raise CandidateVerificationError("the expected agent or owner key is not a base58 public key") from exc
    if answer.get("wallet_id") != wallet_id:
        raise CandidateVerificationError(f"the answer is for wallet {answer.get('wallet_id')!r}, not {wallet_id!r}")
    if _answer_key(answer, "agent_public_key") != agent:
        raise CandidateVerificationError("the answer replaces another agent key than the one given")
    candidate = _answer_key(answer, "candidate_public_key")
    receipt_view = answer.get("receipt")
    try:
        if not isinstance(receipt_view, Mapping):
            raise TypeError("no receipt object")
        receipt = base64.b64decode(receipt_view["receipt"], validate=True)
        signature = bytes(Signature.from_string(receipt_view["signature"]))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise CandidateVerificationError("the answer carries no readable receipt") from exc
    expected = ExpectedAgentKey("agent_key_candidate", wallet_id, agent, candidate, owner)
    try:
        stated = expected.verify(receipt, signature, session_public_key)
    except ReceiptError as exc:
        raise CandidateVerificationError(
            f"{exc}: not signed by the attested enclave session key{OTHER_SESSION}"
        ) from exc
    try:
        expected.check_content(stated)
    except ReceiptError as exc:
        raise CandidateVerificationError(
            f"the receipt does not state this candidate for this owner key: {exc}"
        ) from exc
    return VerifiedCandidate(wallet_id, agent_public_key, str(Pubkey.from_bytes(candidate)), owner_public_key,
                             stated.time_ms)  # fmt: skip
