"""The append-only, hash-chained audit log.

Each record hashes (SHA-256) a canonical, length-prefixed encoding of: a domain tag, seq, time (IEEE-754
big-endian double, exact), wallet id, event type, the payload as canonical JSON, the optional enclave receipt
bytes and the previous record's hash. Editing, deleting, reordering or inserting a record breaks the chain at the
first record affected. What the chain alone cannot show: someone who rewrites a whole suffix and recomputes every
hash, or truncates the tail. Callers who hold an anchor (a head hash kept elsewhere from an earlier verification)
pass it as ``expected_head``: the chain must still hold a record with that hash, so the history up to it is the
one anchored (the log may have grown since). The receipts' signatures are checked against the recorded
enclave session keys by `parent_proxy.audit_receipts` (``waiaas audit verify --receipts``), not here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import struct
from collections.abc import Iterable, Iterator, Sequence

from parent_proxy.clock import Clock, read_clock
from parent_proxy.errors import AuditChainError, Conflict, InvalidInput, StoreUnavailable
from parent_proxy.store.model import GENESIS_PREV_HASH, AuditRecord, OutboxItem
from parent_proxy.store.protocol import AuditSealer, Store
from parent_proxy.store.state_changes import StateChange
from parent_proxy.store.validation import check_id

DOMAIN_TAG = b"waiaas-audit-v1"
MAX_APPEND_ATTEMPTS = 20
"""Concurrent appenders race for the head; each retry re-reads it. Losing every time is contention: the store is
reported unavailable (503), not a conflict with the stored state."""
PAGE_SIZE = 1000

JsonValue = None | bool | int | str | list["JsonValue"] | dict[str, "JsonValue"]


def canonical_json(value: object) -> bytes:
    """Sorted keys, no whitespace, UTF-8. Floats are refused: their text form is not canonical across tools."""
    _check_json(value, "payload")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _check_json(value: object, path: str) -> None:
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInput(path, "object keys must be strings")
            _check_json(v, f"{path}.{k}")
        return
    raise InvalidInput(path, f"{type(value).__name__} is not allowed in canonical JSON")


def _field(data: bytes | None) -> bytes:
    if data is None:
        return b"\x00"
    return b"\x01" + struct.pack(">Q", len(data)) + data


def record_hash(record: AuditRecord) -> bytes:
    """The hash of every field of ``record`` except ``record.hash`` itself."""
    r = record
    encoding = b"".join(
        (
            _field(DOMAIN_TAG),
            struct.pack(">Q", r.seq),
            struct.pack(">d", r.time),
            _field(None if r.wallet_id is None else r.wallet_id.encode("utf-8")),
            _field(r.event_type.encode("utf-8")),
            _field(r.payload),
            _field(r.receipt),
            _field(r.prev_hash),
        )
    )
    return hashlib.sha256(encoding).digest()


def verify_audit_chain(
    records: Iterable[AuditRecord],
    *,
    expected_head: bytes | None = None,
    after_seq: int = 0,
    after_hash: bytes = GENESIS_PREV_HASH,
) -> None:
    """Return if ``records`` is the whole chain from seq 1, intact, and holds ``expected_head`` (when given) as the
    hash of one of its records; else raise `AuditChainError` (first bad seq). With ``after_seq`` and ``after_hash``
    (a record known from elsewhere: an export's last one, `parent_proxy.audit_exports`), ``records`` is the part of
    the chain that follows that record instead, checked the same way."""
    prev_hash, expected_seq = after_hash, after_seq + 1
    anchored = expected_head is None
    for r in records:
        # 1. Position: seq must follow on (catches deletion, reordering, duplication).
        if r.seq != expected_seq:
            raise AuditChainError(expected_seq, f"found seq {r.seq} where seq {expected_seq} belongs")
        # 2. Link: prev_hash must be the previous record's hash (catches insertion and edits upstream).
        if not hmac.compare_digest(r.prev_hash, prev_hash):
            raise AuditChainError(r.seq, "prev_hash does not match the previous record")
        # 3. Payload must be canonical JSON, so one payload has one encoding.
        try:
            canonical = canonical_json(json.loads(r.payload))
        except (ValueError, InvalidInput, RecursionError):  # RecursionError: nested too deep to be ours
            canonical = b""
        if canonical != r.payload:
            raise AuditChainError(r.seq, "payload is not canonical JSON")
        # 4. Content: the stored hash must be the hash of the record (catches edits of this record).
        computed = record_hash(r)
        if not hmac.compare_digest(computed, r.hash):
            raise AuditChainError(r.seq, "hash does not match the record's content")
        if not anchored and hmac.compare_digest(r.hash, expected_head or b""):
            anchored = True
        prev_hash, expected_seq = r.hash, expected_seq + 1
    # 5. Anchor: a head the caller kept must still be in the chain (catches a rewritten or truncated history up to
    #    it; what was appended after it is checked by the chain alone).
    if not anchored:
        raise AuditChainError(expected_seq - 1, "the expected head is not in the chain (rewritten or truncated)")


def iter_audit_records(store: Store) -> Iterator[AuditRecord]:
    after = 0
    while page := store.audit_records(after, PAGE_SIZE):
        yield from page
        after = page[-1].seq


class AuditLog:
    """Appends records to the store's audit table, computing seq, prev_hash and hash."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def sealer(
        self, event_type: str, payload: object, *, wallet_id: str | None = None, receipt: bytes | None = None
    ) -> AuditSealer:
        """Validate a record's content now; the returned function builds the record that follows a given head
        (the store calls it inside its transaction, see `Store.finish_signing`). It reads the clock each time."""
        check_id("event_type", event_type)
        if wallet_id is not None:
            check_id("wallet_id", wallet_id)
        if receipt is not None and not isinstance(receipt, bytes):
            raise InvalidInput("receipt", "must be bytes")
        body = canonical_json(payload)

        def seal(head: AuditRecord | None) -> AuditRecord:
            now = read_clock(self._clock)
            seq, prev = (1, GENESIS_PREV_HASH) if head is None else (head.seq + 1, head.hash)
            unsealed = AuditRecord(seq, now, wallet_id, event_type, body, receipt, prev, b"")
            return dataclasses.replace(unsealed, hash=record_hash(unsealed))

        return seal

    def append(
        self,
        event_type: str,
        payload: object,
        *,
        wallet_id: str | None = None,
        receipt: bytes | None = None,
        webhook: OutboxItem | None = None,
        changes: Sequence[StateChange] = (),
    ) -> AuditRecord:
        """Append the next record and, in the same store transaction, enqueue ``webhook`` (the event's notification,
        if any): both are written or neither (`Store.append_audit`). A race for the head with another appender is
        retried from the new head; any other refusal is raised.

        With ``changes`` (the state change the event describes: a freeze, a decision, ...) the changes are written in
        that transaction too (`Store.apply_audited`): a change is never without its record and notification, and a
        record that cannot be written leaves no change behind."""
        seal = self.sealer(event_type, payload, wallet_id=wallet_id, receipt=receipt)
        if changes:
            return self._store.apply_audited(changes, seal, webhook)
        head = self._store.audit_head()
        for _ in range(MAX_APPEND_ATTEMPTS):
            record = seal(head)
            try:
                self._store.append_audit(record, webhook)
            except Conflict:
                moved = self._store.audit_head()
                if moved == head:
                    raise  # the head did not move: the write itself was refused (e.g. the webhook's event id)
                head = moved  # another appender moved the head; seal again on the new one
                continue
            return record
        raise StoreUnavailable(f"audit append lost the race for the head {MAX_APPEND_ATTEMPTS} times")
