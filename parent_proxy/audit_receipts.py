"""The audit log's receipts checked against the enclave session keys it records (``waiaas audit verify --receipts``).

The proxy writes an ``enclave.session`` record (`parent_proxy.enclave_sessions`) before the first receipt of each
enclave boot it sees. Several boots can be in force over one log at once: the hosts of a fleet, each a proxy and its
own enclave over one store, or several proxy processes on one host across an enclave restart. Their session records
and receipts interleave, so a receipt is checked under the key of whichever session record before it signed it
(`parent_proxy.audit_session_keys`), not only the latest one. :func:`verify_audit_receipts` walks a log whose hash
chain already verified (`parent_proxy.audit.verify_audit_chain`) and raises `AuditChainError` at the first record
that fails:

1. ``enclave.session``: the payload has the documented fields and types (a 32-byte base58 key, mode ``nitro`` with
   a base64 document or ``none`` without one, a hex nonce).
   Mode ``nitro`` with a trust anchor (`parent_proxy.trust_anchor.Anchor`: a pinned root and expected PCRs, PCR 0
   among them): the document verifies by the rules `parent_proxy.trust_anchor.verify_session_document` shares with
   ``waiaas owner verify-wallet`` (the chain to the root, the PCRs, the recorded nonce, ``user_data`` saying it
   carries the session key), at the document's own timestamp (read first, unverified, then covered by the
   signature), and its ``public_key`` is the recorded key. Without an anchor only that (unverified)
   ``public_key`` is compared. Mode ``none``: nothing attests the key; refused when an anchor is given (an anchor
   implies ``require_attestation``: otherwise a parent could append a session record of its own in mode ``none``
   and receipts it signs itself, and the anchored check would pass) or when ``require_attestation``.
2. A record holding a receipt (field = receipt + 64-byte signature): there is an ``enclave.session`` record before
   it; the receipt verifies under the key of one of them (`enclave_app.receipts.verify_receipt`; a receipt signed
   by no recorded key fails, and so does one signed by the key of a session record after it); its counter
   was not recorded before under the same session key (a copied receipt); the payload states the message the
   receipt is about (``message_sha256``, 32 bytes in hex: every record the proxy writes with a receipt has it);
   and the receipt agrees with the record by the rule the proxy applied when it arrived
   (`parent_proxy.receipt_checks.check_receipt_content`: kind ``transaction`` for ``transaction.*`` events and
   ``message`` for ``message.*``, the record's wallet, the record's ``message_sha256``, a signature stated exactly
   for ``*.signed``, for a transaction the payload's decision with the receipt's verdict, ``policy_sequence`` and
   ``reasons`` (by their digest), and the record's time within
   `parent_proxy.receipt_checks.RECEIPT_TIME_TOLERANCE_SECONDS` of the receipt's).
3. A ``transaction.signed`` or ``message.signed`` record holds a receipt: the proxy never hands out a signature
   without one, so a signed record without a receipt is a record the enclave did not vouch for. So does a
   ``transaction.withheld`` or ``message.withheld`` record (a signature the proxy withheld because the wallet was
   frozen meanwhile, `parent_proxy.withheld`), whose receipt must state a signature as a signed record's does; they
   are counted apart (``withheld``) so the auditor sees them: the log says the signature was not handed out, and
   only the chain can confirm it (the record names the message). A withheld record must also have its cause
   before it (`parent_proxy.audit_withheld`): a record that froze, unfroze or took an owner order of the same
   wallet, dated no earlier than the receipt's time less `WITHHELD_CAUSE_WINDOW_SECONDS`; without one it fails
   as a gap does, or with ``allow_gaps`` is counted (``withheld_unexplained``).
4. Within each session (each session key, however its receipts interleave with other sessions' in the log), the
   receipt counters run from 1 without a gap: a missing counter is a receipt the enclave issued and the log does
   not hold (a signature withheld from the log, or an answer the proxy refused or lost).
   Refused unless gaps are allowed (``allow_gaps``: after the operator has matched them with ``*.failed`` records).

5. ``agent_key.candidate``, ``agent_key.rotation_signed`` and ``agent_key.switched`` (agent-key rotation): the
   payload holds an agent-key receipt (``receipt``, base64, and ``receipt_signature``, base58) that verifies under
   the key of a session record before it, as in step 2 (`enclave_app.receipts.verify_agent_key_receipt`), and
   states what the record does, by the rule the proxy applied when it arrived
   (`parent_proxy.agent_key_receipts.ExpectedAgentKey`: the event's purpose, the record's wallet, the payload's
   agent key and new key, owner key, for a rotation its ``message_sha256``, and the record's time). These receipts
   have no counter; the same one recorded twice fails.

6. ``policy.enclave_installed``, ``wallet.enclave_frozen`` and ``wallet.enclave_unfrozen`` (an owner order the
   enclave applied, `parent_proxy.order_receipts`): the record's receipt field holds an order receipt that verifies
   under the key of a session record before it, as in step 2 (`enclave_app.order_receipts.verify_order_receipt`),
   and states what the record does, by the rule the proxy applied when it arrived
   (`parent_proxy.order_receipts.ExpectedOrder`: the event's purpose, the record's wallet, the payload's
   ``sequence`` and ``document_sha256``, and the record's time); the payload is exactly what the receipt states
   (`parent_proxy.order_receipts.order_payload`), besides ``envelope_sha256``, the proxy's pointer to the order's
   own record (covered by the hash chain only). Order receipts take their counters from the session's one
   sequence: they count in step 4 with the decision receipts, and a counter recorded twice fails here as there.

What this cannot show (the parent writes the log and can re-chain it, so only what it cannot forge counts):
receipts missing after the last recorded one of a session (the enclave's final counter is known to nobody but the
enclave); a whole enclave boot left out, its ``enclave.session`` record and every record holding one of its
receipts (each remaining session still runs from counter 1 without a gap, and nothing in a receipt names the boot
before or after it); a truncated tail. Only a head kept outside the parent's reach after those records were written
catches these (``--expect-head``: the re-chained log no longer holds it). And, in mode ``none`` or without an
anchor, which code held the session key. Not checked either: a wallet's ``policy_sequence`` going backwards from
one session to the next (a rolled-back policy), since the enclaves of a fleet take a new policy one by one and
interleave in the log, so an honest log shows it too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from solders.pubkey import Pubkey
from solders.signature import Signature

from enclave_app.errors import ReceiptError
from enclave_app.receipts import verify_receipt
from parent_proxy.agent_key_receipts import AGENT_KEY_EVENT_PURPOSES, ExpectedAgentKey
from parent_proxy.attestation import document_field_unverified, document_public_key_unverified
from parent_proxy.audit_session_keys import RecordedKey, SessionKeys
from parent_proxy.audit_withheld import FreezeTimes
from parent_proxy.enclave_sessions import ENCLAVE_SESSION_EVENT
from parent_proxy.errors import AuditChainError
from parent_proxy.order_receipts import ORDER_RECEIPT_EVENTS, ExpectedOrder, order_payload
from parent_proxy.receipt_checks import Expected, ReceiptExpectation, check_receipt_content, split_receipt
from parent_proxy.store.model import AuditRecord
from parent_proxy.trust_anchor import Anchor, SessionDocumentError, verify_session_document

R = TypeVar("R")

UNATTESTED_SESSIONS = (
    "attestation mode none: nothing attests these session keys (they come from the parent's log); their receipts "
    "show which enclave boot decided, and prove nothing about the code that ran"
)
UNVERIFIED_DOCUMENTS = (
    "attestation documents not verified (pass --root-pem and --pcr): their session keys were taken as the "
    "documents state them, unverified"
)
RECEIPT_KINDS = {"transaction": "transaction", "message": "message"}
"""Event-type prefix -> receipt kind. A receipt on any other event is refused."""
MESSAGE_HASH_BYTES = 32
"""A receipt's ``message_hash`` is a SHA-256 (`enclave_app.receipts`); ``message_sha256`` is its hex."""
SIGNED_EVENTS = frozenset({"transaction.signed", "message.signed"})
"""Records of a signature handed out: each must hold the enclave's receipt."""
WITHHELD_EVENTS = frozenset({"transaction.withheld", "message.withheld"})
"""Records of a signature the enclave made and the proxy withheld (the wallet was frozen meanwhile:
`parent_proxy.withheld`): each must hold the enclave's receipt, which states a signature."""


@dataclass
class ReceiptsReport:
    sessions: int = 0
    unattested_sessions: int = 0
    """Mode none: no document at all."""
    unverified_documents: int = 0
    """Mode nitro, but no anchor was given to verify the document against."""
    verified_documents: int = 0
    receipts: int = 0
    agent_key_receipts: int = 0
    """Agent-key receipts (rotation steps) checked, counted apart from ``receipts`` (decision receipts)."""
    order_receipts: int = 0
    """Order receipts (policies, freezes and unfreezes the enclave applied) checked, apart from ``receipts``."""
    withheld: int = 0
    """Receipts of signatures the proxy says it withheld (``transaction.withheld``, ``message.withheld``: the wallet
    was frozen while they were made), counted in ``receipts`` too. The log cannot prove they were not handed out."""
    withheld_unexplained: int = 0
    """Of ``withheld``, those with no freeze, unfreeze or owner order of their wallet recorded before them within
    `WITHHELD_CAUSE_WINDOW_SECONDS` of their receipt (`parent_proxy.audit_withheld`); only with ``allow_gaps`` (else
    the first fails the check)."""
    counter_gaps: int = 0
    """Counters skipped within a session (receipts issued but not recorded: failed answers, or withheld); only with
    ``allow_gaps`` (else the first gap fails the check)."""
    _counters: dict[bytes, set[int]] = field(default_factory=dict, repr=False)
    _agent_key_receipts: set[bytes] = field(default_factory=set, repr=False)


def _fail(record: AuditRecord, reason: str) -> AuditChainError:
    return AuditChainError(record.seq, reason)


def _document_timestamp_unverified(document: bytes) -> datetime | None:
    """The payload's ``timestamp`` (ms), read before verification only to choose the time to verify at."""
    stamp = document_field_unverified(document, "timestamp")
    if type(stamp) is not int:
        return None
    try:
        return datetime.fromtimestamp(stamp / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _session(record: AuditRecord, anchor: Anchor | None, require_attestation: bool, report: ReceiptsReport) -> bytes:
    """Step 1: the session key a well-formed (and, when asked, attested) session record names."""
    payload = json.loads(record.payload)
    if not isinstance(payload, dict):
        raise _fail(record, "session record malformed")
    try:
        key = bytes(Pubkey.from_string(payload["session_public_key"]))
        nonce = bytes.fromhex(payload["nonce"])
        mode, document_b64 = payload["mode"], payload["document"]
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(record, "session record malformed") from exc
    if mode == "none":
        if document_b64 is not None:
            raise _fail(record, "session record malformed: a document in mode none")
        if anchor is not None or require_attestation:
            raise _fail(record, "session key not attested (mode none): an anchored check needs every key attested")
        report.unattested_sessions += 1
        return key
    if mode != "nitro" or not isinstance(document_b64, str):
        raise _fail(record, "session record malformed: unknown mode or no document")
    try:
        document = base64.b64decode(document_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _fail(record, "session record malformed: document is not base64") from exc
    if anchor is None:
        if require_attestation:  # the CLI refuses this combination; kept for direct callers
            raise _fail(record, "session key not attested (no root and PCRs to verify the document)")
        if document_public_key_unverified(document) != key:
            raise _fail(record, "the document carries another session key than the record")
        report.unverified_documents += 1
        return key
    at = _document_timestamp_unverified(document)
    if at is None:
        raise _fail(record, "attestation document refused: no readable timestamp")
    try:
        attested = verify_session_document(document, anchor, at=at, expected_nonce=nonce)
    except SessionDocumentError as exc:
        raise _fail(record, str(exc)) from exc
    if not hmac.compare_digest(attested, key):
        raise _fail(record, "the attested session key is not the recorded key")
    report.verified_documents += 1
    return key


def _recorded_message_hash(record: AuditRecord, payload: object) -> bytes:
    """The record's ``message_sha256``: the message its receipt must be about (`AuditChainError` if none)."""
    value = payload.get("message_sha256") if isinstance(payload, dict) else None
    try:
        digest = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        digest = b""
    if len(digest) != MESSAGE_HASH_BYTES:
        raise _fail(record, "record holding a receipt states no message_sha256 (the message it is about)")
    return digest


def _receipt(
    record: AuditRecord, sessions: SessionKeys, report: ReceiptsReport, freezes: FreezeTimes, *, allow_gaps: bool
) -> None:
    """Steps 2 and 3 for one record (``freezes``: the records before it that moved a wallet's freeze state)."""
    if record.receipt is None:
        if record.event_type in SIGNED_EVENTS | WITHHELD_EVENTS:
            raise _fail(record, f"{record.event_type} record without the enclave's receipt")
        return
    if not sessions:
        raise _fail(record, "receipt recorded before any enclave.session record")
    prefix = record.event_type.partition(".")[0]
    kind = RECEIPT_KINDS.get(prefix)
    if kind is None:
        raise _fail(record, f"unexpected receipt on a {record.event_type} record")
    try:
        receipt, signature = split_receipt(record.receipt)
    except ReceiptError as exc:
        raise _fail(record, f"receipt field unreadable: {exc}") from exc
    session, stated = sessions.signer(record, lambda key: verify_receipt(receipt, signature, key), kind="")
    if stated.counter in report._counters.get(session.key, ()):
        raise _fail(record, _twice(stated.counter, session))
    payload = json.loads(record.payload)
    decision = payload.get("decision") if isinstance(payload, dict) else None
    try:
        signed = record.event_type.endswith(".signed") or record.event_type in WITHHELD_EVENTS
        expected = Expected(kind, record.wallet_id or "", _recorded_message_hash(record, payload),
                            signed=signed, decision=decision)  # fmt: skip
        check_receipt_content(stated, expected, at=record.time)
    except ReceiptError as exc:
        raise _fail(record, f"receipt disagrees with the record: {exc}") from exc
    _counted(record, session, stated.counter, report)
    report.receipts += 1
    if record.event_type in WITHHELD_EVENTS:
        report.withheld += 1
        unexplained = freezes.unexplained(record, stated.time_ms / 1000)
        if unexplained is not None:
            if not allow_gaps:
                raise _fail(record, unexplained)
            report.withheld_unexplained += 1


_AGENT_KEY_PAYLOAD_KEYS = {
    # event -> (payload field of the agent key the step started from, payload field of the new key)
    "agent_key.candidate": ("agent_public_key", "candidate_public_key"),
    "agent_key.rotation_signed": ("agent_public_key", "candidate_public_key"),
    "agent_key.switched": ("previous_agent_public_key", "agent_public_key"),
}


def _agent_key_receipt(record: AuditRecord, sessions: SessionKeys, report: ReceiptsReport) -> None:
    """Step 5 for one ``agent_key.*`` record that must hold a receipt."""
    if record.receipt is not None:
        raise _fail(record, f"unexpected receipt field on a {record.event_type} record (it goes in the payload)")
    payload = json.loads(record.payload)
    if not isinstance(payload, dict):
        raise _fail(record, f"{record.event_type} record malformed")
    purpose = AGENT_KEY_EVENT_PURPOSES[record.event_type]
    old_field, new_field = _AGENT_KEY_PAYLOAD_KEYS[record.event_type]
    try:
        receipt = base64.b64decode(payload["receipt"], validate=True)
        signature = bytes(Signature.from_string(payload["receipt_signature"]))
        keys = [bytes(Pubkey.from_string(payload[name])) for name in (old_field, new_field, "owner_public_key")]
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise _fail(record, f"{record.event_type} record without a readable agent-key receipt and keys") from exc
    if not sessions:
        raise _fail(record, "agent-key receipt recorded before any enclave.session record")
    message_hash = _recorded_message_hash(record, payload) if purpose == "agent_key_rotation" else None
    expected = ExpectedAgentKey(purpose, record.wallet_id or "", keys[0], keys[1], keys[2], message_hash)
    _checked(record, sessions, expected, receipt, signature, kind="agent-key")
    digest = hashlib.sha256(receipt).digest()
    if digest in report._agent_key_receipts:
        raise _fail(record, "agent-key receipt recorded twice")
    report._agent_key_receipts.add(digest)
    report.agent_key_receipts += 1


def _checked(
    record: AuditRecord, sessions: SessionKeys, expected: ReceiptExpectation[R], receipt: bytes, signature: bytes, *,
    kind: str,
) -> tuple[RecordedKey, R]:  # fmt: skip
    """The ``kind`` receipt (``agent-key``, ``order``) of ``record`` and the session key that signed it, if a key
    recorded before it signed it and it states what ``expected`` (read from the record) says, by the rule the proxy
    applied (steps 5 and 6); else `AuditChainError`."""
    session, stated = sessions.signer(record, lambda key: expected.verify(receipt, signature, key), kind=f"{kind} ")
    try:
        expected.check(stated, at=record.time)
    except ReceiptError as exc:
        raise _fail(record, f"{kind} receipt disagrees with the record: {exc}") from exc
    return session, stated


def _twice(counter: int, session: RecordedKey) -> str:
    return f"receipt counter {counter} recorded twice under the session key of seq {session.seq}"


def _counted(record: AuditRecord, session: RecordedKey, counter: int, report: ReceiptsReport) -> None:
    """Count ``counter`` in the session's one sequence (steps 4 and 6); a counter recorded twice fails."""
    seen = report._counters.setdefault(session.key, set())
    if counter in seen:
        raise _fail(record, _twice(counter, session))
    seen.add(counter)


def _order_receipt(record: AuditRecord, sessions: SessionKeys, report: ReceiptsReport) -> None:
    """Step 6 for one order-receipt record."""
    if record.receipt is None:
        raise _fail(record, f"{record.event_type} record without the enclave's receipt")
    if not sessions:
        raise _fail(record, "order receipt recorded before any enclave.session record")
    payload = json.loads(record.payload)
    try:
        if not isinstance(payload, dict) or type(payload["sequence"]) is not int:
            raise TypeError("no sequence")
        envelope = payload["envelope_sha256"]
        if not isinstance(envelope, str):
            raise TypeError("no envelope hash")
        document = bytes.fromhex(payload["document_sha256"])
        receipt, signature = split_receipt(record.receipt)
    except (KeyError, TypeError, ValueError, ReceiptError) as exc:
        raise _fail(record, f"{record.event_type} record without a readable sequence, document or receipt") from exc
    expected = ExpectedOrder(ORDER_RECEIPT_EVENTS[record.event_type], record.wallet_id or "", payload["sequence"],
                             document)  # fmt: skip
    session, stated = _checked(record, sessions, expected, receipt, signature, kind="order")
    if order_payload(stated, envelope) != payload:
        raise _fail(record, "order receipt disagrees with the record: the payload states otherwise than the receipt")
    _counted(record, session, stated.counter, report)
    report.order_receipts += 1


def verify_audit_receipts(
    records: Sequence[AuditRecord],
    *,
    anchor: Anchor | None = None,
    require_attestation: bool = False,
    allow_gaps: bool = False,
) -> ReceiptsReport:
    """Steps 1-6 of the module docstring over ``records`` (a chain that verified); `AuditChainError` at the first
    record that fails. With an ``anchor`` every session key must be attested, as with ``require_attestation``."""
    report = ReceiptsReport()
    sessions = SessionKeys(records)
    freezes = FreezeTimes()
    for record in records:
        if record.event_type == ENCLAVE_SESSION_EVENT:
            if record.receipt is not None:
                raise _fail(record, "session record holds a receipt")
            sessions.record(record.seq, _session(record, anchor, require_attestation, report))
            report.sessions += 1
            continue
        if record.event_type in AGENT_KEY_EVENT_PURPOSES:
            _agent_key_receipt(record, sessions, report)
            continue
        if record.event_type in ORDER_RECEIPT_EVENTS:
            _order_receipt(record, sessions, report)
            continue
        _receipt(record, sessions, report, freezes, allow_gaps=allow_gaps)
        freezes.note(record)
    for key, counters in report._counters.items():
        missing = max(counters) - len(counters)  # counters start at 1 per boot
        if missing and not allow_gaps:
            first = min(set(range(1, max(counters) + 1)) - counters)
            raise AuditChainError(
                sessions.first_seq(key), f"{missing} receipt counter(s) of this session missing from the log, the "
                f"first {first} (a signature withheld from the log, or answers refused or lost: see its *.failed "
                "records)",
            )  # fmt: skip
        report.counter_gaps += missing
    return report
