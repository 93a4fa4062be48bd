"""An agent's check of its own signing answer (``waiaas agent verify-receipt``: `parent_proxy.agent_cli`): that an
attested enclave decided and signed the very transaction the agent sent, for its wallet, under the policy it expects.

The parent proxy is trusted for none of it (DESIGN.md section 1). Every value compared comes from the agent itself:
the transaction it sent, its wallet id, its agent public key, the policy it expects (the owner's signed envelope, or
its document hash); the session key comes from an attestation the agent verified (`parent_proxy.trust_anchor`).
The answer only supplies what is being checked. The steps, and what each one stops:

1. the answer is a signed transaction answer carrying a decision receipt (:func:`answer_receipt`);
2. the receipt verifies under the attested session key, over ``RECEIPT_DOMAIN + receipt``
   (`enclave_app.receipts.verify_receipt`): the enclave stated it, not the parent;
3. it is a transaction receipt about the agent's own transaction (``message_hash`` is the SHA-256 of the message
   bytes of the transaction the agent sent, `parent_proxy.sign_parts.message_hash`, never of the answer's), names
   the agent's wallet, states a signature, and its verdict, policy sequence and reasons are the answer's decision's
   (`parent_proxy.receipt_checks.check_receipt_statement`, the proxy's own check without the time): stops a
   parent answering request B with the signed answer and receipt of request A (another transaction of the same
   wallet), or with another wallet's, and a decision shown otherwise than the enclave made it;
4. its ``policy_hash`` is the document hash the agent expects (and ``policy_sequence`` the sequence, when the agent
   has the envelope, and at least the lowest sequence its owner told it is in force): stops a substituted policy
   (docs/policies.md, Expiry), as far as the agent's expectation comes from its owner: an envelope served by the
   parent (``GET /v1/wallets/{id}/policy``) carries a valid owner signature also when it is an older one the parent
   put back after an enclave restart, so only the owner's copy, or the owner's minimum sequence, catches that;
5. the answer's signed transaction is the agent's own message, with a signature that verifies under the agent's
   public key in that key's signer slot (`parent_proxy.enclave_relay.signed_by`): the signature handed out is the
   wallet's agent key's, over the message the receipt is about.

What it cannot show: that the transaction was broadcast or landed (ask the chain), or anything about another request.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from solders.pubkey import Pubkey
from solders.signature import Signature

from enclave_app.errors import ReceiptError
from enclave_app.receipts import Receipt, verify_receipt
from parent_proxy.enclave_relay import signed_by
from parent_proxy.receipt_checks import Expected, check_receipt_statement
from parent_proxy.sign_parts import message_hash


class ReceiptCheckError(Exception):
    """The answer is not shown to be the enclave's signature of the agent's transaction: the message says why."""


@dataclass(frozen=True, slots=True)
class ExpectedPolicy:
    """The policy the agent expects in force: its document hash (`policies.signing.document_sha256`, the receipt's
    ``policy_hash``) and, when the agent has the signed envelope, its sequence (None: not compared); and the lowest
    sequence the agent's owner told it is in force (``min_sequence``, None: not compared), which alone catches an
    older owner-signed policy the parent both put back and serves as the current one."""

    document_sha256: bytes
    sequence: int | None
    min_sequence: int | None = None


@dataclass(frozen=True, slots=True)
class AgentExpectation:
    """What the agent itself knows: its wallet, its agent public key (32 bytes), the transaction it sent (the bytes
    it base64-encoded into the request) and the policy it expects."""

    wallet_id: str
    agent_public_key: bytes
    transaction: bytes
    policy: ExpectedPolicy


def answer_receipt(answer: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """Step 1: the answer's receipt and its signature; `ReceiptCheckError` for an answer that is no signed
    transaction answer (a 202 pending approval, an error) or carries them malformed."""
    if answer.get("status") != "signed":
        raise ReceiptCheckError('the answer is not a signed transaction (its status is not "signed")')
    part = answer.get("receipt")
    if not isinstance(part, dict):
        raise ReceiptCheckError("the answer carries no receipt")
    try:
        receipt = base64.b64decode(part["receipt"], validate=True)
        signature = bytes(Signature.from_string(part["signature"]))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ReceiptCheckError("the answer's receipt is not base64, or its signature not base58") from exc
    return receipt, signature


def named_session_key(answer: Mapping[str, Any]) -> str | None:
    """The session key the answer's receipt names (``receipt.session_public_key``), re-encoded; None when it names
    none (an answer stored before the field) or none that parses. Only a hint of which host's enclave to ask for
    its attestation: the receipt must still verify under the attested key."""
    part = answer.get("receipt")
    try:
        return str(Pubkey.from_string(part["session_public_key"])) if isinstance(part, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def verify_sign_answer(answer: Mapping[str, Any], expected: AgentExpectation, session_public_key: bytes) -> Receipt:
    """Steps 1-5 of the module docstring: the verified receipt, or `ReceiptCheckError` naming the first failure.
    ``session_public_key`` must come from an attestation the agent verified."""
    receipt, signature = answer_receipt(answer)  # 1.
    try:  # 2.
        stated = verify_receipt(receipt, signature, session_public_key)
    except ReceiptError as exc:
        raise ReceiptCheckError(
            f"{exc}: not signed by the attested enclave session key {Pubkey.from_bytes(session_public_key)}"
        ) from exc
    own = Expected("transaction", expected.wallet_id, message_hash(expected.transaction), signed=True,
                   decision=answer.get("decision"))  # fmt: skip
    try:  # 3.
        check_receipt_statement(stated, own)
    except ReceiptError as exc:
        raise ReceiptCheckError(f"the receipt is not about your request: {exc}") from exc
    _check_policy(stated, expected.policy)  # 4.
    _check_signed_transaction(answer, expected)  # 5.
    return stated


def _check_policy(stated: Receipt, policy: ExpectedPolicy) -> None:
    if stated.policy_hash is None or stated.policy_hash != policy.document_sha256:
        shown = "none" if stated.policy_hash is None else stated.policy_hash.hex()
        raise ReceiptCheckError(
            f"the enclave decided under policy {shown}, not the one you expect ({policy.document_sha256.hex()})"
        )
    if policy.sequence is not None and stated.policy_sequence != policy.sequence:
        raise ReceiptCheckError(
            f"the enclave decided under policy sequence {stated.policy_sequence}, not {policy.sequence}"
        )
    if policy.min_sequence is not None and (stated.policy_sequence or 0) < policy.min_sequence:
        raise ReceiptCheckError(
            f"the enclave decided under policy sequence {stated.policy_sequence}, below {policy.min_sequence}, the "
            "lowest your owner told you is in force: an older policy was put back"
        )


def _check_signed_transaction(answer: Mapping[str, Any], expected: AgentExpectation) -> None:
    try:
        signed = base64.b64decode(answer["signed_transaction"], validate=True)
        signature = bytes(Signature.from_string(answer["signature"]))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ReceiptCheckError("the answer's signed_transaction is not base64, or its signature not base58") from exc
    if not signed_by(signed, signature, expected.transaction, expected.agent_public_key):
        raise ReceiptCheckError(
            "the signed transaction is not your transaction signed by your agent key "
            f"{Pubkey.from_bytes(expected.agent_public_key)} in its signer slot"
        )
