"""Owner signatures over JSON documents (policies now; approvals and freeze orders use the same scheme).

Signed bytes = ``b"\\xffwaiaas/" + purpose + b"\\x00" + SHA-256(canonical_bytes(document))``. The leading 0xff byte
can begin neither a legacy Solana message (0xff signatures would be required) nor a versioned one (version 127
does not exist), and the purpose string separates document kinds, so an owner signature over one kind of document
can never be replayed as a transaction signature or as another kind of document.

The document enters as its SHA-256, so every signed payload is at most 73 bytes whatever the document's size:
AWS KMS signs a ``RAW`` message of at most 4096 bytes (`parent_proxy.owner_signers`), and a policy may be up to
`policies.canonical.MAX_DOCUMENT_BYTES`. The signature is still pure Ed25519 (``ED25519_SHA_512``) over these
bytes; what it adds is the assumption that SHA-256 resists collisions. The hash is the one an order receipt names
(``document_sha256``), so a receipt and a signature speak of the same bytes.

A signed document travels as ``{"document": {...}, "signature": "<base58, 64 bytes>"}``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey
from solders.signature import Signature

from policies.canonical import canonical_bytes, parse_json_object
from policies.document import Policy, policy_from_object
from policies.ed25519 import verify_ed25519
from policies.errors import PolicyDocumentError, PolicySignatureError

DOMAIN_PREFIX = b"\xffwaiaas/"
POLICY_PURPOSE = "policy"
_PURPOSE = re.compile(r"^[a-z][a-z0-9-]{0,31}\Z")


def document_sha256(document: dict[str, Any]) -> bytes:
    """SHA-256 of a signed document's canonical bytes: what the owner's signature covers after the purpose, so the
    same for every serialization of the envelope. For a policy it is the policy hash (``Policy.canonical``'s); the
    enclave's order receipts name orders and policies by it (`enclave_app.order_receipts`)."""
    return hashlib.sha256(canonical_bytes(document)).digest()


def signing_payload(purpose: str, document: dict[str, Any]) -> bytes:
    """The exact bytes an owner signs for ``document`` of kind ``purpose``."""
    if not _PURPOSE.match(purpose):
        raise ValueError(f"invalid signing purpose {purpose!r}")
    return DOMAIN_PREFIX + purpose.encode() + b"\x00" + document_sha256(document)


def verify_owner_signature(payload: bytes, signature: bytes, owner: Pubkey) -> None:
    """Raise `PolicySignatureError` unless ``signature`` is the owner's Ed25519 signature over ``payload``."""
    if not verify_ed25519(bytes(owner), signature, payload):  # strict: see `policies.ed25519`
        raise PolicySignatureError


def sign_document(purpose: str, document: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """Sign with a local owner key and return the envelope. (Owner tooling; KMS signing produces the same.)"""
    signature = key.sign(signing_payload(purpose, document))
    return {"document": document, "signature": str(Signature.from_bytes(signature))}


def open_envelope(data: bytes | str, purpose: str, owner: Pubkey) -> dict[str, Any]:
    """Parse a signed envelope and verify its signature; return the document object.

    The signature is checked before the document's contents are interpreted; the caller still validates them.
    """
    envelope = parse_json_object(data, what="envelope")
    for key in envelope:
        if key not in ("document", "signature"):
            raise PolicyDocumentError(f"envelope.{key}", "unknown field")
    document = envelope.get("document")
    encoded = envelope.get("signature")
    if not isinstance(document, dict):
        raise PolicyDocumentError("envelope.document", "must be an object")
    if not isinstance(encoded, str) or not 64 <= len(encoded) <= 88:
        raise PolicyDocumentError("envelope.signature", "must be a base58 Ed25519 signature")
    try:
        signature = bytes(Signature.from_string(encoded))
    except ValueError as exc:
        raise PolicyDocumentError("envelope.signature", "must be a base58 Ed25519 signature") from exc
    verify_owner_signature(signing_payload(purpose, document), signature, owner)
    return document


def load_signed_policy(data: bytes | str, *, owner: Pubkey, wallet_id: str) -> Policy:
    """Verify the owner's signature on a policy envelope, validate the policy and check it is for ``wallet_id``.

    The caller still has to refuse a policy whose sequence is not above the one it has installed.
    """
    policy = policy_from_object(open_envelope(data, POLICY_PURPOSE, owner))
    if policy.wallet_id != wallet_id:
        raise PolicyDocumentError("wallet_id", f"policy is for wallet {policy.wallet_id!r}, not {wallet_id!r}")
    return policy
