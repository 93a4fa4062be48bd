"""Order receipts on the parent: checked as they arrive, recorded, handed to the owner (`enclave_app.order_receipts`).

The enclave answers each owner order it applies (a policy install, a freeze, an unfreeze) with an order receipt
signed by its attested session key. The relay hands every such answer to :class:`OrderReceipts` before returning it
(`parent_proxy.enclave_relay.OrderReceiptLog`), whoever caused it: the owner's routes, or the relay itself when it
installs the stored policy into an enclave that restarted. :meth:`OrderReceipts.applied`:

1. takes what the receipt must state from the bytes the proxy sent (:class:`ExpectedOrder`: purpose, wallet, the
   signed document's sequence and SHA-256, `policies.signing.document_sha256`);
2. checks that the answer's own fields say the same (wallet, sequence, and the frozen flag or the policy hash);
3. passes an answer without a receipt on as it is (an enclave image from before order receipts: nothing to record);
4. checks the receipt under the session key in force, attesting the enclave first when needed, and in the same hop
   appends its audit record (`parent_proxy.enclave_sessions.EnclaveSessions.record_checked`): the event of
   :data:`ORDER_RECEIPT_EVENTS`, the receipt followed by its signature in the record's receipt field, and the
   payload of :func:`order_payload`, taken from the receipt as it verified; it returns the key it verified under
   (the relay hands it on with the answer, `parent_proxy.enclave_relay.AppliedOrder`).

The receipt's signature is verified once per order (at 4; a session change costs more, see `enclave_sessions`):
the record is written from what that check decoded, and the owner's copy (:func:`receipt_fields`) names the key
it was checked under by comparing keys.

A refusal at 2 or 4 is recorded as ``order.failed`` (purpose, sequence, error) and raised as 503
``enclave_unavailable``, as for a decision receipt that does not check: the callers treat it as an enclave that did
not acknowledge the order (the owner routes answer ``enclave_acknowledged: false`` with no receipt; a signing
request that needed the install fails as when the enclave is unreachable). The receipt's counter is then missing
from the log, and ``waiaas audit verify --receipts`` reports the gap beside that record.

The owner gets the receipt in the route's answer (:func:`receipt_fields`) and checks it with
``waiaas owner verify-order`` (`parent_proxy.owner_verify_order_cli`): the proxy's check above protects the log, the
owner's protects the owner from a parent that lies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from solders.pubkey import Pubkey

from enclave_app.errors import ReceiptError
from enclave_app.order_receipts import FREEZE, POLICY, UNFREEZE, OrderReceipt, verify_order_receipt
from enclave_app.protocol import PolicyInstalledResponse, WalletFrozenResponse
from parent_proxy.api_errors import ApiError, Code
from parent_proxy.enclave_sessions import Checked
from parent_proxy.receipt_checks import check_receipt_time
from parent_proxy.relay_orders import AppliedOrder
from policies.canonical import parse_json_object
from policies.errors import PolicyEngineError
from policies.orders import MAX_SEQUENCE
from policies.signing import document_sha256

if TYPE_CHECKING:
    from parent_proxy.services import Services

ORDER_RECEIPT_EVENTS = {
    "policy.enclave_installed": POLICY,
    "wallet.enclave_frozen": FREEZE,
    "wallet.enclave_unfrozen": UNFREEZE,
}
"""Audit event of a checked order receipt -> the receipt's purpose."""
EVENT_OF = {purpose: event for event, purpose in ORDER_RECEIPT_EVENTS.items()}
ORDER_FAILED_EVENT = "order.failed"
OrderAnswer = PolicyInstalledResponse | WalletFrozenResponse


@dataclass(frozen=True, slots=True)
class ExpectedOrder:
    """What an order receipt must state: the order the proxy sent (the proxy), the record written from it (the
    auditor), or the owner's own signed file (``waiaas owner verify-order``). The frozen flag or policy hash the
    order leads to needs no comparison here: `verify_order_receipt` refuses a receipt whose state does not follow
    from its purpose (a freeze frozen, an unfreeze not, a policy install naming the policy installed)."""

    purpose: str
    wallet_id: str
    sequence: int
    document_hash: bytes

    @classmethod
    def of_sent(cls, purpose: str, wallet_id: str, sent: bytes) -> ExpectedOrder:
        """From the envelope bytes the proxy sent (its own, checked before they went out); `ReceiptError` if they
        hold no document with a sequence."""
        try:
            document = parse_json_object(sent, what="envelope").get("document")
            if not isinstance(document, dict):
                raise ReceiptError("the envelope sent holds no document")
            sequence = document.get("sequence")
            if type(sequence) is not int or not 0 <= sequence <= MAX_SEQUENCE:
                raise ReceiptError("the document sent has no sequence")
            return cls(purpose, wallet_id, sequence, document_sha256(document))
        except PolicyEngineError as exc:
            raise ReceiptError("the envelope sent is not canonical JSON") from exc

    def verify(self, receipt: bytes, signature: bytes, session_public_key: bytes) -> OrderReceipt:
        """The receipt, if ``session_public_key`` signed it as an order receipt (else `ReceiptError`)."""
        return verify_order_receipt(receipt, signature, session_public_key)

    def check(self, stated: object, *, at: float) -> None:
        """`ReceiptError` unless ``stated`` (a verified order receipt) says what this expects, at about ``at``."""
        check_receipt_time(self.check_content(stated).time_ms, at=at)

    def check_content(self, stated: object) -> OrderReceipt:
        """``stated`` if it is about this order (its time is not compared), else `ReceiptError`."""
        if not isinstance(stated, OrderReceipt):
            raise ReceiptError("not an order receipt")
        if stated.purpose != self.purpose:
            raise ReceiptError(f"order receipt of purpose {stated.purpose!r}, expected {self.purpose!r}")
        if stated.wallet_id != self.wallet_id:
            raise ReceiptError("order receipt names another wallet")
        if stated.sequence != self.sequence:
            raise ReceiptError(f"order receipt of sequence {stated.sequence}, expected {self.sequence}")
        if not hmac.compare_digest(stated.document_hash, self.document_hash):
            raise ReceiptError("order receipt is about another document")
        return stated


def order_payload(stated: OrderReceipt, envelope_sha256: str) -> dict[str, Any]:
    """The payload of an order-receipt record: what the receipt states, and the SHA-256 (hex) of the envelope bytes
    the proxy sent (the order record's ``order_sha256``, the policy record's ``policy_sha256``)."""
    return {
        "sequence": stated.sequence, "document_sha256": stated.document_hash.hex(), "frozen": stated.frozen,
        "policy_hash": None if stated.policy_hash is None else stated.policy_hash.hex(),
        "envelope_sha256": envelope_sha256,
    }  # fmt: skip


def _answer_disagrees(expected: ExpectedOrder, answer: OrderAnswer) -> str | None:
    """What the answer's own fields say otherwise than the order sent, if anything."""
    if answer.wallet_id != expected.wallet_id:
        return "an answer for another wallet"
    if isinstance(answer, PolicyInstalledResponse):
        if answer.sequence != expected.sequence or not hmac.compare_digest(answer.policy_hash, expected.document_hash):
            return "another policy than the one sent"
    elif answer.order_sequence != expected.sequence or answer.frozen != (expected.purpose == FREEZE):
        return "another order or wallet state than the order sent"
    return None


class OrderReceipts:
    """`parent_proxy.enclave_relay.OrderReceiptLog` for the proxy: steps 1-4 of the module docstring."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def applied(self, wallet_id: str, purpose: str, sent: bytes, answer: OrderAnswer) -> bytes | None:
        """Steps 1-4: the session key the receipt was checked under (None for an answer without one), or `ApiError`."""
        services = self._services
        envelope_sha256 = hashlib.sha256(sent).hexdigest()
        try:
            expected = ExpectedOrder.of_sent(purpose, wallet_id, sent)  # 1.
        except ReceiptError as exc:  # the proxy's own bytes: a bug, refused as an answer it cannot check
            await self._refuse(wallet_id, purpose, None, envelope_sha256, f"the order sent does not read: {exc}")
        problem = _answer_disagrees(expected, answer)  # 2.
        if problem is not None:
            await self._refuse(wallet_id, purpose, expected.sequence, envelope_sha256, problem)
        if answer.receipt is None or answer.receipt_signature is None:  # 3.
            return None
        receipt, signature = answer.receipt, answer.receipt_signature

        def record(checked: Checked[OrderReceipt]) -> bytes:  # the receipt as it verified: not verified again
            services.audit.append(EVENT_OF[purpose], order_payload(checked.receipt, envelope_sha256),
                                  wallet_id=wallet_id, receipt=receipt + signature)  # fmt: skip
            return checked.session_public_key

        return await services.sessions.record_checked(  # 4.
            services, receipt, signature, expected, record=record,
            on_failure=lambda error: self._audit_failure(wallet_id, purpose, expected.sequence, envelope_sha256, error),
        )  # fmt: skip

    def _audit_failure(self, wallet_id: str, purpose: str, sequence: int | None, envelope: str, error: str) -> None:
        """The ``order.failed`` record of an order answer the proxy refused (never raises)."""
        payload = {"purpose": purpose, "sequence": sequence, "envelope_sha256": envelope, "error": error}
        self._services.audit_safely(ORDER_FAILED_EVENT, payload, wallet_id=wallet_id)

    async def _refuse(self, wallet_id: str, purpose: str, sequence: int | None, envelope: str, why: str) -> NoReturn:
        services = self._services
        await services.run(self._audit_failure, wallet_id, purpose, sequence, envelope, Code.ENCLAVE_UNAVAILABLE.value)
        raise ApiError(Code.ENCLAVE_UNAVAILABLE, f"the enclave answered the owner's {purpose} order with {why}")


def receipt_fields(
    services: Services, applied: AppliedOrder[PolicyInstalledResponse] | AppliedOrder[WalletFrozenResponse] | None
) -> dict[str, str | None]:
    """The owner's copy of an applied order's receipt: ``receipt`` and ``receipt_signature`` (base64) and the session
    key they verified under (base58; null when it is no longer the key in force). All null without an answer or a
    receipt. The owner verifies the receipt under an attested key, never this one (``waiaas owner verify-order``).

    No signature is verified here: the relay returns an answer only once :class:`OrderReceipts` verified its receipt
    under ``applied.checked_under`` (the same bytes: the answer is immutable), so whether that key is still the one
    in force is a comparison of keys."""
    if applied is None or applied.answer.receipt is None or applied.answer.receipt_signature is None:
        return {"receipt": None, "receipt_signature": None, "session_public_key": None}
    key = applied.checked_under
    if key != services.sessions.current:
        key = None  # checked under a key no longer in force (or not checked: a relay without an order log)
    return {
        "receipt": base64.b64encode(applied.answer.receipt).decode(),
        "receipt_signature": base64.b64encode(applied.answer.receipt_signature).decode(),
        "session_public_key": None if key is None else str(Pubkey.from_bytes(key)),
    }
