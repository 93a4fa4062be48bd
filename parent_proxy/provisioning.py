"""The owner's check of a new wallet: the enclave's provisioning receipt, under the attested session key.

``POST /v1/wallets`` answers with ``provision_receipt`` and ``provision_receipt_signature``
(:class:`enclave_app.receipts.ProvisionReceipt`). The parent relays them but cannot forge them: they are signed by
the enclave's per-boot session key, whose public key is inside the attestation document. Before adding the agent
key to the Squads multisig the owner checks (:func:`verify_provision_receipt`):

1. the session key: from a verified attestation document (mode ``nitro``: an anchor of a pinned root and expected
   PCRs with PCR 0, and the document's ``user_data``, by the rules ``waiaas audit verify`` applies:
   `parent_proxy.trust_anchor`), or, in mode ``none`` and without an anchor, from the answer only when the caller
   accepts that this proves nothing (:func:`attested_session`);
2. the receipt's signature under that key;
3. that the receipt names the wallet the owner created (the caller names it: the answer's is the parent's word),
   the agent key the answer gives, and the owner's own key. A parent that provisioned the wallet under an owner key
   it controls, or that shows another wallet's receipt, fails step 3.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from solders.pubkey import Pubkey

from enclave_app.errors import ReceiptError
from enclave_app.receipts import verify_provision_receipt as verify_receipt_bytes
from parent_proxy.trust_anchor import Anchor, AttestedSession, SessionDocumentError, verified_session

UNATTESTED_WARNING = (
    "attestation mode none: the session key comes from the parent's answer, not from an attestation document; "
    "this proves nothing about the code that signed the receipt"
)


class ProvisionVerificationError(Exception):
    """The wallet must not be trusted: the message says why."""


@dataclass(frozen=True, slots=True)
class VerifiedWallet:
    wallet_id: str
    agent_public_key: str
    owner_public_key: str
    time_ms: int


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ProvisionVerificationError(f"{what} missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProvisionVerificationError(f"{what} is not base64") from exc


def _key(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ProvisionVerificationError(f"{what} missing or not a string")
    try:
        return bytes(Pubkey.from_string(value))
    except ValueError as exc:
        raise ProvisionVerificationError(f"{what} is not a base58 public key") from exc


OTHER_SESSION = (
    " (a receipt of another host's enclave, when the attestation came from another host than the answer: with several"
    " hosts, ask with ?nonce=HEX for an answer that carries its own host's attestation; of an earlier enclave boot;"
    " or one the parent made)"
)
"""What a receipt that does not verify under the attested key may be (``verify-wallet``, ``verify-candidate``)."""


def session_key_from_attestation(
    answer: Mapping[str, Any],
    *,
    anchor: Anchor | None = None,
    expected_nonce: bytes | None = None,
    accept_unattested: bool = False,
    at: datetime | None = None,
) -> bytes:
    """The session public key of `attested_session`."""
    return attested_session(
        answer, anchor=anchor, expected_nonce=expected_nonce, accept_unattested=accept_unattested, at=at
    ).public_key


def attested_session(
    answer: Mapping[str, Any],
    *,
    anchor: Anchor | None = None,
    expected_nonce: bytes | None = None,
    accept_unattested: bool = False,
    at: datetime | None = None,
) -> AttestedSession:
    """The session public key from a ``GET /v1/attestation`` answer (with the document's ``module_id`` in mode
    ``nitro``), or :class:`ProvisionVerificationError`. The rules are `parent_proxy.trust_anchor`'s, as ``waiaas
    audit verify`` applies them to the log.

    Mode ``nitro``: the document is verified against ``anchor`` (required: a pinned root and PCRs, PCR 0 among
    them) by `parent_proxy.trust_anchor.verified_session` (also its ``user_data``) and the key is the document's
    ``public_key``; the answer's ``session_public_key`` must equal it. Mode ``none``: refused when an ``anchor`` is
    given (it requires an attested key, whatever ``accept_unattested`` says), else unless ``accept_unattested``
    (then the answer's key, and no module id; see :data:`UNATTESTED_WARNING`).
    """
    mode = answer.get("mode")
    if mode == "nitro":
        if anchor is None:
            raise ProvisionVerificationError(
                "nitro attestation: a pinned root certificate and expected PCRs are needed"
            )
        document = _b64(answer.get("document"), "attestation document")
        try:
            attested = verified_session(document, anchor, at=at or datetime.now(UTC), expected_nonce=expected_nonce)
        except SessionDocumentError as exc:
            raise ProvisionVerificationError(str(exc)) from exc
        if _key(answer.get("session_public_key"), "session_public_key") != attested.public_key:
            raise ProvisionVerificationError("the answer's session_public_key does not match the attested one")
        return attested
    if mode == "none":
        if anchor is not None:
            raise ProvisionVerificationError(
                "attestation mode none: the answer carries no document, and the anchor (root and PCRs) requires an "
                "attested session key"
            )
        if not accept_unattested:
            raise ProvisionVerificationError(
                "attestation mode none: nothing attests the session key (accept it explicitly to go on)"
            )
        return AttestedSession(_key(answer.get("session_public_key"), "session_public_key"), None)
    raise ProvisionVerificationError("attestation answer has no known mode")


def verify_provision_receipt(
    created: Mapping[str, Any], *, wallet_id: str, owner_public_key: str, session_public_key: bytes
) -> VerifiedWallet:
    """Check a ``POST /v1/wallets`` answer's receipt under ``session_public_key`` (from
    :func:`session_key_from_attestation`) and that it binds ``wallet_id`` (the wallet the owner created, never
    taken from the answer) and the answer's agent key to ``owner_public_key`` (base58); else
    :class:`ProvisionVerificationError`."""
    owner = _key(owner_public_key, "expected owner public key")
    agent = _key(created.get("agent_public_key"), "agent_public_key")
    answered = created.get("wallet_id")
    if not isinstance(answered, str):
        raise ProvisionVerificationError("wallet_id missing or not a string")
    if answered != wallet_id:
        raise ProvisionVerificationError(f"the answer is for wallet {answered!r}, not {wallet_id!r}")
    if created.get("provision_receipt") is None or created.get("provision_receipt_signature") is None:
        raise ProvisionVerificationError("the answer carries no provisioning receipt (an enclave too old to sign one)")
    receipt = _b64(created["provision_receipt"], "provision_receipt")
    signature = _b64(created["provision_receipt_signature"], "provision_receipt_signature")
    try:
        stated = verify_receipt_bytes(receipt, signature, session_public_key)
    except ReceiptError as exc:
        raise ProvisionVerificationError(
            f"{exc}: not signed by the attested enclave session key{OTHER_SESSION}"
        ) from exc
    if stated.wallet_id != wallet_id:
        raise ProvisionVerificationError(f"the receipt is for wallet {stated.wallet_id!r}, not {wallet_id!r}")
    if stated.agent_public_key != agent:
        raise ProvisionVerificationError(
            f"the receipt is for agent key {Pubkey.from_bytes(stated.agent_public_key)}, not {Pubkey.from_bytes(agent)}"
        )
    if stated.owner_public_key != owner:
        raise ProvisionVerificationError(
            f"the enclave provisioned this wallet for owner key {Pubkey.from_bytes(stated.owner_public_key)}, "
            f"not {Pubkey.from_bytes(owner)}: the parent substituted the owner key"
        )
    return VerifiedWallet(wallet_id, str(Pubkey.from_bytes(agent)), str(Pubkey.from_bytes(owner)), stated.time_ms)
