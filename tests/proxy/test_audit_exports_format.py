"""The audit export format (`parent_proxy.audit_exports`): what the exporter writes reads back as the same records,
an object that is not what it wrote is `ExportError` whatever its bytes (hypothesis), and the check of a log against
exports names the first record that differs."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parent_proxy.audit import AuditLog, iter_audit_records, record_hash
from parent_proxy.audit_exports import (
    Export,
    ExportError,
    check_log_against_exports,
    decode_export,
    encode_export,
    parse_export_name,
)
from parent_proxy.errors import AuditChainError
from parent_proxy.store.model import AuditRecord
from parent_proxy.store.sqlite import SqliteStore
from tests.proxy.conftest import FakeClock

fuzz = settings(max_examples=200, deadline=None)


def _log(count: int = 6) -> list[AuditRecord]:
    """A log of ``count`` records (receipts on every other one, payloads with non-ASCII text), written by the store."""
    with tempfile.TemporaryDirectory() as directory:
        sqlite = SqliteStore(Path(directory) / "state.db")
        try:
            log = AuditLog(sqlite, FakeClock())
            for i in range(count):
                receipt = bytes([i]) * 80 if i % 2 else None
                log.append("test.event", {"n": i, "nested": {"text": "naïve ✓", "list": [1, None, True]}},
                           wallet_id=None if i % 3 == 0 else f"w{i}", receipt=receipt)  # fmt: skip
            return list(iter_audit_records(sqlite))
        finally:
            sqlite.close()


LOG = _log()


def _export(records: list[AuditRecord]) -> tuple[str, bytes, Export]:
    name, data = encode_export(records)
    key = name.file_name()
    return key, data, decode_export(key, name, data)


def test_an_export_reads_back_as_the_records_it_holds() -> None:
    for part in (LOG, LOG[2:5], LOG[-1:]):
        key, data, export = _export(part)
        assert export.records == tuple(part) and export.prev_hash == part[0].prev_hash
        assert parse_export_name(key) == export.name
        assert data.endswith(b"\n") and data.count(b"\n") == len(part) + 1
    assert encode_export(LOG)[1] == encode_export(list(LOG))[1]  # a function of the records alone


def test_a_record_the_format_cannot_hold_exactly_is_refused() -> None:
    with pytest.raises(AuditChainError, match="seq 1: its time is not a finite number"):
        encode_export([dataclasses.replace(LOG[0], time=float("nan")), *LOG[1:]])
    with pytest.raises(AuditChainError, match="seq 1: payload is not canonical JSON"):
        encode_export([dataclasses.replace(LOG[0], payload=b'{"b": 1, "a": 2}'), *LOG[1:]])


@pytest.mark.parametrize(
    "name",
    [
        f"{0:020d}-{1:020d}-{'0' * 64}.jsonl",  # seqs start at 1
        f"{5:020d}-{4:020d}-{'0' * 64}.jsonl",  # a range that ends before it starts
        f"{1:020d}-{2**63:020d}-{'0' * 64}.jsonl",  # past any store's seq
        f"{1:020d}-{2:020d}-{'0' * 63}.jsonl",
        f"{1:020d}-{2:020d}-{'A' * 64}.jsonl",
        f"{1:020d}-{2:020d}-{'0' * 64}.json",
        f"1-2-{'0' * 64}.jsonl",
    ],
)
def test_names_of_another_shape_are_not_exports(name: str) -> None:
    assert parse_export_name(name) is None


def _edited(data: bytes, line: int, **changes: object) -> bytes:
    lines = data.split(b"\n")
    value = json.loads(lines[line])
    value.update(changes)
    lines[line] = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return b"\n".join(lines)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: _edited(d, 0, count=5), "its first line does not state its name's range, head and record count"),
        (lambda d: _edited(d, 0, format="v2"), "its first line does not state"),
        (lambda d: _edited(d, 0, count=6.0), "its first line does not state"),  # a number, but not the count
        (lambda d: _edited(d, 0, extra=1), "its first line does not have the format's fields"),
        (lambda d: _edited(d, 2, event_type="x.y"), "its records do not chain: audit chain broken at seq 2: hash"),
        (lambda d: _edited(d, 2, seq=7), "its records do not chain: audit chain broken at seq 2: found seq 7"),
        (lambda d: _edited(d, 2, time="now"), "a record's time is not a number"),
        (lambda d: _edited(d, 2, time=10**400), "a record's time is not a number"),  # no double holds it
        (lambda d: _edited(d, 2, payload={"x": 1.5}), "a record's payload or receipt is not as recorded"),
        (lambda d: _edited(d, 2, receipt="not base64!"), "a record's payload or receipt is not as recorded"),
        (lambda d: _edited(d, 1, prev_hash="00"), "prev_hash is not a hash in hex"),
        (lambda d: d[:-1], "it does not end with a newline"),
        (lambda d: d.replace(b"\n", b"\n\n", 1), "not an export"),
        (lambda d: b"\xff" + d, "not an export"),
    ],
)
def test_an_export_that_is_not_what_the_exporter_wrote_is_refused(edit: object, message: str) -> None:
    name, data = encode_export(LOG)
    with pytest.raises(ExportError, match="^export K: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        decode_export("K", name, edit(data))  # type: ignore[operator]


@fuzz
@given(st.binary(max_size=400))
def test_any_bytes_are_an_export_or_export_error(data: bytes) -> None:
    name, _ = encode_export(LOG[:2])
    with contextlib.suppress(ExportError):  # anything else (a traceback) fails
        decode_export("K", name, data)


@fuzz
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_a_changed_byte_is_refused_or_changes_nothing(position: int, value: int) -> None:
    name, data = encode_export(LOG)
    index = position % len(data)
    changed = data[:index] + bytes([value]) + data[index + 1 :]
    try:
        export = decode_export("K", name, changed)
    except ExportError:
        return
    assert export.records == tuple(LOG)


def _rechained(records: list[AuditRecord], start: int, **changes: Any) -> list[AuditRecord]:
    """``records`` with the record at index ``start`` changed and every later one re-hashed (a rewritten history)."""
    out = list(records[:start])
    prev = records[start - 1].hash if start else records[0].prev_hash
    for i, record in enumerate(records[start:]):
        unsealed = dataclasses.replace(record, prev_hash=prev, hash=b"", **(changes if i == 0 else {}))
        prev = record_hash(unsealed)
        out.append(dataclasses.replace(unsealed, hash=prev))
    return out


def test_the_log_is_checked_against_every_export_and_the_first_difference_is_named() -> None:
    exports = [_export(LOG[0:3])[2], _export(LOG[3:6])[2], _export(LOG[1:4])[2]]  # overlapping, as two hosts make
    report = check_log_against_exports(LOG, exports)
    assert (report.exports, report.exported_to) == (3, 6)
    assert check_log_against_exports([*LOG, *_log(8)[6:]], exports).exported_to == 6
    with pytest.raises(AuditChainError, match=r"seq 4: the log's record is not the one export 0+4-0+6-"):
        check_log_against_exports(_rechained(LOG, 3, event_type="test.forged"), exports[:2])
    with pytest.raises(AuditChainError, match=r"seq 2: the log's record is not the one export 0+1-0+3-"):
        check_log_against_exports(_rechained(LOG, 1, wallet_id="w-forged"), exports)
    with pytest.raises(AuditChainError, match=r"seq 5: the log ends at seq 4, but export .* holds records up to seq 6"):
        check_log_against_exports(LOG[:4], exports)
