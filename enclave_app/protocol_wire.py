"""Building blocks of the enclave protocol (:mod:`enclave_app.protocol`): size limits, the closed enums (error
codes, attestation modes, enclave states), the strict field checks, and the base records every message builds on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from enclave_app.errors import ProtocolError
from policies.document import MAX_SPEND_WINDOWS
from policies.fastinit import fast_init
from policies.identifiers import WALLET_ID_RULE, is_wallet_id
from policies.transaction import MAX_TRANSACTION_BYTES

PROTOCOL_VERSION = 1
SESSION_USER_DATA = b"waiaas-enclave-session-v1"
"""``user_data`` of every attestation document: says that ``public_key`` is the receipt-signing session key."""

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
MAX_SPENT_ENTRIES = MAX_SPEND_WINDOWS
"""A signing request carries the spent total of each of the policy's windows (`policies.document`)."""
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
MIN_ACCESS_KEY_ID_CHARS = 16
MAX_ACCESS_KEY_ID_CHARS = 128
"""IAM: an access key id is 16 to 128 characters (``ASIA...`` for temporary credentials, 20 today)."""
MAX_SECRET_ACCESS_KEY_CHARS = 128
"""A secret access key (40 characters today)."""
MAX_SESSION_TOKEN_CHARS = 8192
"""A session token (an instance role's is about 1 000 to 1 300 characters; STS sets no documented maximum, and a
role session with many tags is larger)."""


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
    POLICY_STALE = "policy_stale"  # sequence not above the installed one, or the policy has expired
    MULTISIG_REQUIRED = "multisig_required"  # the policy declares no Squads multisig; the enclave requires one
    ORDER_INVALID = "order_invalid"  # freeze/unfreeze/approval: bad signature, content, expiry
    ORDER_STALE = "order_stale"  # sequence not above the last accepted one
    MESSAGE_INVALID = "message_invalid"  # off-chain message does not decode, or the policy refuses it
    UNSEAL_FAILED = "unseal_failed"  # opaque: blob, KMS answer or key mismatch
    KMS_UNAVAILABLE = "kms_unavailable"  # a KMS call failed (network, throttling, malformed answer)
    ATTESTATION_REFUSED = "attestation_refused"  # KMS AccessDenied: attestation not accepted by the key policy
    NSM_UNAVAILABLE = "nsm_unavailable"
    LEDGER_FULL = "ledger_full"  # the per-boot counters cannot take another entry
    ROTATION_INVALID = "rotation_invalid"  # agent-key rotation: the transaction is not the membership change ordered
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


def _wallet_id(value: Any) -> str:
    # The wallet-id rule of the proxy's API and of policies (`policies.identifiers`): a parent talking to the
    # enclave directly gets no other id into a receipt, the sealed state or the owner's terminal.
    if not is_wallet_id(value):
        raise ProtocolError(f"wallet_id is not {WALLET_ID_RULE}")
    return value


_WALLET_ID = _wallet_id
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
    ADDED_LATER: ClassVar[tuple[frozenset[str], ...]] = ()
    """Fields added after the first version, one set per later generation, oldest first. A peer built before a
    generation leaves its fields out all together, and those of every later one (their dataclass defaults apply):
    a map must have every field, or every field but those of one generation and all after it; nothing else."""
    _NAMES: ClassVar[frozenset[str]] = frozenset()
    _WIRE_NAMES: ClassVar[frozenset[str]] = frozenset()
    """``_NAMES`` plus ``v`` and ``type``: the exact key set of a message's wire map."""
    _OLDER_SHAPES: ClassVar[dict[frozenset[str], frozenset[str]]] = {}
    """The key set of each older shape -> the fields it leaves out."""

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls._NAMES = frozenset(name for name, _ in cls.FIELDS)
        cls._WIRE_NAMES = cls._NAMES | {"v", "type"}
        later = cls.ADDED_LATER
        absent = [frozenset().union(*later[i:]) for i in range(len(later))]
        cls._OLDER_SHAPES = {cls._WIRE_NAMES - left_out: left_out for left_out in absent}

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
        # The fields of the latest generations, while all of a generation's are null: left out, so that a peer
        # built before them reads the message (an older shape); every shape decodes here.
        for generation in reversed(self.ADDED_LATER):
            if any(wire[name] is not None for name in generation):
                break
            for name in generation:
                del wire[name]
        return wire


# -- nested records --------------------------------------------------------------------------------------------


@fast_init
@dataclass(frozen=True, slots=True)
class LookupTable(_Record):
    """Contents of one address lookup table as the parent read them from its RPC. Untrusted: the enclave resolves
    lookups from the owner's pins in the policy and only cross-checks these (`policies.lookup_tables`)."""

    address: bytes
    addresses: tuple[bytes, ...]
    FIELDS = (("address", _PUBLIC_KEY), ("addresses", _sequence(_PUBLIC_KEY, MAX_LOOKUP_TABLE_ADDRESSES)))


@dataclass(frozen=True, slots=True)
class AwsCredentials(_Record):
    """Temporary AWS credentials the parent lends the enclave for its KMS calls (DESIGN section 7): the host role's,
    useless without an attestation document because the seal key's policy requires one. Sent with
    ``provision_wallet`` and ``load_wallet`` only, used for that one request and never stored. The secret parts are
    kept out of ``repr`` (and so out of any log or error message that formats a request)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    FIELDS = (
        ("access_key_id", _text(MIN_ACCESS_KEY_ID_CHARS, MAX_ACCESS_KEY_ID_CHARS)),
        ("secret_access_key", _text(1, MAX_SECRET_ACCESS_KEY_CHARS)),
        ("session_token", _text(1, MAX_SESSION_TOKEN_CHARS)),
    )


@fast_init
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
