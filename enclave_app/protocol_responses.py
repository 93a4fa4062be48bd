"""The response messages of the enclave protocol (:mod:`enclave_app.protocol` documents the wire format and the
stable API; the requests are in :mod:`enclave_app.protocol_requests`): frozen dataclasses whose ``FIELDS`` name
each field's strict check, in wire order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from enclave_app.errors import ProtocolError
from enclave_app.protocol_wire import (
    _COUNT,
    _PUBLIC_KEY,
    _SIGNATURE,
    _WALLET_ID,
    MAX_AMOUNT,
    MAX_DOCUMENT_BYTES,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_REASON_CHARS,
    MAX_RECEIPT_BYTES,
    MAX_SEALED_BLOB_BYTES,
    MAX_SIGNED_TRANSACTION_BYTES,
    AttestationMode,
    EnclaveState,
    ErrorCode,
    Message,
    _bytes,
    _decision,
    _enum,
    _flag,
    _optional,
    _text,
    _uint,
)
from policies.fastinit import fast_init


def _receipt_pair(receipt: bytes | None, signature: bytes | None, what: str) -> None:
    if (receipt is None) != (signature is None):
        raise ProtocolError(f"{what} has a receipt and its signature, or neither")


@dataclass(frozen=True, slots=True)
class StatusResponse(Message):
    """``requires_multisig``: the enclave's ``WAIAAS_ENCLAVE_REQUIRE_MULTISIG`` (it refuses policies that declare no
    Squads multisig). A later generation: an enclave built before it leaves it out (decoded as null: it does not
    refuse them)."""

    state: EnclaveState
    wallets: int
    session_public_key: bytes
    requires_multisig: bool | None = None
    TYPE = "status"
    FIELDS = (
        ("state", _enum(EnclaveState)),
        ("wallets", _COUNT),
        ("session_public_key", _PUBLIC_KEY),
        ("requires_multisig", _optional(_flag)),
    )
    ADDED_LATER = (frozenset({"requires_multisig"}),)


@dataclass(frozen=True, slots=True)
class AttestationResponse(Message):
    """``nitro``: ``document`` is a COSE_Sign1 from the NSM carrying the caller's nonce and the session public
    key, ``reason`` null. ``none``: ``document`` null, ``reason`` says why there is no attestation, and
    ``session_public_key`` is set (there is no document to carry it). See :mod:`enclave_app.protocol`."""

    document: bytes | None
    mode: AttestationMode = AttestationMode.NITRO
    reason: str | None = None
    session_public_key: bytes | None = None
    TYPE = "attestation"
    FIELDS = (
        ("document", _optional(_bytes(1, MAX_DOCUMENT_BYTES))),
        ("mode", _enum(AttestationMode)),
        ("reason", _optional(_text(1, MAX_REASON_CHARS))),
        ("session_public_key", _optional(_PUBLIC_KEY)),
    )
    ADDED_LATER = (frozenset({"mode", "reason", "session_public_key"}),)

    def check_fields_together(self) -> None:
        if self.mode is AttestationMode.NITRO:
            if self.document is None or self.reason is not None:
                raise ProtocolError("nitro attestation needs a document and no reason")
        elif self.document is not None or self.reason is None or self.session_public_key is None:
            raise ProtocolError("attestation mode none needs a reason and a session key, and no document")


@dataclass(frozen=True, slots=True)
class WalletResponse(Message):
    """Answer to provisioning (``sealed_blob`` set: the parent stores it) and loading (``sealed_blob`` null).

    ``receipt`` / ``receipt_signature``: on provisioning, a provisioning receipt
    (:class:`enclave_app.receipts.ProvisionReceipt`) binding wallet, agent key and owner key, signed by the
    session key; null on loading. Both set or both null. An older enclave leaves both fields out (decoded as
    null)."""

    wallet_id: str
    agent_public_key: bytes
    sealed_blob: bytes | None
    receipt: bytes | None = None
    receipt_signature: bytes | None = None
    TYPE = "wallet"
    FIELDS = (
        ("wallet_id", _WALLET_ID),
        ("agent_public_key", _PUBLIC_KEY),
        ("sealed_blob", _optional(_bytes(1, MAX_SEALED_BLOB_BYTES))),
        ("receipt", _optional(_bytes(1, MAX_RECEIPT_BYTES))),
        ("receipt_signature", _optional(_SIGNATURE)),
    )
    ADDED_LATER = (frozenset({"receipt", "receipt_signature"}),)

    def check_fields_together(self) -> None:
        _receipt_pair(self.receipt, self.receipt_signature, "a wallet answer")


@dataclass(frozen=True, slots=True)
class PolicyInstalledResponse(Message):
    """``receipt`` / ``receipt_signature``: an order receipt of purpose ``policy``
    (:class:`enclave_app.order_receipts.OrderReceipt`) signed by the session key; both set or both null. An older
    enclave leaves both fields out (decoded as null)."""

    wallet_id: str
    sequence: int
    policy_hash: bytes
    receipt: bytes | None = None
    receipt_signature: bytes | None = None
    TYPE = "policy_installed"
    FIELDS = (
        ("wallet_id", _WALLET_ID),
        ("sequence", _uint(MAX_AMOUNT)),
        ("policy_hash", _bytes(32, 32)),
        ("receipt", _optional(_bytes(1, MAX_RECEIPT_BYTES))),
        ("receipt_signature", _optional(_SIGNATURE)),
    )
    ADDED_LATER = (frozenset({"receipt", "receipt_signature"}),)

    def check_fields_together(self) -> None:
        _receipt_pair(self.receipt, self.receipt_signature, "a policy answer")


@fast_init
@dataclass(frozen=True, slots=True)
class TransactionDecisionResponse(Message):
    """``signature`` and ``signed_transaction`` are set exactly when the verdict is allow (or an escalation
    the owner approved); the receipt is always there, signed by the session key."""

    decision: dict[str, Any]
    signature: bytes | None
    signed_transaction: bytes | None
    receipt: bytes
    receipt_signature: bytes
    TYPE = "transaction_decision"
    FIELDS = (
        ("decision", _decision),
        ("signature", _optional(_SIGNATURE)),
        ("signed_transaction", _optional(_bytes(1, MAX_SIGNED_TRANSACTION_BYTES))),
        ("receipt", _bytes(1, MAX_RECEIPT_BYTES)),
        ("receipt_signature", _SIGNATURE),
    )


@fast_init
@dataclass(frozen=True, slots=True)
class MessageSignatureResponse(Message):
    signature: bytes
    receipt: bytes
    receipt_signature: bytes
    TYPE = "message_signature"
    FIELDS = (("signature", _SIGNATURE), ("receipt", _bytes(1, MAX_RECEIPT_BYTES)), ("receipt_signature", _SIGNATURE))


@dataclass(frozen=True, slots=True)
class WalletFrozenResponse(Message):
    """``receipt`` / ``receipt_signature``: an order receipt of purpose ``freeze`` or ``unfreeze``
    (:class:`enclave_app.order_receipts.OrderReceipt`) signed by the session key; both set or both null. An older
    enclave leaves both fields out (decoded as null)."""

    wallet_id: str
    frozen: bool
    order_sequence: int
    receipt: bytes | None = None
    receipt_signature: bytes | None = None
    TYPE = "wallet_frozen"
    FIELDS = (
        ("wallet_id", _WALLET_ID),
        ("frozen", _flag),
        ("order_sequence", _uint(MAX_AMOUNT)),
        ("receipt", _optional(_bytes(1, MAX_RECEIPT_BYTES))),
        ("receipt_signature", _optional(_SIGNATURE)),
    )
    ADDED_LATER = (frozenset({"receipt", "receipt_signature"}),)

    def check_fields_together(self) -> None:
        _receipt_pair(self.receipt, self.receipt_signature, "a freeze answer")


@dataclass(frozen=True, slots=True)
class AgentKeyResponse(Message):
    """Answer to ``prepare_agent_key`` (``sealed_blob`` set: the candidate, for the parent to keep) and to
    ``switch_agent_key`` (``sealed_blob`` null). ``receipt``: an agent-key receipt
    (:class:`enclave_app.receipts.AgentKeyReceipt`, purpose ``agent_key_candidate`` / ``agent_key_switch``)."""

    wallet_id: str
    agent_public_key: bytes
    new_agent_public_key: bytes
    sealed_blob: bytes | None
    receipt: bytes
    receipt_signature: bytes
    TYPE = "agent_key"
    FIELDS = (
        ("wallet_id", _WALLET_ID),
        ("agent_public_key", _PUBLIC_KEY),
        ("new_agent_public_key", _PUBLIC_KEY),
        ("sealed_blob", _optional(_bytes(1, MAX_SEALED_BLOB_BYTES))),
        ("receipt", _bytes(1, MAX_RECEIPT_BYTES)),
        ("receipt_signature", _SIGNATURE),
    )


@dataclass(frozen=True, slots=True)
class AgentKeyRotationResponse(Message):
    """Answer to ``sign_agent_key_rotation``: the current agent key's signature, the transaction with it in place,
    and an agent-key receipt of purpose ``agent_key_rotation`` naming the message."""

    signature: bytes
    signed_transaction: bytes
    receipt: bytes
    receipt_signature: bytes
    TYPE = "agent_key_rotation"
    FIELDS = (
        ("signature", _SIGNATURE),
        ("signed_transaction", _bytes(1, MAX_SIGNED_TRANSACTION_BYTES)),
        ("receipt", _bytes(1, MAX_RECEIPT_BYTES)),
        ("receipt_signature", _SIGNATURE),
    )


@dataclass(frozen=True, slots=True)
class ErrorResponse(Message):
    code: ErrorCode
    message: str
    TYPE = "error"
    FIELDS = (("code", _enum(ErrorCode)), ("message", _text(0, MAX_ERROR_MESSAGE_CHARS)))


Response = (
    StatusResponse
    | AttestationResponse
    | WalletResponse
    | PolicyInstalledResponse
    | TransactionDecisionResponse
    | MessageSignatureResponse
    | WalletFrozenResponse
    | AgentKeyResponse
    | AgentKeyRotationResponse
    | ErrorResponse
)
