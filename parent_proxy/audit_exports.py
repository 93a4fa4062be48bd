"""Audit exports: consecutive records of the audit log written as one object to the data bucket, and the check of
the live log against them.

The log's hash chain shows any edit, but not a whole history rewritten and re-hashed by whoever can write the store
(docs/api.md, Audit log). An export fixes what the log said at the time: `waiaas audit export` (`audit_export_cli`)
writes the records appended since the last export as one object, write-once and under object lock, and
`waiaas audit verify --exports DIR` checks the live log against every export: each exported record must be the
log's record at its seq, so a history rewritten after it was exported, or cut short, fails.

An object (JSON Lines, UTF-8), its key ``<prefix><first seq>-<last seq>-<head hash>.jsonl`` (seqs as 20 digits, so
keys sort by first seq; the head is the last record's hash, hex)::

    {"format": "waiaas-audit-export-v1", "first_seq": 1, "last_seq": 3, "count": 3, "prev_hash": "<hex>",
     "head": "<hex>"}
    {"seq": 1, "time": 1700000000.25, "wallet_id": "w1" | null, "event_type": "wallet.created",
     "payload": {...}, "receipt": "<base64>" | null, "prev_hash": "<hex>", "hash": "<hex>"}
    ...

Each record line holds every field `parent_proxy.audit.record_hash` covers, as `waiaas audit verify` reads them:
the payload as the JSON value whose canonical encoding (`canonical_json`) is the recorded payload (the chain check
requires that encoding), the time as a JSON number (a double, written and read exactly), bytes in base64 and hashes
in hex. ``prev_hash`` in the first line is the hash of the record before ``first_seq`` (zeros before seq 1). The
content is a function of the records alone (no export time), so two hosts exporting the same records write the same
object.

Reading an export checks it whole (`decode_export`): its name agrees with its first line, the records run from
``first_seq`` to ``last_seq`` and chain from ``prev_hash`` to ``head`` (`verify_audit_chain` from that point). An
export that does not is `ExportError`: something wrote the bucket that is not this exporter.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from parent_proxy.audit import canonical_json, verify_audit_chain
from parent_proxy.errors import AuditChainError, InvalidInput
from parent_proxy.store.model import GENESIS_PREV_HASH, AuditRecord

FORMAT = "waiaas-audit-export-v1"
CONTENT_TYPE = "application/x-ndjson"
DEFAULT_PREFIX = "audit/"
"""Data-bucket prefix of the exports (the same as `cdk.naming.AUDIT_PREFIX`, which the hosts' role is granted)."""
MAX_RECORDS_PER_EXPORT = 5000
"""Records per object: an export of a long log (the first one, say) is several objects of at most this many."""
NAME = re.compile(r"([0-9]{20})-([0-9]{20})-([0-9a-f]{64})\.jsonl")
MAX_SEQ = 2**63 - 1
"""The largest seq a store holds (SQLite's INTEGER, and a record hash's 64-bit field, hold it)."""
_HEADER_FIELDS = {"format", "first_seq", "last_seq", "count", "prev_hash", "head"}
_RECORD_FIELDS = {"seq", "time", "wallet_id", "event_type", "payload", "receipt", "prev_hash", "hash"}


class ExportError(Exception):
    """An export object that this exporter did not write as it is (the message names the object and what is wrong;
    never a record's content)."""


@dataclass(frozen=True, slots=True)
class ExportName:
    """What an export's key states: its seq range and its last record's hash."""

    first_seq: int
    last_seq: int
    head: bytes

    def file_name(self) -> str:
        return f"{self.first_seq:020d}-{self.last_seq:020d}-{self.head.hex()}.jsonl"


@dataclass(frozen=True, slots=True)
class Export:
    name: ExportName
    prev_hash: bytes
    records: tuple[AuditRecord, ...]


@dataclass(frozen=True, slots=True)
class ExportsReport:
    exports: int
    exported_to: int
    """The highest seq an export holds: the log up to it is the one exported."""


def parse_export_name(name: str) -> ExportName | None:
    """The name part of a key (after the prefix) as an `ExportName`, or None for a name of another shape."""
    match = NAME.fullmatch(name)
    if match is None:
        return None
    first, last = int(match.group(1)), int(match.group(2))
    if not 1 <= first <= last <= MAX_SEQ:
        return None
    return ExportName(first, last, bytes.fromhex(match.group(3)))


def encode_export(records: Sequence[AuditRecord]) -> tuple[ExportName, bytes]:
    """The name and content of the export of ``records`` (consecutive, their chain verified by the caller:
    `audit_export_cli` does before anything is written). `AuditChainError` for a record the format cannot hold
    exactly: a time that is not a finite number (which the proxy never records), a payload that is not canonical
    JSON (which the chain check refuses first)."""
    if not records:
        raise ValueError("an export holds at least one record")
    name = ExportName(records[0].seq, records[-1].seq, records[-1].hash)
    header = {"format": FORMAT, "first_seq": name.first_seq, "last_seq": name.last_seq, "count": len(records),
              "prev_hash": records[0].prev_hash.hex(), "head": name.head.hex()}  # fmt: skip
    lines = [_line(header)] + [_line(_record_json(r)) for r in records]
    return name, b"".join(lines)


def _line(value: object) -> bytes:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode() + b"\n"


def _record_json(r: AuditRecord) -> dict[str, Any]:
    if not math.isfinite(r.time):
        raise AuditChainError(r.seq, "its time is not a finite number: it cannot be exported")
    try:
        payload = json.loads(r.payload)
        canonical = canonical_json(payload)
    except (ValueError, InvalidInput, RecursionError):
        canonical = b""
    if canonical != r.payload:
        raise AuditChainError(r.seq, "payload is not canonical JSON")
    return {
        "seq": r.seq, "time": r.time, "wallet_id": r.wallet_id, "event_type": r.event_type, "payload": payload,
        "receipt": None if r.receipt is None else base64.b64encode(r.receipt).decode(),
        "prev_hash": r.prev_hash.hex(), "hash": r.hash.hex(),
    }  # fmt: skip


def decode_export(key: str, name: ExportName, data: bytes) -> Export:
    """The export stored at ``key`` (named ``name``), checked whole; `ExportError` naming ``key`` otherwise."""
    try:
        lines = data.decode("utf-8").split("\n")
        if lines[-1] != "":
            raise ExportError("it does not end with a newline")
        header = _object(json.loads(lines[0]), _HEADER_FIELDS, "its first line")
        records = tuple(_record(json.loads(line)) for line in lines[1:-1])
        expected = {"format": FORMAT, "first_seq": name.first_seq, "last_seq": name.last_seq, "count": len(records),
                    "head": name.head.hex()}  # fmt: skip
        if any(type(header[field]) is not type(value) or header[field] != value for field, value in expected.items()):
            raise ExportError("its first line does not state its name's range, head and record count")
        prev_hash = _hash(header["prev_hash"], "prev_hash")
        # The records chain from prev_hash at first_seq - 1 up to the head the name states.
        verify_audit_chain(records, after_seq=name.first_seq - 1, after_hash=prev_hash)
        if name.first_seq == 1 and prev_hash != GENESIS_PREV_HASH:
            raise ExportError("it starts at seq 1 but not from the chain's start")
        if not records or records[-1].seq != name.last_seq or not hmac.compare_digest(records[-1].hash, name.head):
            raise ExportError("its records do not end at the seq and head its name states")
    except ExportError as exc:
        raise ExportError(f"export {key}: {exc}") from None
    except AuditChainError as exc:
        raise ExportError(f"export {key}: its records do not chain: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError):  # JSON errors are ValueErrors
        raise ExportError(f"export {key}: not an export (a line is not the JSON of this format)") from None
    return Export(name, prev_hash, records)


def _object(value: object, fields: set[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != fields:
        raise ExportError(f"{what} does not have the format's fields")
    return value


def _int(value: object, field: str) -> int:
    if type(value) is not int:
        raise ExportError(f"{field} is not an integer")
    return value


def _str(value: object, field: str) -> str:
    if type(value) is not str:
        raise ExportError(f"{field} is not a string")
    return value


def _hash(value: object, field: str) -> bytes:
    text = _str(value, field)
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ExportError(f"{field} is not a hash in hex")
    return bytes.fromhex(text)


def _record(value: object) -> AuditRecord:
    r = _object(value, _RECORD_FIELDS, "a record line")
    time = r["time"]
    try:
        finite = type(time) in (int, float) and math.isfinite(time)
    except OverflowError:  # an integer no double holds
        finite = False
    if not finite:
        raise ExportError("a record's time is not a number")
    wallet_id = None if r["wallet_id"] is None else _str(r["wallet_id"], "wallet_id")
    try:
        payload = canonical_json(r["payload"])
        receipt = None if r["receipt"] is None else base64.b64decode(_str(r["receipt"], "receipt"), validate=True)
    except (InvalidInput, binascii.Error) as exc:
        raise ExportError(f"a record's payload or receipt is not as recorded ({type(exc).__name__})") from None
    return AuditRecord(_int(r["seq"], "seq"), float(time), wallet_id, _str(r["event_type"], "event_type"), payload,
                       receipt, _hash(r["prev_hash"], "prev_hash"), _hash(r["hash"], "hash"))  # fmt: skip


def check_log_against_exports(records: Sequence[AuditRecord], exports: Iterable[Export]) -> ExportsReport:
    """Return if every exported record is the log's record at its seq; else `AuditChainError` at the first seq that
    differs (a history rewritten after its export) or past the log's end (a log cut short).

    ``records`` is the whole log, its chain verified by the caller first (`verify_audit_chain`): record ``n`` is at
    index ``n - 1``. Comparing hashes is comparing records: a record's hash covers all its fields and its
    predecessor's hash."""
    count, exported_to = 0, 0
    for export in sorted(exports, key=lambda e: (e.name.first_seq, e.name.last_seq)):
        count += 1
        key = export.name.file_name()
        for exported in export.records:
            if exported.seq > len(records):
                raise AuditChainError(len(records) + 1, f"the log ends at seq {len(records)}, but export {key} holds "
                                      f"records up to seq {export.name.last_seq} (the log was cut short)")  # fmt: skip
            live = records[exported.seq - 1]
            if live.seq != exported.seq or not hmac.compare_digest(live.hash, exported.hash):
                raise AuditChainError(exported.seq, f"the log's record is not the one export {key} holds (the "
                                      "history was rewritten after it was exported)")  # fmt: skip
        exported_to = max(exported_to, export.name.last_seq)
    return ExportsReport(count, exported_to)
