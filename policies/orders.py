"""Owner-signed orders besides policies: freeze, unfreeze, the approval of one escalated transaction, and the two
orders of an agent-key rotation.

One definition for both services: the parent proxy checks an order first (to refuse early and keep its state in
step), the enclave checks it again and is authoritative. All use `policies.signing` (domain prefix, purpose,
canonical JSON), so no order can pass for another kind or for a policy. Documents have exactly these fields::

    freeze / unfreeze (purposes "freeze" / "unfreeze"):
        {"wallet_id": str, "sequence": int >= 1, "expires_at": int (unix seconds)}
    approval (purpose "approval"):
        {"wallet_id": str, "message_hash": "<64 hex: SHA-256 of the transaction message>", "expires_at": int}
    agent-key rotation (purpose "agent-key-rotation"): the old agent key may co-sign exactly this message, which
    changes the Squads multisig's members (`policies.rotation` checks what the message does):
        {"wallet_id": str, "agent_public_key": "<base58>", "new_agent_public_key": "<base58>",
         "message_hash": "<64 hex>", "expires_at": int}
    agent-key switch (purpose "agent-key-switch"): after the rotation landed, sign with the new key from now on:
        {"wallet_id": str, "agent_public_key": "<base58>", "new_agent_public_key": "<base58>", "expires_at": int}

Checks: 1. owner signature under the purpose; 2. exactly these fields, for this wallet; 3. not expired, and a
lifetime of at most `MAX_ORDER_LIFETIME_SECONDS` (bounding replays after an enclave restart forgets sequences);
4. freeze orders: a sequence in range (the caller refuses one not above the last it accepted); approvals and
rotation orders: the exact message, compared in constant time; rotation and switch orders: two distinct base58
32-byte keys, neither of them the owner key (the caller still checks that ``agent`` is the wallet's current agent
key and ``new_agent`` the candidate it made). Errors: `PolicySignatureError` (opaque) or `PolicyDocumentError`
(field named).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from solders.pubkey import Pubkey

from policies.errors import PolicyDocumentError
from policies.json_fields import read_pubkey
from policies.signing import document_sha256, open_envelope

FREEZE_PURPOSE = "freeze"
UNFREEZE_PURPOSE = "unfreeze"
APPROVAL_PURPOSE = "approval"
# Hyphens, not underscores: `policies.signing` accepts purposes of ``[a-z][a-z0-9-]{0,31}`` only.
AGENT_KEY_ROTATION_PURPOSE = "agent-key-rotation"
AGENT_KEY_SWITCH_PURPOSE = "agent-key-switch"
MAX_ORDER_LIFETIME_SECONDS = 3600
"""An order expires within an hour of being signed: short enough to bound replays, long enough for a human."""
MAX_SEQUENCE = 2**53
MESSAGE_HASH_BYTES = 32

_ORDER_FIELDS = frozenset({"wallet_id", "sequence", "expires_at"})
_APPROVAL_FIELDS = frozenset({"wallet_id", "message_hash", "expires_at"})
_SWITCH_FIELDS = frozenset({"wallet_id", "agent_public_key", "new_agent_public_key", "expires_at"})
_ROTATION_FIELDS = _SWITCH_FIELDS | {"message_hash"}


def freeze_document(wallet_id: str, sequence: int, expires_at: int) -> dict[str, Any]:
    """The document of a freeze or unfreeze order (sign it with purpose FREEZE_PURPOSE or UNFREEZE_PURPOSE)."""
    return {"wallet_id": wallet_id, "sequence": sequence, "expires_at": expires_at}


def approval_document(wallet_id: str, message_hash: bytes, expires_at: int) -> dict[str, Any]:
    """The document approving exactly the transaction message whose SHA-256 is ``message_hash``."""
    return {"wallet_id": wallet_id, "message_hash": message_hash.hex(), "expires_at": expires_at}


def rotation_document(
    wallet_id: str, agent: Pubkey, new_agent: Pubkey, message_hash: bytes, expires_at: int
) -> dict[str, Any]:
    """The document letting ``agent`` co-sign exactly the message whose SHA-256 is ``message_hash``, which replaces
    ``agent`` by ``new_agent`` in the wallet's multisig (sign it with purpose AGENT_KEY_ROTATION_PURPOSE)."""
    return {"wallet_id": wallet_id, "agent_public_key": str(agent), "new_agent_public_key": str(new_agent),
            "message_hash": message_hash.hex(), "expires_at": expires_at}  # fmt: skip


def switch_document(wallet_id: str, agent: Pubkey, new_agent: Pubkey, expires_at: int) -> dict[str, Any]:
    """The document making the enclave sign with ``new_agent`` instead of ``agent`` (purpose
    AGENT_KEY_SWITCH_PURPOSE)."""
    return {"wallet_id": wallet_id, "agent_public_key": str(agent), "new_agent_public_key": str(new_agent),
            "expires_at": expires_at}  # fmt: skip


@dataclass(frozen=True, slots=True)
class CheckedFreezeOrder:
    """A verified freeze or unfreeze order: its sequence and `document_sha256` of its document."""

    sequence: int
    document_sha256: bytes


@dataclass(frozen=True, slots=True)
class AgentKeyOrder:
    """A verified rotation or switch order: ``agent`` is the key being replaced, ``new_agent`` its replacement."""

    agent: Pubkey
    new_agent: Pubkey


def _open(
    data: bytes, purpose: str, owner: Pubkey, fields: frozenset[str], *, wallet_id: str, now: float
) -> dict[str, Any]:
    # 1. Owner signature under the purpose.
    document = open_envelope(data, purpose, owner)
    # 2. Exactly these fields, for this wallet.
    if set(document) != fields:
        raise PolicyDocumentError(purpose, f"an order has exactly the fields {', '.join(sorted(fields))}")
    if document["wallet_id"] != wallet_id:
        raise PolicyDocumentError("wallet_id", "the order is for another wallet")
    # 3. Expiry, with a bounded lifetime.
    expires_at = document["expires_at"]
    if type(expires_at) is not int:
        raise PolicyDocumentError("expires_at", "must be an integer (unix seconds)")
    if expires_at <= now:
        raise PolicyDocumentError("expires_at", "the order has expired")
    if expires_at > now + MAX_ORDER_LIFETIME_SECONDS:
        raise PolicyDocumentError("expires_at", f"lifetime over {MAX_ORDER_LIFETIME_SECONDS} seconds")
    return document


def check_freeze_order(data: bytes, *, freeze: bool, owner: Pubkey, wallet_id: str, now: float) -> int:
    """Verify a freeze (``freeze=True``) or unfreeze order and return its sequence; the caller still refuses a
    sequence that is not above the last one it accepted."""
    return checked_freeze_order(data, freeze=freeze, owner=owner, wallet_id=wallet_id, now=now).sequence


def checked_freeze_order(data: bytes, *, freeze: bool, owner: Pubkey, wallet_id: str, now: float) -> CheckedFreezeOrder:
    """:func:`check_freeze_order`, returning the sequence and the document's SHA-256 (`document_sha256`)."""
    purpose = FREEZE_PURPOSE if freeze else UNFREEZE_PURPOSE
    document = _open(data, purpose, owner, _ORDER_FIELDS, wallet_id=wallet_id, now=now)
    # 4. Sequence in range.
    sequence = document["sequence"]
    if type(sequence) is not int or not 1 <= sequence <= MAX_SEQUENCE:
        raise PolicyDocumentError("sequence", f"must be an integer from 1 to {MAX_SEQUENCE}")
    return CheckedFreezeOrder(sequence, document_sha256(document))


def check_approval(data: bytes, *, owner: Pubkey, wallet_id: str, message_hash: bytes, now: float) -> None:
    """Return if ``data`` is the owner's unexpired approval of exactly ``message_hash``; raise otherwise."""
    document = _open(data, APPROVAL_PURPOSE, owner, _APPROVAL_FIELDS, wallet_id=wallet_id, now=now)
    # 4. The exact message.
    _check_message_hash(document, message_hash, "the approval is for another message")


def check_rotation_order(
    data: bytes, *, owner: Pubkey, wallet_id: str, message_hash: bytes, now: float
) -> AgentKeyOrder:
    """Verify the owner's unexpired order letting the agent key co-sign exactly ``message_hash`` (the multisig
    membership change); return the two keys. The caller still checks that ``agent`` is the wallet's agent key and
    ``new_agent`` the candidate it made, and the message itself with `policies.rotation`."""
    document = _open(data, AGENT_KEY_ROTATION_PURPOSE, owner, _ROTATION_FIELDS, wallet_id=wallet_id, now=now)
    # 4. The two keys, and the exact message.
    order = _agent_keys(document, owner)
    _check_message_hash(document, message_hash, "the rotation order is for another message")
    return order


def check_switch_order(data: bytes, *, owner: Pubkey, wallet_id: str, now: float) -> AgentKeyOrder:
    """Verify the owner's unexpired order to sign with ``new_agent`` instead of ``agent``; return the two keys. The
    caller still checks that they are the wallet's agent key and the candidate it made."""
    document = _open(data, AGENT_KEY_SWITCH_PURPOSE, owner, _SWITCH_FIELDS, wallet_id=wallet_id, now=now)
    # 4. The two keys.
    return _agent_keys(document, owner)


def _check_message_hash(document: dict[str, Any], message_hash: bytes, mismatch: str) -> None:
    approved = document["message_hash"]
    if type(approved) is not str or len(approved) != 2 * MESSAGE_HASH_BYTES:
        raise PolicyDocumentError("message_hash", "must be 64 hex characters")
    try:
        approved_bytes = bytes.fromhex(approved)
    except ValueError as exc:
        raise PolicyDocumentError("message_hash", "must be 64 hex characters") from exc
    if not hmac.compare_digest(approved_bytes, message_hash):
        raise PolicyDocumentError("message_hash", mismatch)


def _key(document: dict[str, Any], field: str) -> Pubkey:
    return read_pubkey(document[field], field)


def _agent_keys(document: dict[str, Any], owner: Pubkey) -> AgentKeyOrder:
    agent, new_agent = _key(document, "agent_public_key"), _key(document, "new_agent_public_key")
    if new_agent == agent:
        raise PolicyDocumentError("new_agent_public_key", "must differ from agent_public_key")
    if agent == owner:
        raise PolicyDocumentError("agent_public_key", "must not be the owner key")
    if new_agent == owner:
        raise PolicyDocumentError("new_agent_public_key", "must not be the owner key")
    return AgentKeyOrder(agent, new_agent)
