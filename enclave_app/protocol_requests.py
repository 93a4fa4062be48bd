"""The request messages of the enclave protocol (:mod:`enclave_app.protocol` documents the wire format and the
stable API; the responses are in :mod:`enclave_app.protocol_responses`): frozen dataclasses whose ``FIELDS`` name
each field's strict check, in wire order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from enclave_app.protocol_wire import (
    _COUNT,
    _PUBLIC_KEY,
    _WALLET_ID,
    MAX_LOOKUP_TABLES,
    MAX_NONCE_BYTES,
    MAX_ORDER_BYTES,
    MAX_POLICY_BYTES,
    MAX_SEALED_BLOB_BYTES,
    MAX_SPENT_ENTRIES,
    MIN_NONCE_BYTES,
    AwsCredentials,
    LookupTable,
    Message,
    SpentEntry,
    _bytes,
    _optional,
    _record,
    _sequence,
    _uint,
)
from policies.fastinit import fast_init
from policies.offchain import MAX_EXTENDED_MESSAGE_BYTES
from policies.orders import MAX_SEQUENCE as MAX_ORDER_SEQUENCE
from policies.transaction import MAX_TRANSACTION_BYTES


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
    """``aws_credentials``: the parent's temporary credentials for the KMS sealer (null for the local sealer)."""

    wallet_id: str
    owner_public_key: bytes
    aws_credentials: AwsCredentials | None = field(default=None, repr=False)
    TYPE = "provision_wallet"
    FIELDS = (
        ("wallet_id", _WALLET_ID),
        ("owner_public_key", _PUBLIC_KEY),
        ("aws_credentials", _optional(_record(AwsCredentials))),
    )
    ADDED_LATER = (frozenset({"aws_credentials"}),)


@dataclass(frozen=True, slots=True)
class LoadWalletRequest(Message):
    """``agent_public_key`` is the pinned key (from the on-chain multisig / the owner's records): the enclave
    refuses a blob that opens to any other key. ``aws_credentials`` as in :class:`ProvisionWalletRequest`.
    ``frozen_at_order``: the parent holds the wallet frozen, and the last owner freeze order it accepted had this
    sequence (0: none); the enclave then holds it frozen too and refuses owner orders not above that sequence (what
    a restart made it forget). Only ever a restriction: null changes nothing, and nothing here unfreezes."""

    wallet_id: str
    owner_public_key: bytes
    agent_public_key: bytes
    sealed_blob: bytes
    aws_credentials: AwsCredentials | None = field(default=None, repr=False)
    frozen_at_order: int | None = None
    TYPE = "load_wallet"
    FIELDS = (
        ("wallet_id", _WALLET_ID),
        ("owner_public_key", _PUBLIC_KEY),
        ("agent_public_key", _PUBLIC_KEY),
        ("sealed_blob", _bytes(1, MAX_SEALED_BLOB_BYTES)),
        ("aws_credentials", _optional(_record(AwsCredentials))),
        ("frozen_at_order", _optional(_uint(MAX_ORDER_SEQUENCE))),
    )
    ADDED_LATER = (frozenset({"aws_credentials"}), frozenset({"frozen_at_order"}))


@dataclass(frozen=True, slots=True)
class DiscardWalletRequest(Message):
    """Drop a wallet whose provisioning the parent could not store (an orphan, which would refuse its id until a
    restart): only a wallet with no policy installed and not frozen, and only when ``agent_public_key`` is its agent
    key. It loses only the enclave's copy: a sealed blob the parent did store loads the key again."""

    wallet_id: str
    agent_public_key: bytes
    TYPE = "discard_wallet"
    FIELDS = (("wallet_id", _WALLET_ID), ("agent_public_key", _PUBLIC_KEY))


@dataclass(frozen=True, slots=True)
class InstallPolicyRequest(Message):
    wallet_id: str
    signed_policy: bytes
    TYPE = "install_policy"
    FIELDS = (("wallet_id", _WALLET_ID), ("signed_policy", _bytes(1, MAX_POLICY_BYTES)))


@fast_init
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


@fast_init
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


@dataclass(frozen=True, slots=True)
class PrepareAgentKeyRequest(Message):
    """Agent-key rotation, step 1: make and seal a candidate key for a loaded wallet (nothing else changes)."""

    wallet_id: str
    aws_credentials: AwsCredentials | None = field(default=None, repr=False)
    TYPE = "prepare_agent_key"
    FIELDS = (("wallet_id", _WALLET_ID), ("aws_credentials", _optional(_record(AwsCredentials))))


@dataclass(frozen=True, slots=True)
class SignAgentKeyRotationRequest(Message):
    """Agent-key rotation, step 2: the current agent key co-signs the Squads membership change ``transaction``,
    under the owner's ``order`` (purpose ``agent-key-rotation``) and only for a candidate ``candidate_sealed_blob``
    opens to (proof that the enclave made it for this wallet)."""

    wallet_id: str
    transaction: bytes
    order: bytes
    candidate_sealed_blob: bytes
    aws_credentials: AwsCredentials | None = field(default=None, repr=False)
    TYPE = "sign_agent_key_rotation"
    FIELDS = (
        ("wallet_id", _WALLET_ID),
        ("transaction", _bytes(1, MAX_TRANSACTION_BYTES)),
        ("order", _bytes(1, MAX_ORDER_BYTES)),
        ("candidate_sealed_blob", _bytes(1, MAX_SEALED_BLOB_BYTES)),
        ("aws_credentials", _optional(_record(AwsCredentials))),
    )


@dataclass(frozen=True, slots=True)
class SwitchAgentKeyRequest(Message):
    """Agent-key rotation, step 3: under the owner's ``order`` (purpose ``agent-key-switch``) the wallet signs
    with the candidate from now on; its policy, freeze and ledger stay."""

    wallet_id: str
    order: bytes
    candidate_sealed_blob: bytes
    aws_credentials: AwsCredentials | None = field(default=None, repr=False)
    TYPE = "switch_agent_key"
    FIELDS = (
        ("wallet_id", _WALLET_ID),
        ("order", _bytes(1, MAX_ORDER_BYTES)),
        ("candidate_sealed_blob", _bytes(1, MAX_SEALED_BLOB_BYTES)),
        ("aws_credentials", _optional(_record(AwsCredentials))),
    )


Request = (
    PingRequest
    | AttestationRequest
    | ProvisionWalletRequest
    | LoadWalletRequest
    | DiscardWalletRequest
    | InstallPolicyRequest
    | SignTransactionRequest
    | SignMessageRequest
    | FreezeRequest
    | UnfreezeRequest
    | PrepareAgentKeyRequest
    | SignAgentKeyRotationRequest
    | SwitchAgentKeyRequest
)
