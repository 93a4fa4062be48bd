"""``waiaas audit verify`` on a log a hostile parent rewrote and re-chained, or on a file that is not what it should
be (security review, eighth session). Each case failed before: it passed, crashed with a traceback, or changed the
file under audit."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from parent_proxy.receipt_checks import RECEIPT_TIME_TOLERANCE_SECONDS
from parent_proxy.store.model import AuditRecord
from tests.proxy.audit_log_rewrites import cli, copy_of, first, read, real_log, rewrite, with_payload


@pytest.fixture(scope="module")
def base_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real log (2 signed transfers, 1 signed message; mode none), copied for each test."""
    return real_log(tmp_path_factory.mktemp("base"))


@pytest.fixture
def db(base_log: Path, tmp_path: Path) -> Path:
    return copy_of(base_log, tmp_path)


def _signed(records: list[AuditRecord]) -> int:
    return first(records, "transaction.signed")


# -- signed records and what their receipts state ------------------------------------------------------------


@pytest.mark.parametrize("event", ["transaction.signed", "message.signed"])
def test_a_signed_record_without_a_receipt_fails(event: str, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = read(db)
    forged = dataclasses.replace(records[first(records, event)], receipt=None)
    rewrite(db, [*records, forged])  # appended and re-chained: the chain itself verifies
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and f"{event} record without the enclave's receipt" in err, err


def test_stripping_every_receipt_and_session_record_fails(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [dataclasses.replace(r, receipt=None) for r in read(db) if r.event_type != "enclave.session"]
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and "without the enclave's receipt" in err, err


def _decision(record: AuditRecord, **changes: object) -> AuditRecord:
    decision = {**json.loads(record.payload)["decision"], **changes}
    return with_payload(record, decision=decision)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: _decision(r, policy_sequence=99), "another policy sequence"),
        (
            lambda r: with_payload(
                r, decision={k: v for k, v in json.loads(r.payload)["decision"].items() if k != "policy_sequence"}
            ),
            "another policy sequence",
        ),
        (lambda r: with_payload(r, decision=None), "transaction receipt without the enclave's decision"),
        (lambda r: _decision(r, reasons=[{"rule": "owner_override"}]), "other reasons"),
        (
            lambda r: dataclasses.replace(r, time=r.time - RECEIPT_TIME_TOLERANCE_SECONDS - 1),
            "receipt time and the proxy's clock differ by more than 300 s",
        ),
    ],
    ids=["policy-sequence", "policy-sequence-removed", "decision-removed", "reasons", "backdated"],
)
def test_a_payload_rewritten_under_a_valid_receipt_fails(
    edit: object, message: str, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = read(db)
    i = _signed(records)
    records[i] = edit(records[i])  # type: ignore[operator]
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and f"broken at seq {i + 1}" in err and message in err, err


def test_a_record_time_within_the_tolerance_passes(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = read(db)
    i = _signed(records)
    records[i] = dataclasses.replace(records[i], time=records[i].time + RECEIPT_TIME_TOLERANCE_SECONDS - 5)
    rewrite(db, records)
    assert cli(capsys, db, "--receipts")[0] == 0


def test_a_failure_quoting_the_log_cannot_paint_over_the_terminal(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = read(db)
    ok = cli(capsys, db, "--receipts")[1].splitlines()[0]
    i = _signed(records)  # its event type carries a carriage return, an erase-line and an OK of its own
    records[i] = dataclasses.replace(records[i], event_type=f"x\r\x1b[2K{ok}\n\x9b1A")
    rewrite(db, records)
    code, out, err = cli(capsys, db, "--receipts")
    assert code == 1 and out == "", out
    shown = f"x\\x0d\\x1b[2K{ok}\\x0a\\x9b1A"  # one line, the controls escaped
    assert err == f"audit verify: FAILED: audit chain broken at seq {i + 1}: unexpected receipt on a {shown} record\n"


# -- receipts missing from the log ---------------------------------------------------------------------------


def test_a_receipt_removed_from_the_middle_of_a_session_fails_unless_gaps_are_allowed(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = read(db)
    del records[_signed(records)]  # the first signed transfer: counter 2 (1: the policy install's order receipt)
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and "1 receipt counter(s) of this session missing from the log, the first 2" in err, err
    code, out, err = cli(capsys, db, "--receipts", "--allow-gaps")
    assert code == 0 and "receipts OK" in out and "WARNING: 1 receipt counters not in the log" in err
    assert cli(capsys, db, "--allow-gaps")[0] == 2  # --allow-gaps goes with --receipts


def test_a_head_kept_earlier_still_anchors_a_log_that_has_grown(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = read(db)
    kept = records[3].hash.hex()
    assert cli(capsys, db, "--receipts", "--expect-head", kept)[0] == 0
    rewrite(db, records[:3])  # truncated below the kept head
    code, _, err = cli(capsys, db, "--expect-head", kept)
    assert code == 1 and "the expected head is not in the chain" in err


# -- the file itself --------------------------------------------------------------------------------------------


def test_verifying_changes_nothing_in_the_file(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = hashlib.sha256(db.read_bytes()).digest()
    assert cli(capsys, db, "--receipts")[0] == 0
    assert hashlib.sha256(db.read_bytes()).digest() == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["state.db"]  # no journal, -wal or -shm left
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # a restorable backup stays one
    conn.close()


@pytest.mark.parametrize("how", ["dropped", "empty-file", "other-tables"])
def test_a_file_without_an_audit_log_is_unreadable_not_a_pass(
    how: str, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if how == "dropped":
        conn = sqlite3.connect(db)
        conn.execute("DROP TABLE audit_log")
        conn.commit()
        conn.close()
    elif how == "empty-file":
        db.write_bytes(b"")
    else:
        db.unlink()
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE notes (x)")
        conn.close()
    code, out, err = cli(capsys, db, "--receipts")
    assert code == 2 and "holds no audit log" in err and "OK" not in out, err


@pytest.mark.parametrize("seq", [0, -1])
def test_rows_outside_seq_one_to_n_are_read_and_refused(seq: int, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = read(db)
    conn = sqlite3.connect(db)
    with conn:
        extra = dataclasses.replace(records[0], seq=seq)
        conn.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?)", dataclasses.astuple(extra))
    conn.close()
    code, _, err = cli(capsys, db)
    assert code == 1 and f"found seq {seq} where seq 1 belongs" in err, err


@pytest.mark.parametrize(
    ("column", "value"),
    [("prev_hash", "text"), ("hash", b"short"), ("time", "soon"), ("wallet_id", b"\x00"), ("payload", 7),
     ("receipt", "text")],
)  # fmt: skip
def test_a_column_of_the_wrong_type_is_a_broken_record_not_a_traceback(
    column: str, value: object, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(f"UPDATE audit_log SET {column} = ? WHERE seq = 2", (value,))  # noqa: S608 (fixed names)
    conn.close()
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and f"seq 2: {column} has the wrong type" in err, err


def test_a_payload_nested_too_deep_is_a_broken_record_not_a_traceback(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = read(db)
    records[1] = dataclasses.replace(records[1], payload=b"[" * 100_000 + b"]" * 100_000)
    rewrite(db, records)
    code, _, err = cli(capsys, db)
    assert code == 1 and "seq 2: payload is not canonical JSON" in err, err


def test_an_unusable_root_certificate_is_bad_input(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root.pem"
    root.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    code, _, err = cli(capsys, db, "--receipts", "--root-pem", str(root), "--pcr", "0=" + "aa" * 48)
    assert code == 2 and "--root-pem: not a PEM certificate" in err, err
