"""The enclave protocol: a closed set of request and response messages, and a closed set of error codes.

Wire format: each frame (:mod:`enclave_app.framing`) carries one CBOR map ``{"v": 1, "type": <name>, ...}``
whose other keys are exactly the message's fields, every field present (an optional field is ``null``). Decoding
is strict: an unknown ``type``, a missing or extra key, a wrong type or an out-of-range size raises
:class:`~enclave_app.errors.ProtocolError`, which the server answers with ``ErrorCode.BAD_REQUEST``. One request,
one response per connection exchange; the enclave never sends anything unasked.

Requests -> responses (an :class:`ErrorResponse` can answer any request)::

    ping                {}                                             -> status
    attestation         nonce                                          -> attestation (mode, document, reason,
                                                                          session_public_key)
    provision_wallet    wallet_id, owner_public_key                    -> wallet
    load_wallet         wallet_id, owner_public_key, agent_public_key,
                        sealed_blob                                    -> wallet
    install_policy      wallet_id, signed_policy (JSON envelope bytes) -> policy_installed
    sign_transaction    wallet_id, transaction, lookup_tables, spent,
                        requests_in_window, denials_in_window,
                        approval (JSON envelope bytes or null)         -> transaction_decision
    sign_message        wallet_id, message (Solana off-chain message)  -> message_signature
    freeze / unfreeze   wallet_id, order (JSON envelope bytes)         -> wallet_frozen

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

API (stable; used by ``parent_proxy``): the message dataclasses below, :class:`ErrorCode`, :class:`EnclaveState`,
``Message.to_wire()``, :func:`decode_request`, :func:`decode_response`, and the client in
:mod:`enclave_app.client`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from enclave_app.errors import ProtocolError
from policies.offchain import MAX_EXTENDED_MESSAGE_BYTES
from policies.transaction import MAX_TRANSACTION_BYTES

PROTOCOL_VERSION = 1

MAX_WALLET_ID_CHARS = 128
"""Same bound as :data:`enclave_app.sealing.MAX_WALLET_ID_CHARS`."""
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MIN_NONCE_BYTES = 16
MAX_NONCE_BYTES = 64
"""Attestation nonce from the caller (ours: 128..512 bits; the NSM accepts up to 1024 bytes)."""
MAX_SEALED_BLOB_BYTES = 4096
"""Same bound as :data:`enclave_app.sealing.MAX_SEALED_BLOB_BYTES`."""
MAX_POLICY_BYTES = 64 * 1024
"""A signed policy envelope (ours: the example is ~2 KiB; 64 KiB fits long allowlists)."""
MAX_ORDER_BYTES = 4096
"""A signed freeze/unfreeze/approval envelope (ours: a few hundred bytes)."""
MAX_LOOKUP_TABLES = 32
MAX_LOOKUP_TABLE_ADDRESSES = 256
"""solana address-lookup-table program: LOOKUP_TABLE_MAX_ADDRESSES = 256."""
MAX_SPENT_ENTRIES = 64
MAX_ASSET_CHARS = 64
MAX_WINDOW_SECONDS = 366 * 24 * 3600
MAX_AMOUNT = 2**64 - 1
"""Lamports and SPL token amounts are u64."""
MAX_COUNT = 2**32 - 1
MAX_ERROR_MESSAGE_CHARS = 256
MAX_DOCUMENT_BYTES = 16 * 1024
"""An attestation document (ours: the NSM's are ~4.5 KiB)."""
MAX_REASON_CHARS = 256
"""Why there is no attestation (ours: one sentence)."""
MAX_RECEIPT_BYTES = 4096
MAX_SIGNED_TRANSACTION_BYTES = MAX_TRANSACTION_BYTES


class ErrorCode(StrEnum):
    """The closed set of error codes. Messages that go with them are short fixed phrases, never secrets."""

    BAD_FRAME = "bad_frame"  # not a frame, not CBOR, or over MAX_FRAME_BYTES
    BAD_REQUEST = "bad_request"  # not a message of the protocol (type, fields, sizes)
    BUSY = "busy"  # connection limit reached
    TIMEOUT = "timeout"  # the request did not arrive in time
    FAILED = "failed"  # the enclave is in the failed state and refuses everything
    WRONG_STATE = "wrong_state"  # not possible in the enclave's current state
    UNKNOWN_WALLET = "unknown_wallet"
    WALLET_EXISTS = "wallet_exists"
    WALLET_LIMIT = "wallet_limit"
    WALLET_FROZEN = "wallet_frozen"
    NO_POLICY = "no_policy"
    POLICY_INVALID = "policy_invalid"  # bad signature, bad document, wrong wallet
    POLICY_STALE = "policy_stale"  # sequence not above the installed one
    ORDER_INVALID = "order_invalid"  # freeze/unfreeze/approval: bad signature, content, expiry
    ORDER_STALE = "order_stale"  # sequence not above the last accepted one
    MESSAGE_INVALID = "message_invalid"  # off-chain message does not decode
    UNSEAL_FAILED = "unseal_failed"  # opaque: blob, KMS answer or key mismatch
    KMS_UNAVAILABLE = "kms_unavailable"  # a KMS call failed (network, throttling, malformed answer)
    ATTESTATION_REFUSED = "attestation_refused"  # KMS AccessDenied: attestation not accepted by the key policy
    NSM_UNAVAILABLE = "nsm_unavailable"
    LEDGER_FULL = "ledger_full"  # the per-boot counters cannot take another entry
    INTERNAL = "internal"


class AttestationMode(StrEnum):
    NITRO = "nitro"  # a COSE_Sign1 document from the NSM (or the unsafe-development stand-in, which proves nothing)
    NONE = "none"  # self-hosted without a Nitro Enclave: no document, and a reason that says so


class EnclaveState(StrEnum):
    BOOTING = "booting"  # no wallet key held yet
    PROVISIONED = "provisioned"  # wallet keys held, no policy installed
    READY = "ready"  # at least one wallet can sign
    FROZEN = "frozen"  # every wallet held is frozen
    FAILED = "failed"  # an inconsistency was detected: everything is refused until restart


# -- field checks ------------------------------------------------------------------------------------------------

Check = Callable[[Any], Any]


def _bytes(low: int, high: int) -> Check:
    def check(value: Any) -> bytes:
        if type(value) is not bytes or not low <= len(value) <= high:
            raise ProtocolError("byte field of wrong type or size")
        return value

    return check


def _text(low: int, high: int) -> Check:
    def check(value: Any) -> str:
        if type(value) is not str or not low <= len(value) <= high:
            raise ProtocolError("text field of wrong type or size")
        return value

    return check


def _uint(high: int) -> Check:
    def check(value: Any) -> int:
        if type(value) is not int or not 0 <= value <= high:
            raise ProtocolError("integer field of wrong type or range")
        return value

    return check


def _flag(value: Any) -> bool:
    if type(value) is not bool:
        raise ProtocolError("boolean field of wrong type")
    return value


def _optional(inner: Check) -> Check:
    def check(value: Any) -> Any:
        return None if value is None else inner(value)

    return check


def _sequence(inner: Check, high: int) -> Check:
    def check(value: Any) -> tuple[Any, ...]:
        kind = type(value)
        if (kind is not list and kind is not tuple) or len(value) > high:
            raise ProtocolError("array field of wrong type or size")
        return tuple([inner(item) for item in value])

    return check


def _enum(kind: type[StrEnum]) -> Check:
    def check(value: Any) -> Any:
        if type(value) is not str and not isinstance(value, kind):
            raise ProtocolError("enumerated field of wrong type")
        try:
            return kind(value)
        except ValueError as exc:
            raise ProtocolError("enumerated field out of range") from exc

    return check


_VERDICTS = frozenset({"allow", "escalate", "deny", "freeze"})
_TEXT_KEY = frozenset({str})


def _is_map(value: Any) -> bool:
    # A decoded frame holds plain dicts; the ABC check is the (slower) general case.
    return type(value) is dict or isinstance(value, Mapping)


def _decision(value: Any) -> dict[str, Any]:
    if not _is_map(value) or not _TEXT_KEY.issuperset(map(type, value)):
        raise ProtocolError("decision must be a map with text keys")
    verdict, reasons = value.get("verdict"), value.get("reasons")
    reasons_ok = type(reasons) is list or type(reasons) is tuple
    if type(verdict) is not str or verdict not in _VERDICTS or not reasons_ok:
        raise ProtocolError("decision lacks a verdict or reasons")
    return dict(value)


_WALLET_ID = _text(1, MAX_WALLET_ID_CHARS)
_PUBLIC_KEY = _bytes(PUBLIC_KEY_BYTES, PUBLIC_KEY_BYTES)
_SIGNATURE = _bytes(SIGNATURE_BYTES, SIGNATURE_BYTES)
_COUNT = _uint(MAX_COUNT)


def _record(kind: type[_Record]) -> Check:
    def check(value: Any) -> _Record:
        if type(value) is kind:
            return value
        if not _is_map(value) or value.keys() != kind._NAMES:
            raise ProtocolError(f"{kind.__name__} has missing or extra fields")
        return kind(*[field_check(value[name]) for name, field_check in kind.FIELDS])

    return check


_WIRE_SCALARS = frozenset({bytes, str, int, bool, type(None), dict})
"""Values that go on the wire as they are (``dict``: a decision, already checked)."""


def _encode(value: Any) -> Any:
    if type(value) in _WIRE_SCALARS:
        return value
    if isinstance(value, _Record):
        return value.to_wire()
    if isinstance(value, tuple):
        return [_encode(item) for item in value]
    if isinstance(value, StrEnum):
        return value.value
    return value


class _Record:
    """Base of every wire structure: ``FIELDS`` names each field and its check, in order."""

    FIELDS: ClassVar[tuple[tuple[str, Check], ...]] = ()
    LEGACY_ABSENT: ClassVar[frozenset[str]] = frozenset()
    """Fields added later, which an older peer leaves out all together (their dataclass defaults apply). A map
    must have either every field or every field except exactly these; nothing in between."""
    _NAMES: ClassVar[frozenset[str]] = frozenset()
    _WIRE_NAMES: ClassVar[frozenset[str]] = frozenset()
    """``_NAMES`` plus ``v`` and ``type``: the exact key set of a message's wire map."""

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls._NAMES = frozenset(name for name, _ in cls.FIELDS)
        cls._WIRE_NAMES = cls._NAMES | {"v", "type"}

    def check_fields_together(self) -> None:
        """Checks across fields (after each field's own check), on decoding and on encoding; raise
        :class:`ProtocolError`. Most messages have none."""

    def fields_to_wire(self) -> dict[str, Any]:
        # Encoding checks the values too: a malformed message is refused before it leaves either side.
        self.check_fields_together()
        return {name: _encode(check(getattr(self, name))) for name, check in self.FIELDS}

    def to_wire(self) -> dict[str, Any]:
        return self.fields_to_wire()


class Message(_Record):
    """Base of requests and responses: the wire map adds ``v`` and ``type``."""

    TYPE: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        # fields_to_wire with ``v`` and ``type`` first, built as one dict (this runs for every answer).
        self.check_fields_together()
        wire: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": self.TYPE}
        for name, check in self.FIELDS:
            wire[name] = _encode(check(getattr(self, name)))
        return wire


# -- nested records --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LookupTable(_Record):
    """Trusted contents of one address lookup table (the parent read them from its RPC; the enclave only uses
    them to resolve indices, and the evaluation judges the resolved accounts)."""

    address: bytes
    addresses: tuple[bytes, ...]
    FIELDS = (("address", _PUBLIC_KEY), ("addresses", _sequence(_PUBLIC_KEY, MAX_LOOKUP_TABLE_ADDRESSES)))


@dataclass(frozen=True, slots=True)
class SpentEntry(_Record):
    """The parent's committed-plus-reserved total for one (asset, window) of the policy."""

    asset: str
    window_seconds: int
    amount: int
    FIELDS = (
        ("asset", _text(1, MAX_ASSET_CHARS)),
        ("window_seconds", _uint(MAX_WINDOW_SECONDS)),
        ("amount", _uint(MAX_AMOUNT)),
    )


# -- requests --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PingRequest(Message):
    TYPE = "ping"
    FIELDS = ()


@dataclass(frozen=True, slots=True)
class AttestationRequest(Message):
    nonce: bytes
    TYPE = "attestation"
    FIELDS = (("nonce", _bytes(MIN_NONCE_BYTES, MAX_NONCE_BYTES)),)


@dataclass(frozen=True, slots=True)
class ProvisionWalletRequest(Message):
    wallet_id: str
    owner_public_key: bytes
    TYPE = "provision_wallet"
    FIELDS = (("wallet_id", _WALLET_ID), ("owner_public_key", _PUBLIC_KEY))


@dataclass(frozen=True, slots=True)
class LoadWalletRequest(Message):
    """``agent_public_key`` is the pinned key (from the on-chain multisig / the owner's records): the enclave
    refuses a blob that opens to any other key."""

    wallet_id: str
    owner_public_key: bytes
    agent_public_key: bytes
    sealed_blob: bytes
    TYPE = "load_wallet"
    FIELDS = (
        ("wallet_id", _WALLET_ID),
        ("owner_public_key", _PUBLIC_KEY),
        ("agent_public_key", _PUBLIC_KEY),
        ("sealed_blob", _bytes(1, MAX_SEALED_BLOB_BYTES)),
    )


@dataclass(frozen=True, slots=True)
class InstallPolicyRequest(Message):
    wallet_id: str
    signed_policy: bytes
    TYPE = "install_policy"
    FIELDS = (("wallet_id", _WALLET_ID), ("signed_policy", _bytes(1, MAX_POLICY_BYTES)))


@dataclass(frozen=True, slots=True)
class SignTransactionRequest(Message):
    wallet_id: str
    transaction: bytes
    lookup_tables: tuple[LookupTable, ...] = ()
    spent: tuple[SpentEntry, ...] = ()
    requests_in_window: int = 0
    denials_in_window: int = 0
    approval: bytes | None = None
    TYPE = "sign_transaction"
    FIELDS = (
        ("wallet_id", _WALLET_ID),
        ("transaction", _bytes(1, MAX_TRANSACTION_BYTES)),
        ("lookup_tables", _sequence(_record(LookupTable), MAX_LOOKUP_TABLES)),
        ("spent", _sequence(_record(SpentEntry), MAX_SPENT_ENTRIES)),
        ("requests_in_window", _COUNT),
        ("denials_in_window", _COUNT),
        ("approval", _optional(_bytes(1, MAX_ORDER_BYTES))),
    )


@dataclass(frozen=True, slots=True)
class SignMessageRequest(Message):
    wallet_id: str
    message: bytes
    TYPE = "sign_message"
    FIELDS = (("wallet_id", _WALLET_ID), ("message", _bytes(1, MAX_EXTENDED_MESSAGE_BYTES)))


@dataclass(frozen=True, slots=True)
class FreezeRequest(Message):
    wallet_id: str
    order: bytes
    TYPE = "freeze"
    FIELDS = (("wallet_id", _WALLET_ID), ("order", _bytes(1, MAX_ORDER_BYTES)))


@dataclass(frozen=True, slots=True)
class UnfreezeRequest(Message):
    wallet_id: str
    order: bytes
    TYPE = "unfreeze"
    FIELDS = (("wallet_id", _WALLET_ID), ("order", _bytes(1, MAX_ORDER_BYTES)))


# -- responses -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusResponse(Message):
    state: EnclaveState
    wallets: int
    session_public_key: bytes
    TYPE = "status"
    FIELDS = (("state", _enum(EnclaveState)), ("wallets", _COUNT), ("session_public_key", _PUBLIC_KEY))


@dataclass(frozen=True, slots=True)
class AttestationResponse(Message):
    """``nitro``: ``document`` is a COSE_Sign1 from the NSM carrying the caller's nonce and the session public
    key, ``reason`` null. ``none``: ``document`` null, ``reason`` says why there is no attestation, and
    ``session_public_key`` is set (there is no document to carry it). See the module docstring."""

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
    LEGACY_ABSENT = frozenset({"mode", "reason", "session_public_key"})

    def check_fields_together(self) -> None:
        if self.mode is AttestationMode.NITRO:
            if self.document is None or self.reason is not None:
                raise ProtocolError("nitro attestation needs a document and no reason")
        elif self.document is not None or self.reason is None or self.session_public_key is None:
            raise ProtocolError("attestation mode none needs a reason and a session key, and no document")


@dataclass(frozen=True, slots=True)
class WalletResponse(Message):
    """Answer to provisioning (``sealed_blob`` set: the parent stores it) and loading (``sealed_blob`` null)."""

    wallet_id: str
    agent_public_key: bytes
    sealed_blob: bytes | None
    TYPE = "wallet"
    FIELDS = (
        ("wallet_id", _WALLET_ID),
        ("agent_public_key", _PUBLIC_KEY),
        ("sealed_blob", _optional(_bytes(1, MAX_SEALED_BLOB_BYTES))),
    )


@dataclass(frozen=True, slots=True)
class PolicyInstalledResponse(Message):
    wallet_id: str
    sequence: int
    policy_hash: bytes
    TYPE = "policy_installed"
    FIELDS = (("wallet_id", _WALLET_ID), ("sequence", _uint(MAX_AMOUNT)), ("policy_hash", _bytes(32, 32)))


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


@dataclass(frozen=True, slots=True)
class MessageSignatureResponse(Message):
    signature: bytes
    receipt: bytes
    receipt_signature: bytes
    TYPE = "message_signature"
    FIELDS = (("signature", _SIGNATURE), ("receipt", _bytes(1, MAX_RECEIPT_BYTES)), ("receipt_signature", _SIGNATURE))


@dataclass(frozen=True, slots=True)
class WalletFrozenResponse(Message):
    wallet_id: str
    frozen: bool
    order_sequence: int
    TYPE = "wallet_frozen"
    FIELDS = (("wallet_id", _WALLET_ID), ("frozen", _flag), ("order_sequence", _uint(MAX_AMOUNT)))


@dataclass(frozen=True, slots=True)
class ErrorResponse(Message):
    code: ErrorCode
    message: str
    TYPE = "error"
    FIELDS = (("code", _enum(ErrorCode)), ("message", _text(0, MAX_ERROR_MESSAGE_CHARS)))


Request = (
    PingRequest
    | AttestationRequest
    | ProvisionWalletRequest
    | LoadWalletRequest
    | InstallPolicyRequest
    | SignTransactionRequest
    | SignMessageRequest
    | FreezeRequest
    | UnfreezeRequest
)
Response = (
    StatusResponse
    | AttestationResponse
    | WalletResponse
    | PolicyInstalledResponse
    | TransactionDecisionResponse
    | MessageSignatureResponse
    | WalletFrozenResponse
    | ErrorResponse
)

REQUEST_TYPES: Mapping[str, type[Message]] = {
    kind.TYPE: kind
    for kind in (
        PingRequest, AttestationRequest, ProvisionWalletRequest, LoadWalletRequest, InstallPolicyRequest,
        SignTransactionRequest, SignMessageRequest, FreezeRequest, UnfreezeRequest,
    )
}  # fmt: skip
RESPONSE_TYPES: Mapping[str, type[Message]] = {
    kind.TYPE: kind
    for kind in (
        StatusResponse, AttestationResponse, WalletResponse, PolicyInstalledResponse, TransactionDecisionResponse,
        MessageSignatureResponse, WalletFrozenResponse, ErrorResponse,
    )
}  # fmt: skip

EXPECTED_RESPONSE: Mapping[type[Message], type[Message]] = {
    PingRequest: StatusResponse,
    AttestationRequest: AttestationResponse,
    ProvisionWalletRequest: WalletResponse,
    LoadWalletRequest: WalletResponse,
    InstallPolicyRequest: PolicyInstalledResponse,
    SignTransactionRequest: TransactionDecisionResponse,
    SignMessageRequest: MessageSignatureResponse,
    FreezeRequest: WalletFrozenResponse,
    UnfreezeRequest: WalletFrozenResponse,
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
    # The older shape of a message that gained fields: every field but exactly LEGACY_ABSENT.
    absent = kind.LEGACY_ABSENT
    if not absent or value.keys() != kind._WIRE_NAMES - absent:
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
