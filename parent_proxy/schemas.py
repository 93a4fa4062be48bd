"""HTTP request and response bodies (pydantic, at the I/O edge only). Requests are strict: unknown fields,
wrong types and out-of-range sizes are refused with 422 ``invalid_request``."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from enclave_app.receipts import (
    AGENT_KEY_RECEIPT_DOMAIN,
    ORDER_RECEIPT_DOMAIN,
    PROVISION_RECEIPT_DOMAIN,
    RECEIPT_DOMAIN,
)
from parent_proxy.api_errors import ApiError, Code
from parent_proxy.errors import WebhookError
from parent_proxy.webhook_urls import check_webhook_url
from policies.identifiers import WALLET_ID_PATTERN, WALLET_ID_RULE

if TYPE_CHECKING:
    from parent_proxy.multisig_conformance import ConformanceReport

BASE58_KEY = r"^[1-9A-HJ-NP-Za-km-z]{32,44}$"
BASE64 = r"^[A-Za-z0-9+/]*={0,2}$"
WALLET_ID = WALLET_ID_PATTERN
"""The enclave and the policy documents take the same wallet ids (`policies.identifiers`)."""
MAX_TRANSACTION_BASE64 = 1644
"""4 * ceil(1232 / 3): the base64 length of the largest transaction (MAX_TRANSACTION_BYTES = 1232)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SignTransactionBody(_Strict):
    transaction: str = Field(min_length=4, max_length=MAX_TRANSACTION_BASE64, pattern=BASE64)
    idempotency_key: str = Field(pattern=r"^[\x21-\x7e]{1,200}$")
    lookup_tables: list[str] = Field(default_factory=list, max_length=32)
    submit: bool = False


class SignMessageBody(_Strict):
    message: str = Field(min_length=4, max_length=16_384, pattern=BASE64)


class ErrorDetail(BaseModel):
    code: Code  # the stable codes (docs/api.md, Errors): the schema lists them
    message: str
    reasons: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def signed_over(domain: bytes, encoding: str) -> str:
    """The description of a receipt signature: the session key signs the receipt's domain prefix followed by the
    receipt bytes (`enclave_app.receipts`), never the receipt alone; the prefix shown escaped and in hex."""
    escaped = domain.decode("latin-1").encode("unicode_escape").decode()
    return (
        f"the enclave session key's Ed25519 signature ({encoding}) over the domain prefix b'{escaped}' (hex "
        f"{domain.hex()}) followed by the receipt bytes: a plain Ed25519 check over the receipt alone fails"
    )


class Receipt(BaseModel):
    """A decision receipt (`enclave_app.receipts`) as a signing answer carries it."""

    receipt: str = Field(description="the enclave's decision receipt (CBOR, base64; fields in docs/enclave.md)")
    signature: str = Field(description=signed_over(RECEIPT_DOMAIN, "base58"))
    session_public_key: str | None = Field(
        default=None,
        description="the enclave session key (base58) the proxy verified the receipt under: the key of the enclave "
        "that signed. Fetch that enclave's attestation with GET /v1/attestation?nonce=HEX&session_public_key=this "
        "(another host answers 404 session_key_not_here: ask again). Absent from answers stored before the field",
    )


class AgentKeyReceipt(BaseModel):
    """An agent-key receipt (`enclave_app.receipts`, docs/rotation.md)."""

    receipt: str = Field(description="the enclave's agent-key receipt (CBOR, base64)")
    signature: str = Field(description=signed_over(AGENT_KEY_RECEIPT_DOMAIN, "base58"))


class Submission(BaseModel):
    submitted: bool
    signature: str | None = None
    error: str | None = None


class SignedTransaction(BaseModel):
    status: Literal["signed"]
    request_id: str
    signature: str
    signed_transaction: str
    decision: dict[str, Any]
    receipt: Receipt
    submission: Submission | None


class PendingApproval(BaseModel):
    status: Literal["pending_approval"]
    request_id: str
    approval_id: str
    decision: dict[str, Any]


class SignedMessage(BaseModel):
    signature: str
    receipt: Receipt


class LimitLeft(BaseModel):
    asset: str = Field(description='"SOL", a mint address, or "fees" (the fees the wallet pays: rules.fees.periods)')
    window_seconds: int
    spent: str
    automatic_left: str
    approval_left: str


class WalletView(BaseModel):
    wallet_id: str
    agent_public_key: str
    owner_public_key: str
    vault_address: str
    frozen: bool
    frozen_reason: str | None
    policy_sequence: int
    order_sequence: int = Field(description="the last owner freeze or unfreeze order accepted (0: none yet)")
    policy_sha256: str | None = Field(
        description="SHA-256 of the policy envelope as stored (the audit record's policy_sha256); not what receipts "
        "state: see policy_document_sha256"
    )
    policy_document_sha256: str | None = Field(
        description="SHA-256 of the installed policy's canonical document (`policies.signing.document_sha256`): the "
        "policy_hash the enclave's decision receipts state, and what the owner computes from the policy they signed "
        "(GET /v1/wallets/{id}/policy gives the signed envelope); null without a policy"
    )
    policy_expires_at: int | None = Field(
        description="Unix seconds from which the installed policy denies everything (null: it does not expire)"
    )
    squads_multisig: str | None = Field(
        description="the Squads v4 multisig the installed policy declares (rules.squads_multisig), whose on-chain "
        "threshold and spending limits bound the agent key; null: no policy, or one that declares none, so nothing "
        "on chain bounds the agent key (a proxy run with WAIAAS_REQUIRE_MULTISIG=false, or a policy installed "
        "before the proxy required one)"
    )
    limits: list[LimitLeft]


class AttestationView(BaseModel):
    document: str | None = Field(description="COSE_Sign1 attestation document, base64; null in mode none")
    mode: Literal["nitro", "none"] = Field(
        description="nitro (a document to verify) or none (self-hosted without a Nitro Enclave)"
    )
    reason: str | None = Field(description="mode none: why there is no attestation; null in mode nitro")
    session_public_key: str
    enclave_state: str


_CARRIED_ATTESTATION = (
    "asked with ?nonce=HEX: the attestation of the enclave that made this answer, over that nonce, taken just before "
    "(verify the receipt with it: the waiaas owner verify-* command without --attestation; with several hosts a "
    "separate GET /v1/attestation may come from another host); null without a nonce"
)


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    enclave: str
    store: str


# -- owner ---------------------------------------------------------------------------------------------------------


class CreateWalletBody(_Strict):
    wallet_id: str = Field(pattern=WALLET_ID, description=WALLET_ID_RULE)
    owner_public_key: str = Field(pattern=BASE58_KEY)
    vault_address: str | None = Field(default=None, pattern=BASE58_KEY)


class CreatedWallet(BaseModel):
    wallet_id: str
    agent_public_key: str
    vault_address: str
    provision_receipt: str | None = Field(
        description="the enclave's provisioning receipt (CBOR, base64): binds wallet_id, agent key and owner key, "
        "signed by the attested session key; verify it (waiaas owner verify-wallet) before adding the agent key "
        "on chain. Null only from an enclave too old to issue one"
    )
    provision_receipt_signature: str | None = Field(
        description=signed_over(PROVISION_RECEIPT_DOMAIN, "base64") + "; null exactly when the receipt is"
    )
    attestation: AttestationView | None = Field(default=None, description=_CARRIED_ATTESTATION)


class SignedEnvelope(_Strict):
    document: dict[str, Any]
    signature: str = Field(min_length=64, max_length=88, pattern=BASE58_KEY.replace("32,44", "64,88"))


class EnvelopeBody(_Strict):
    envelope: SignedEnvelope


class IssuedTokenView(BaseModel):
    token_id: str
    token: str = Field(description="shown once; only its hash is stored")


_ORDER_RECEIPT = (
    "the enclave's order receipt (CBOR, base64; `enclave_app.order_receipts`): signed by the session key, it names "
    "the wallet, the order's purpose, sequence and document hash, and the wallet's frozen flag and policy hash after "
    "it. Verify it (waiaas owner verify-order) before relying on the enclave having the order: without it, "
    "{flag} is the parent's word. Null when the enclave did not acknowledge the order, or answered without a receipt"
)
_RECEIPT_SIGNATURE = signed_over(ORDER_RECEIPT_DOMAIN, "base64") + "; null exactly when the receipt is"
_SESSION_KEY = (
    "the enclave session key (base58) the proxy verified the receipt under, for comparison with the attestation you "
    "verify the receipt with; null without a receipt, or when the key in force has changed since"
)


class PolicyInstalled(BaseModel):
    wallet_id: str
    sequence: int
    policy_sha256: str = Field(description="SHA-256 of the envelope as stored (the audit record's policy_sha256)")
    enclave_installed: bool
    receipt: str | None = Field(description=_ORDER_RECEIPT.format(flag="enclave_installed"))
    receipt_signature: str | None = Field(description=_RECEIPT_SIGNATURE)
    session_public_key: str | None = Field(description=_SESSION_KEY)


class ApprovalDecided(BaseModel):
    status: Literal["rejected", "signed"]
    approval_id: str
    transaction: SignedTransaction | None = None


class FreezeState(BaseModel):
    wallet_id: str
    frozen: bool
    enclave_acknowledged: bool
    order_sequence: int = Field(description="this order's sequence, now the last accepted: the next must be above it")
    receipt: str | None = Field(description=_ORDER_RECEIPT.format(flag="enclave_acknowledged"))
    receipt_signature: str | None = Field(description=_RECEIPT_SIGNATURE)
    session_public_key: str | None = Field(description=_SESSION_KEY)


class HostOrderReceipt(BaseModel):
    sequence: int = Field(description="the stored sequence of the wallet's last owner order of this kind (0: none)")
    receipt: str | None = Field(
        description=_ORDER_RECEIPT.format(flag="the store's state").replace(
            "Null when the enclave did not acknowledge the order, or answered without a receipt",
            "Null when this host's enclave session has no receipt of it (see docs/api.md, Order receipts)",
        )
    )
    receipt_signature: str | None = Field(description=_RECEIPT_SIGNATURE)
    session_public_key: str | None = Field(description=_SESSION_KEY)


class HostOrderReceipts(BaseModel):
    wallet_id: str
    frozen: bool = Field(description="the store's flag (the parent's word)")
    order: HostOrderReceipt = Field(description="the wallet's last freeze or unfreeze order")
    policy: HostOrderReceipt = Field(description="the wallet's installed policy")
    attestation: AttestationView = Field(
        description="the attestation of the enclave that answered, over your nonce: verify the receipts with it "
        "(waiaas owner verify-order --answer this-answer, without --attestation)"
    )


class WebhookBody(_Strict):
    url: str = Field(pattern=r"^https?://[\x21-\x7e]{1,2000}$")  # printable ASCII only: no spaces or controls
    secret: str = Field(min_length=24, max_length=344, pattern=BASE64, description="16-256 bytes, base64")

    @field_validator("url")
    @classmethod
    def _sendable(cls, url: str) -> str:
        """The checks of `parent_proxy.webhook_urls.check_webhook_url` (httpx can send to it; no numeric host
        forms, no metadata, link-local, multicast, reserved or unspecified address)."""
        try:
            check_webhook_url(url)
        except WebhookError as exc:
            raise ValueError(str(exc)) from exc
        return url


class PendingApprovalView(BaseModel):
    approval_id: str
    created_at: float
    request_sha256: str
    request: dict[str, Any]


def decode_base64(field: str, text: str) -> bytes:
    """Strict base64 (the pattern above allows only the alphabet; padding and length are checked here)."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(Code.INVALID_REQUEST, f"{field}: not valid base64") from exc


# -- agent-key rotation (parent_proxy.api_agent_key) -----------------------------------------------------------


class AgentKeyCandidateView(BaseModel):
    wallet_id: str
    agent_public_key: str = Field(description="the wallet's agent key the candidate will replace")
    candidate_public_key: str = Field(description="the new key: add it to the multisig in the rotation transaction")
    receipt: AgentKeyReceipt = Field(
        description="agent-key receipt (purpose agent_key_candidate) by the enclave session key"
    )
    attestation: AttestationView | None = Field(default=None, description=_CARRIED_ATTESTATION)


class AgentKeyRotationBody(_Strict):
    transaction: str = Field(min_length=4, max_length=MAX_TRANSACTION_BASE64, pattern=BASE64)
    envelope: SignedEnvelope = Field(description="the owner's agent-key-rotation order for exactly this message")


class AgentKeyRotationSigned(BaseModel):
    wallet_id: str
    message_sha256: str
    signature: str = Field(description="the current agent key's signature, base58")
    signed_transaction: str = Field(description="the transaction with it in place (the owner's slot untouched), base64")
    receipt: AgentKeyReceipt = Field(description="agent-key receipt (purpose agent_key_rotation) naming the message")


class AgentKeySwitched(BaseModel):
    wallet_id: str
    agent_public_key: str = Field(description="the key the wallet signs with from now on")
    previous_agent_public_key: str = Field(description="the retired key (its sealed blob is kept)")
    receipt: AgentKeyReceipt = Field(description="agent-key receipt (purpose agent_key_switch)")


class RetiredAgentKeyView(BaseModel):
    agent_public_key: str
    retired_at: float


class AgentKeyStatus(BaseModel):
    wallet_id: str
    agent_public_key: str
    candidate_public_key: str | None = Field(description="set while a rotation is under way")
    retired: list[RetiredAgentKeyView]


class MultisigCheckView(BaseModel):
    id: str = Field(description="stable check id (`parent_proxy.multisig_conformance`)")
    subject: str = Field(description="the account checked: the multisig or one of its spending limits")
    ok: bool
    seen: str
    expected: str


class MultisigConformance(BaseModel):
    wallet_id: str
    multisig: str
    conforms: bool = Field(description="every check is ok")
    checks: list[MultisigCheckView] = Field(
        description="the multisig's eight checks and four per spending limit; when no account is at the declared "
        "address, only a failed `multisig.exists`"
    )

    @classmethod
    def of(cls, wallet_id: str, report: ConformanceReport) -> MultisigConformance:
        """The report as the API answers it and ``waiaas owner check-multisig`` prints it (either way it is read)."""
        return cls(
            wallet_id=wallet_id, multisig=str(report.multisig), conforms=report.conforms,
            checks=[MultisigCheckView(id=c.id, subject=c.subject, ok=c.ok, seen=c.seen, expected=c.expected)
                    for c in report.checks],
        )  # fmt: skip
