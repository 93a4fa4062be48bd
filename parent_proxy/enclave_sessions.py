"""The enclave session key in force, and the check of every receipt as it arrives (DESIGN.md section 3).

Every enclave answer to a signing request (a signed or refused transaction, a signed off-chain message) carries a
receipt signed by the enclave's per-boot session key (`enclave_app.receipts`), and so does every answer to an
agent-key rotation step (an agent-key receipt: `parent_proxy.agent_key_receipts`) and to an owner order the enclave
applied (an order receipt: `parent_proxy.order_receipts`), each checked the same way. The proxy records it in the
audit log with the answer; an auditor checks it against the attested session key (``waiaas audit verify
--receipts``). So that the log always says which key was in force, the proxy checks each receipt before anything is
recorded or handed out (:meth:`EnclaveSessions.record_checked`, which raises only `ApiError`: its callers need no
translation of their own):

1. In the worker-thread hop that records the answer: the receipt verifies under the current session key (one
   Ed25519 verification) and states what the answer says, about the message the proxy sent
   (`parent_proxy.receipt_checks.check_receipt_content`).
2. No current key yet, or the signature does not verify under it (the enclave restarted): the enclave's attestation
   is fetched with a fresh nonce through the relay, as ``GET /v1/attestation`` does, and checked for consistency the
   same way (`parent_proxy.attestation`: the answer names its key; mode nitro: the document carries it; the status
   read right after names it too), and the unverified nonce in the document must be ours. Then an audit record
   ``enclave.session`` is appended (``ENCLAVE_SESSION_EVENT``, payload below) and only when that append succeeded
   the key is adopted. Then step 1 again, once.
3. A receipt that does not verify under the freshly attested key, or whose content contradicts the answer, is a
   malformed enclave answer: 503 ``enclave_unavailable``; the caller's failure path gives everything back and
   records the failure under the code :func:`failure_code` names.

The receipt is verified once per answer (step 1): the caller's ``record`` gets the receipt as verified
(:class:`Checked`) and verifies nothing again. Only a session change costs more (the old key's try, step 2's check
whether another request adopted the new key meanwhile, step 1 again).

``enclave.session`` payload (canonical JSON, no wallet id)::

    {"session_public_key": base58, "mode": "nitro" | "none", "document": base64 COSE_Sign1 | null,
     "nonce": hex, "reason": str | null}

The proxy does not verify the document (it holds no root of trust; the auditor does). In mode ``none`` there is no
document and the key proves which boot signed, not what code ran.

Ordering: receipts are checked and recorded under the shared side of a lock, a session record is appended and its
key adopted under the exclusive side, so within one proxy process every receipt lands after the session record of
the key it verified under. Several proxy processes over one log do not share that lock: a request in flight across
an enclave restart can then be recorded after the new session's record, and the hosts of a fleet interleave their
sessions in one log; the audit check takes a receipt under the key of any session record before it
(`parent_proxy.audit_session_keys`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
from solders.pubkey import Pubkey

from enclave_app.errors import ReceiptError
from enclave_app.protocol import AttestationMode
from parent_proxy.api_errors import ApiError, Code, translate
from parent_proxy.attestation import attestation_view, document_field_unverified
from parent_proxy.clock import read_clock
from parent_proxy.errors import ClockUnavailable
from parent_proxy.receipt_checks import (
    RECEIPT_TIME_TOLERANCE_SECONDS,
    ReceiptClockSkew,
    ReceiptExpectation,
    UnrecordableDecision,
)
from parent_proxy.shared_exclusive_lock import SharedExclusiveLock

if TYPE_CHECKING:
    from parent_proxy.services import Services

T = TypeVar("T")
R = TypeVar("R")

ENCLAVE_SESSION_EVENT = "enclave.session"
SESSION_NONCE_BYTES = 32
"""A fresh random nonce per attestation (ours: well within the document's nonce bound; cannot repeat by chance)."""
CLOCK_SKEW_MESSAGE = (
    f"the enclave answered a receipt dated more than {RECEIPT_TIME_TOLERANCE_SECONDS} s from the proxy's clock "
    "(the enclave's and the host's clocks differ); nothing was signed"
)


def _malformed(message: str) -> ApiError:
    return ApiError(Code.ENCLAVE_UNAVAILABLE, f"the enclave answered {message}; nothing was signed")


def failure_code(exc: BaseException) -> str:
    """What a failure record (``transaction.failed``, ``order.failed``, ...) names as its ``error``: the API code of
    an `ApiError`, else the exception's type name (never its message)."""
    return exc.code.value if isinstance(exc, ApiError) else type(exc).__name__


class UnknownSession(Exception):
    """The receipt does not verify under the session key in force (or there is none yet): attest, then retry."""


@dataclass(frozen=True, slots=True)
class Checked(Generic[R]):
    """A receipt as :meth:`EnclaveSessions.record_checked` checked it: ``receipt`` verified under
    ``session_public_key``, the session key in force, and states what was expected. What ``record`` gets."""

    receipt: R
    session_public_key: bytes


def document_nonce_unverified(document: bytes) -> bytes | None:
    """The document's ``nonce`` (unverified: only to compare with the nonce just sent)."""
    nonce = document_field_unverified(document, "nonce")
    return nonce if isinstance(nonce, bytes) else None


class EnclaveSessions:
    """The session public key in force (None until the first receipt), kept per proxy process."""

    def __init__(self) -> None:
        self._key: bytes | None = None
        self._lock = SharedExclusiveLock()
        self._attesting: anyio.Lock | None = None

    @property
    def current(self) -> bytes | None:
        return self._key

    def forget(self) -> None:
        """Drop the key in force: the next receipt makes the proxy attest the enclave again."""
        self._key = None

    # -- step 1 (worker thread) -----------------------------------------------------------------------------------
    def check(
        self,
        receipt: bytes,
        signature: bytes,
        expected: ReceiptExpectation[R],
        *,
        at: float,
        attested: bool,
    ) -> Checked[R]:
        """The verified receipt and the key it verified under; `UnknownSession` when it does not verify under the key
        in force and no fresh attestation has been tried for it (``attested`` false), else `ApiError` 503
        ``enclave_unavailable``."""
        key = self._key
        if key is None:
            if attested:
                raise _malformed("a receipt while no session key could be adopted")
            raise UnknownSession
        try:
            verified = expected.verify(receipt, signature, key)
        except ReceiptError as exc:
            if attested:
                raise _malformed("a receipt that the attested session key did not sign") from exc
            raise UnknownSession from exc
        try:
            expected.check(verified, at=at)
        except ReceiptClockSkew as exc:
            raise ApiError(Code.ENCLAVE_UNAVAILABLE, CLOCK_SKEW_MESSAGE) from exc
        except UnrecordableDecision as exc:
            raise _malformed("a decision that the audit log cannot record (not plain JSON data)") from exc
        except ReceiptError as exc:
            raise _malformed("a receipt that contradicts its answer") from exc
        return Checked(verified, key)

    # -- step 2 (async, only on a session change) --------------------------------------------------------------------
    async def attest(
        self, services: Services, receipt: bytes, signature: bytes, expected: ReceiptExpectation[object]
    ) -> None:
        """Attest the enclave with a fresh nonce, record ``enclave.session`` and adopt its key, unless the receipt
        already verifies under the key in force (another request adopted it meanwhile) or the key did not change.
        ``expected`` says which kind of receipt it is (how to verify it)."""
        if self._attesting is None:
            self._attesting = anyio.Lock()
        async with self._attesting:
            if self._key is not None and self._verifies(self._key, receipt, signature, expected):
                return
            nonce = secrets.token_bytes(SESSION_NONCE_BYTES)
            answer = await services.relay.attestation(nonce)
            status = await services.relay.ping()
            view = attestation_view(answer, status)  # ApiError attestation_inconsistent, as GET /v1/attestation
            key = answer.session_public_key
            if key is None:  # attestation_view refuses this already; kept for the type checker
                raise _malformed("an attestation without a session key")
            if answer.mode is AttestationMode.NITRO and (
                answer.document is None or document_nonce_unverified(answer.document) != nonce
            ):
                raise ApiError(
                    Code.ATTESTATION_INCONSISTENT,
                    "the enclave's attestation answer is inconsistent: the document carries another nonce",
                )
            if key == self._key:
                return  # the same boot: the receipt itself is bad (the caller's second check says so)
            payload = {
                "session_public_key": str(Pubkey.from_bytes(key)),
                "mode": view.mode,
                "document": view.document,
                "nonce": nonce.hex(),
                "reason": view.reason,
            }
            await services.run(self._adopt, services, payload, key)

    def _adopt(self, services: Services, payload: dict[str, Any], key: bytes) -> None:
        with self._lock.exclusive():
            services.audit.append(ENCLAVE_SESSION_EVENT, payload)  # no record, no key: the receipt is not recorded
            self._key = key

    @staticmethod
    def _verifies(key: bytes, receipt: bytes, signature: bytes, expected: ReceiptExpectation[object]) -> bool:
        try:
            expected.verify(receipt, signature, key)
        except ReceiptError:
            return False
        return True

    # -- the whole check ------------------------------------------------------------------------------------------
    async def record_checked(
        self,
        services: Services,
        receipt: bytes,
        signature: bytes,
        expected: ReceiptExpectation[R],
        *,
        record: Callable[[Checked[R]], T],
        on_failure: Callable[[str], None],
    ) -> T:
        """Steps 1-3, then ``record(checked)`` in the same worker-thread hop as the check (under the shared lock):
        ``checked`` holds the receipt as it verified and the key it verified under (`Checked`), so ``record`` need
        not verify it again.

        ``expected.message_hash`` is computed by the caller from the bytes it sent (see `Expected`).
        ``on_failure(error)`` (worker thread) gives back what the request holds when the receipt is refused or the
        attestation fails, and records the failure naming ``error`` (:func:`failure_code` of the cause); nothing was
        recorded then. ``record`` handles its own failures (``on_failure`` is not called for them).

        Raises `ApiError` only (anything else, from ``record`` say, through `parent_proxy.api_errors.translate`), or
        a cancellation as it came."""
        try:
            return await self._check_and_record(services, receipt, signature, expected, record=record,
                                                on_failure=on_failure)  # fmt: skip
        except ApiError:
            raise
        except Exception as exc:
            raise translate(exc) from exc

    async def _check_and_record(
        self,
        services: Services,
        receipt: bytes,
        signature: bytes,
        expected: ReceiptExpectation[R],
        *,
        record: Callable[[Checked[R]], T],
        on_failure: Callable[[str], None],
    ) -> T:
        def hop(attested: bool) -> T:
            with self._lock.shared():
                try:
                    at = read_clock(services.clock)
                except ClockUnavailable as exc:
                    error = translate(exc)
                    on_failure(failure_code(error))
                    raise error from exc
                try:
                    checked = self.check(receipt, signature, expected, at=at, attested=attested)
                except ApiError as error:
                    on_failure(failure_code(error))
                    raise
                return record(checked)

        try:
            return await services.run(hop, False)
        except UnknownSession:
            pass
        try:
            await self.attest(services, receipt, signature, expected)
        except BaseException as exc:  # includes cancellation: what the request holds must be given back
            with anyio.CancelScope(shield=True):
                await services.run(on_failure, failure_code(exc))
            raise
        return await services.run(hop, True)
