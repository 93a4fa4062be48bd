"""What an enclave receipt must state, checked alike by the proxy as the answer arrives
(`parent_proxy.enclave_sessions`) and by the auditor on the record the proxy wrote from it
(`parent_proxy.audit_receipts`).

A decision receipt (`enclave_app.receipts`) must be of the expected kind, name the wallet, be about the message
sent (its SHA-256, compared in constant time), state a signature exactly when one came, and for a transaction agree
with the enclave's decision (verdict, policy sequence, reasons by their digest): `Expected`,
`check_receipt_statement`. Every kind of receipt (decision, agent-key, order) must also be dated within
`RECEIPT_TIME_TOLERANCE_SECONDS` of the proxy's clock or of its record's time (`check_receipt_time`).
`ReceiptExpectation` is how each kind is verified and checked, by the proxy and by the auditor. In the audit log a
receipt is stored followed by its signature (`split_receipt`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from enclave_app.errors import ReceiptError
from enclave_app.receipts import Receipt, reasons_digest, verify_receipt
from parent_proxy.audit import canonical_json
from parent_proxy.errors import InvalidInput

R_co = TypeVar("R_co", covariant=True)

SIGNING_VERDICTS = frozenset({"allow"})
"""A receipt states a signature when its verdict is one of these, or when ``approved`` (an approved escalation)."""
RECEIPT_SIGNATURE_BYTES = 64
"""An audit record's receipt field holds the receipt followed by its 64-byte Ed25519 signature."""
RECEIPT_TIME_TOLERANCE_SECONDS = 300
"""Largest difference between a receipt's time (the enclave's clock) and the proxy's clock when the answer arrives,
or the time of the audit record written just after: clock skew between enclave and parent (the default
owner-request skew, `WAIAAS_OWNER_MAX_SKEW_SECONDS`), not a delay (both clocks are read within one request)."""


class ReceiptClockSkew(ReceiptError):
    """The receipt's time (the enclave's clock) is too far from the proxy's (`RECEIPT_TIME_TOLERANCE_SECONDS`)."""


class UnrecordableDecision(ReceiptError):
    """The answer's decision is not plain JSON data, so the audit log could not record it as it came."""


def states_signature(receipt: Receipt) -> bool:
    """Whether the receipt says the enclave signed (verdict allow, or an escalation the owner approved)."""
    return receipt.verdict in SIGNING_VERDICTS or receipt.approved


@dataclass(frozen=True, slots=True)
class Expected:
    """What a receipt must state: what the answer it came with says (the proxy), or the record written from it (the
    auditor).

    ``kind``: ``transaction`` or ``message``. ``message_hash``: the SHA-256 of what the enclave hashes
    (`enclave_app.receipts`): for a transaction its message bytes (`parent_proxy.sign_parts.message_hash`), for an
    off-chain message the whole message as sent (the proxy: of what it sent; the auditor: the record's
    ``message_sha256``). ``signed``: whether a signature came with it. ``decision``: the enclave's decision (a map)
    for a transaction, ``None`` for a message."""

    kind: str
    wallet_id: str
    message_hash: bytes
    signed: bool
    decision: object

    def verify(self, receipt: bytes, signature: bytes, session_public_key: bytes) -> Receipt:
        """The receipt, if ``session_public_key`` signed it as a decision receipt (else `ReceiptError`)."""
        return verify_receipt(receipt, signature, session_public_key)

    def check(self, stated: object, *, at: float) -> None:
        """:func:`check_receipt_content` on a verified decision receipt; then `UnrecordableDecision` unless the
        decision is plain JSON data (it goes into the audit record as it came: refused here, not when recorded)."""
        if not isinstance(stated, Receipt):
            raise ReceiptError("not a decision receipt")
        check_receipt_content(stated, self, at=at)
        if self.decision is not None:
            try:
                canonical_json(self.decision)
            except InvalidInput as exc:
                raise UnrecordableDecision("decision is not plain JSON data") from exc


class ReceiptExpectation(Protocol[R_co]):
    """What one kind of receipt (``R_co``) must state: :class:`Expected` (decision receipts),
    `parent_proxy.agent_key_receipts.ExpectedAgentKey` or `parent_proxy.order_receipts.ExpectedOrder`. ``verify``
    checks the signature under a session key and decodes (`ReceiptError`); ``check`` compares the decoded receipt
    with the answer or record (`ReceiptError`, `ReceiptClockSkew` for the time)."""

    def verify(self, receipt: bytes, signature: bytes, session_public_key: bytes) -> R_co: ...

    def check(self, stated: object, *, at: float) -> None: ...


def check_receipt_content(receipt: Receipt, expected: Expected, *, at: float) -> None:
    """Raise `ReceiptError` unless ``receipt`` states what ``expected`` says. The same rules for the proxy, when the
    answer arrives, and for the auditor, on the record the proxy wrote from it: :func:`check_receipt_statement`, and
    the receipt's time is within :data:`RECEIPT_TIME_TOLERANCE_SECONDS` of ``at`` (seconds since the epoch: the
    proxy's clock when the answer arrived, or the record's time)."""
    check_receipt_statement(receipt, expected)
    check_receipt_time(receipt.time_ms, at=at)


def check_receipt_statement(receipt: Receipt, expected: Expected) -> None:
    """Raise `ReceiptError` unless the receipt is of the expected kind, names the wallet, is about the message, and
    states a signature exactly when one came; a transaction receipt comes with the enclave's decision, whose verdict,
    policy sequence and reasons (by their digest) are the receipt's. Its time is not looked at: also the check of an
    agent verifying its answer later (`parent_proxy.agent_receipts`)."""
    kind, decision = expected.kind, expected.decision
    if receipt.kind != kind:
        raise ReceiptError(f"receipt of kind {receipt.kind!r}, expected {kind!r}")
    if receipt.wallet_id != expected.wallet_id:
        raise ReceiptError("receipt names another wallet")
    if not hmac.compare_digest(receipt.message_hash, expected.message_hash):
        raise ReceiptError("receipt is about another message")
    if states_signature(receipt) != expected.signed:
        raise ReceiptError("receipt states no signature" if expected.signed else "receipt states a signature")
    if kind == "transaction" and not isinstance(decision, dict):
        raise ReceiptError("transaction receipt without the enclave's decision")
    if isinstance(decision, dict):
        _agrees_with_decision(receipt, decision)


def check_receipt_time(time_ms: int, *, at: float) -> None:
    """`ReceiptClockSkew` unless a receipt's time (ms) is within :data:`RECEIPT_TIME_TOLERANCE_SECONDS` of ``at``."""
    if not abs(at - time_ms / 1000) <= RECEIPT_TIME_TOLERANCE_SECONDS:
        raise ReceiptClockSkew(
            f"receipt time and the proxy's clock differ by more than {RECEIPT_TIME_TOLERANCE_SECONDS} s"
        )


def _agrees_with_decision(receipt: Receipt, decision: dict[str, Any]) -> None:
    if receipt.verdict != decision.get("verdict"):
        raise ReceiptError("receipt verdict differs from the decision")
    sequence = decision.get("policy_sequence")
    if type(sequence) is not type(receipt.policy_sequence) or sequence != receipt.policy_sequence:
        raise ReceiptError("receipt states another policy sequence than the decision")
    reasons = decision.get("reasons")
    try:
        digest = reasons_digest(list(reasons)) if isinstance(reasons, list | tuple) else None
    except (TypeError, ValueError, RecursionError):  # not JSON data (bytes, say): no digest can match
        digest = None
    if digest is None or not hmac.compare_digest(digest, receipt.reasons_digest):
        raise ReceiptError("receipt states other reasons than the decision")


def split_receipt(field: bytes) -> tuple[bytes, bytes]:
    """An audit record's receipt field as (receipt, signature); `ReceiptError` if it cannot hold both."""
    if len(field) <= RECEIPT_SIGNATURE_BYTES:
        raise ReceiptError("receipt field too short")
    return field[:-RECEIPT_SIGNATURE_BYTES], field[-RECEIPT_SIGNATURE_BYTES:]
