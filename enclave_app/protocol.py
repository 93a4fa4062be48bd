"""The enclave protocol: a closed set of request and response messages, and a closed set of error codes.

Wire format: each frame (:mod:`enclave_app.framing`) carries one CBOR map ``{"v": 1, "type": <name>, ...}``
whose other keys are exactly the message's fields, every field present (an optional field is ``null``), except
that fields added later (``ADDED_LATER``, by generation) are left out when they and every field of their own and
of every later generation are null, so an older peer still reads it; a decoder takes every such shape. Decoding is
strict: an unknown ``type``, a missing or extra key, a wrong type or an out-of-range size raises
:class:`~enclave_app.errors.ProtocolError`, which the server answers with ``ErrorCode.BAD_REQUEST``. One request,
one response per connection exchange; the enclave never sends anything unasked.

Requests -> responses (an :class:`ErrorResponse` can answer any request)::

    ping                {}                                             -> status (state, wallets, session_public_key,
                                                                          requires_multisig)
    attestation         nonce                                          -> attestation (mode, document, reason,
                                                                          session_public_key)
    provision_wallet    wallet_id, owner_public_key, aws_credentials   -> wallet (wallet_id, agent_public_key,
                                                                          sealed_blob, receipt, receipt_signature)
    load_wallet         wallet_id, owner_public_key, agent_public_key,
                        sealed_blob, aws_credentials, frozen_at_order  -> wallet (sealed_blob, receipt and
                                                                          receipt_signature null)
    discard_wallet      wallet_id, agent_public_key                    -> status (an unfrozen, policy-less wallet gone)
    install_policy      wallet_id, signed_policy (JSON envelope bytes) -> policy_installed (sequence, policy_hash,
                                                                          receipt, receipt_signature)
    sign_transaction    wallet_id, transaction, lookup_tables, spent,
                        requests_in_window, denials_in_window,
                        approval (JSON envelope bytes or null)         -> transaction_decision
    sign_message        wallet_id, message (Solana off-chain message)  -> message_signature
    freeze / unfreeze   wallet_id, order (JSON envelope bytes)         -> wallet_frozen (frozen, order_sequence,
                                                                          receipt, receipt_signature)
    prepare_agent_key   wallet_id, aws_credentials                     -> agent_key (sealed_blob set)
    sign_agent_key_rotation
                        wallet_id, transaction, order,
                        candidate_sealed_blob, aws_credentials         -> agent_key_rotation
    switch_agent_key    wallet_id, order, candidate_sealed_blob,
                        aws_credentials                                -> agent_key (sealed_blob null)

Byte fields are CBOR byte strings; public keys are 32 raw bytes; amounts are unsigned integers (raw units).
``spent`` entries are the parent's view of (asset, window_seconds) -> amount: the enclave takes the larger of
that and its own per-boot ledger, so the parent can lower no limit. ``decision`` is
``policies.decision.Decision.to_json()``. ``receipt`` is CBOR bytes (:mod:`enclave_app.receipts`) and
``receipt_signature`` the session key's Ed25519 signature over it (the session public key is in the attestation
document's ``public_key`` and in ``status``).

``attestation`` answers in one of two modes (:class:`AttestationMode`): ``nitro`` - ``document`` is a COSE_Sign1
from the NSM carrying the caller's nonce and the session key, ``reason`` is null; ``none`` (self-hosted, no Nitro
Enclave) - ``document`` is null and ``reason`` a fixed human-readable sentence saying why there is no attestation.
``session_public_key`` is the receipt-signing key in both (in ``nitro`` mode, trust the one inside the verified
document). Compatibility: an enclave built before ``mode`` existed sends only ``document``; that exact older
shape still decodes (as ``nitro``, ``session_public_key`` null), so parents can be upgraded before enclaves.

``status`` carries ``requires_multisig``, the enclave's ``WAIAAS_ENCLAVE_REQUIRE_MULTISIG``: with it true,
``install_policy`` refuses a policy whose ``rules.squads_multisig`` is null with ``multisig_required`` (and changes
nothing), so the parent can refuse such a policy before storing it. Compatibility: a later generation of
``status``; an enclave built before it sends no such field (decoded as null: an enclave that does not refuse them),
and a parent built before it cannot read the answer of one that sends it, nor the ``multisig_required`` code
(upgrade the parent first).

``aws_credentials`` (:class:`AwsCredentials`: ``access_key_id``, ``secret_access_key``, ``session_token``, or
null) are the parent's temporary AWS credentials for the KMS sealer's calls, used for that request only (DESIGN
section 7); the local sealer needs none. Compatibility: a parent built before this field sends neither key; that
older shape decodes with null.

``wallet`` answering ``provision_wallet`` carries a provisioning receipt (``receipt``, CBOR,
:class:`enclave_app.receipts.ProvisionReceipt`: purpose ``provision``, wallet_id, agent and owner public keys, time)
and the session key's signature over it, so the owner can verify that the agent key was made for their owner key.
Compatibility: an enclave built before these fields sends neither; that older shape decodes with both null.

``policy_installed`` and ``wallet_frozen`` carry an order receipt (``receipt``, CBOR,
:class:`enclave_app.order_receipts.OrderReceipt`: purpose, wallet, the order's sequence and document hash, the
wallet's frozen flag and policy hash after it, time, counter) and the session key's signature over it, so the owner
can verify that the order reached the enclave. Compatibility: a later generation of both messages; an enclave built
before it sends neither field, and that older shape decodes with both null (upgrade the parent first).

API (stable; used by ``parent_proxy``): the message dataclasses below, :class:`ErrorCode`, :class:`EnclaveState`,
``Message.to_wire()``, :func:`decode_request`, :func:`decode_response`, and the client in
:mod:`enclave_app.client`. The messages are defined in :mod:`enclave_app.protocol_requests` and
:mod:`enclave_app.protocol_responses`, their building blocks (limits, enums, field checks) in
:mod:`enclave_app.protocol_wire`; import them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from enclave_app.errors import ProtocolError
from enclave_app.protocol_requests import (
    AttestationRequest,
    DiscardWalletRequest,
    FreezeRequest,
    InstallPolicyRequest,
    LoadWalletRequest,
    PingRequest,
    PrepareAgentKeyRequest,
    ProvisionWalletRequest,
    Request,
    SignAgentKeyRotationRequest,
    SignMessageRequest,
    SignTransactionRequest,
    SwitchAgentKeyRequest,
    UnfreezeRequest,
)
from enclave_app.protocol_responses import (
    AgentKeyResponse,
    AgentKeyRotationResponse,
    AttestationResponse,
    ErrorResponse,
    MessageSignatureResponse,
    PolicyInstalledResponse,
    Response,
    StatusResponse,
    TransactionDecisionResponse,
    WalletFrozenResponse,
    WalletResponse,
)
from enclave_app.protocol_wire import (
    MAX_AMOUNT,
    MAX_ASSET_CHARS,
    MAX_COUNT,
    MAX_DOCUMENT_BYTES,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_LOOKUP_TABLE_ADDRESSES,
    MAX_LOOKUP_TABLES,
    MAX_NONCE_BYTES,
    MAX_ORDER_BYTES,
    MAX_POLICY_BYTES,
    MAX_REASON_CHARS,
    MAX_RECEIPT_BYTES,
    MAX_SEALED_BLOB_BYTES,
    MAX_SIGNED_TRANSACTION_BYTES,
    MAX_SPENT_ENTRIES,
    MAX_WINDOW_SECONDS,
    MIN_NONCE_BYTES,
    PROTOCOL_VERSION,
    PUBLIC_KEY_BYTES,
    SESSION_USER_DATA,
    SIGNATURE_BYTES,
    AttestationMode,
    AwsCredentials,
    Check,
    EnclaveState,
    ErrorCode,
    LookupTable,
    Message,
    SpentEntry,
    _is_map,
)
from policies.identifiers import MAX_WALLET_ID_CHARS

__all__ = [
    "EXPECTED_RESPONSE",
    "MAX_AMOUNT",
    "MAX_ASSET_CHARS",
    "MAX_COUNT",
    "MAX_DOCUMENT_BYTES",
    "MAX_ERROR_MESSAGE_CHARS",
    "MAX_LOOKUP_TABLES",
    "MAX_LOOKUP_TABLE_ADDRESSES",
    "MAX_NONCE_BYTES",
    "MAX_ORDER_BYTES",
    "MAX_POLICY_BYTES",
    "MAX_REASON_CHARS",
    "MAX_RECEIPT_BYTES",
    "MAX_SEALED_BLOB_BYTES",
    "MAX_SIGNED_TRANSACTION_BYTES",
    "MAX_SPENT_ENTRIES",
    "MAX_WALLET_ID_CHARS",
    "MAX_WINDOW_SECONDS",
    "MIN_NONCE_BYTES",
    "PROTOCOL_VERSION",
    "PUBLIC_KEY_BYTES",
    "REQUEST_TYPES",
    "RESPONSE_TYPES",
    "SESSION_USER_DATA",
    "SIGNATURE_BYTES",
    "AgentKeyResponse",
    "AgentKeyRotationResponse",
    "AttestationMode",
    "AttestationRequest",
    "AttestationResponse",
    "AwsCredentials",
    "Check",
    "DiscardWalletRequest",
    "EnclaveState",
    "ErrorCode",
    "ErrorResponse",
    "FreezeRequest",
    "InstallPolicyRequest",
    "LoadWalletRequest",
    "LookupTable",
    "Message",
    "MessageSignatureResponse",
    "PingRequest",
    "PolicyInstalledResponse",
    "PrepareAgentKeyRequest",
    "ProvisionWalletRequest",
    "Request",
    "Response",
    "SignAgentKeyRotationRequest",
    "SignMessageRequest",
    "SignTransactionRequest",
    "SpentEntry",
    "StatusResponse",
    "SwitchAgentKeyRequest",
    "TransactionDecisionResponse",
    "UnfreezeRequest",
    "WalletFrozenResponse",
    "WalletResponse",
    "decode_request",
    "decode_response",
]

REQUEST_TYPES: Mapping[str, type[Message]] = {
    kind.TYPE: kind
    for kind in (
        PingRequest, AttestationRequest, ProvisionWalletRequest, LoadWalletRequest, DiscardWalletRequest,
        InstallPolicyRequest, SignTransactionRequest, SignMessageRequest, FreezeRequest, UnfreezeRequest,
        PrepareAgentKeyRequest, SignAgentKeyRotationRequest, SwitchAgentKeyRequest,
    )
}  # fmt: skip
RESPONSE_TYPES: Mapping[str, type[Message]] = {
    kind.TYPE: kind
    for kind in (
        StatusResponse, AttestationResponse, WalletResponse, PolicyInstalledResponse, TransactionDecisionResponse,
        MessageSignatureResponse, WalletFrozenResponse, AgentKeyResponse, AgentKeyRotationResponse, ErrorResponse,
    )
}  # fmt: skip

EXPECTED_RESPONSE: Mapping[type[Message], type[Message]] = {
    PingRequest: StatusResponse,
    AttestationRequest: AttestationResponse,
    ProvisionWalletRequest: WalletResponse,
    LoadWalletRequest: WalletResponse,
    DiscardWalletRequest: StatusResponse,
    InstallPolicyRequest: PolicyInstalledResponse,
    SignTransactionRequest: TransactionDecisionResponse,
    SignMessageRequest: MessageSignatureResponse,
    FreezeRequest: WalletFrozenResponse,
    UnfreezeRequest: WalletFrozenResponse,
    PrepareAgentKeyRequest: AgentKeyResponse,
    SignAgentKeyRotationRequest: AgentKeyRotationResponse,
    SwitchAgentKeyRequest: AgentKeyResponse,
}
"""The one success response each request can get (besides :class:`ErrorResponse`)."""

M = TypeVar("M", bound=Message)


def _decode(value: Any, registry: Mapping[str, type[M]]) -> M:
    # 1. A map; 2. our version (an int, not a bool); 3. a type of this registry; 4. exactly its keys;
    # 5. every field through its check (the dataclass is built positionally, in FIELDS order).
    if not _is_map(value):
        raise ProtocolError("message must be a CBOR map")
    version = value.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError("unsupported protocol version")
    name = value.get("type")
    kind = registry.get(name) if type(name) is str else None
    if kind is None:
        raise ProtocolError("unknown message type")
    if value.keys() != kind._WIRE_NAMES:
        return _decode_legacy(value, kind)
    message = kind(*[check(value[field]) for field, check in kind.FIELDS])
    message.check_fields_together()
    return message


def _decode_legacy(value: Mapping[str, Any], kind: type[M]) -> M:
    # An older shape of a message that gained fields: every field but those of its later generations.
    absent = kind._OLDER_SHAPES.get(frozenset(value.keys()))
    if absent is None:
        raise ProtocolError("message has missing or extra fields")
    message = kind(**{field: check(value[field]) for field, check in kind.FIELDS if field not in absent})
    message.check_fields_together()
    return message


def decode_request(value: Any) -> Request:
    """A request from a decoded frame, or :class:`ProtocolError`."""
    return _decode(value, REQUEST_TYPES)  # type: ignore[return-value]


def decode_response(value: Any) -> Response:
    """A response from a decoded frame, or :class:`ProtocolError`."""
    return _decode(value, RESPONSE_TYPES)  # type: ignore[return-value]
