"""A real audit log, read and rewritten as a hostile parent would, and ``waiaas audit verify`` run on it."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest

from enclave_app.nsm import DeviceNsm
from enclave_app.order_receipts import OrderReceipt
from enclave_app.receipts import SessionKey
from parent_proxy.audit import iter_audit_records, record_hash
from parent_proxy.order_receipts import ORDER_RECEIPT_EVENTS
from parent_proxy.receipt_checks import split_receipt
from parent_proxy.store.model import GENESIS_PREV_HASH, AuditRecord
from parent_proxy.store.sqlite import SqliteStore
from policies.cli import main
from tests.fakes.fake_nsm_device import FakeNsmDevice
from tests.proxy.api_harness import provision, running_harness
from tests.proxy.harness_calls import sign_message
from tests.support.nitro_test_pki import NitroTestPki, Validity
from tests.support.policies import MERCHANT

PCRS = {i: bytes([0xB0 + i]) * 48 for i in range(16)}
"""The PCRs of the enclave of `nitro_log` (the fake NSM device's)."""


def cli(capsys: pytest.CaptureFixture[str], db: Path, *args: str) -> tuple[int, str, str]:
    code = main(["audit", "verify", "--db", str(db), *args])
    out, err = capsys.readouterr()
    return code, out, err


def real_log(tmp_path: Path, *, attestation: str = "none", nsm: Any = None) -> Path:
    """A state database whose audit log the real proxy and enclave wrote: 2 signed transfers, 1 signed message."""
    for h in running_harness(tmp_path, attestation=attestation, nsm=nsm):
        provision(h, h.policy(1, offchain_messages={"allowed": True}))
        for _ in range(2):
            assert h.sign(h.transfer(1000, MERCHANT)).status_code == 200
        assert sign_message(h).status_code == 200
    return tmp_path / "state.db"


def pki_window() -> Validity:
    """Validity of a test PKI's certificates: from an hour ago to three hours from now."""
    now = datetime.now(UTC)
    return {"not_before": now - timedelta(hours=1), "not_after": now + timedelta(hours=3)}


def nitro_log(tmp_path: Path) -> tuple[Path, NitroTestPki, Path]:
    """`real_log` from an enclave whose NSM is the real driver over the fake device (test PKI root, `PCRS`); the test
    PKI; the root PEM written to ``tmp_path``/root.pem."""
    pki = NitroTestPki.create(**pki_window())
    device = FakeNsmDevice(pki=pki, now=datetime.now(UTC), pcrs=dict(PCRS))
    db = real_log(tmp_path, attestation="nitro", nsm=DeviceNsm(-1, ioctl=device.ioctl))
    (tmp_path / "root.pem").write_bytes(pki.root_pem)
    return db, pki, tmp_path / "root.pem"


def resign(record: AuditRecord, signer: SessionKey) -> AuditRecord:
    """The same receipt with a signature by ``signer`` (a decision receipt's, or an order receipt's in its domain)."""
    assert record.receipt is not None
    receipt, _ = split_receipt(record.receipt)
    if record.event_type in ORDER_RECEIPT_EVENTS:
        fields = {name: value for name, value in cbor2.loads(receipt).items() if name != "v"}
        return dataclasses.replace(record, receipt=b"".join(signer.sign_order(OrderReceipt(**fields))))
    return dataclasses.replace(record, receipt=receipt + signer.sign_encoded(receipt))


def copy_of(base_log: Path, tmp_path: Path) -> Path:
    """``base_log`` copied to ``tmp_path``/state.db for one test to rewrite, as docs/selfhost.md makes a backup
    (SQLite's online backup, then out of WAL mode)."""
    copy = tmp_path / "state.db"
    source, target = sqlite3.connect(base_log), sqlite3.connect(copy)
    source.backup(target)
    target.execute("PRAGMA journal_mode = DELETE")
    target.close()
    source.close()
    return copy


def read(db: Path) -> list[AuditRecord]:
    store = SqliteStore(db)
    try:
        return list(iter_audit_records(store))
    finally:
        store.close()


def rewrite(db: Path, records: list[AuditRecord]) -> None:
    """What a hostile parent can do: replace the log with ``records``, renumbered and re-hashed from genesis."""
    sealed, prev = [], GENESIS_PREV_HASH
    for seq, record in enumerate(records, start=1):
        unsealed = dataclasses.replace(record, seq=seq, prev_hash=prev, hash=b"")
        prev = record_hash(unsealed)
        sealed.append(dataclasses.replace(unsealed, hash=prev))
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM audit_log")
        conn.executemany(
            "INSERT INTO audit_log (seq, time, wallet_id, event_type, payload, receipt, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(r.seq, r.time, r.wallet_id, r.event_type, r.payload, r.receipt, r.prev_hash, r.hash) for r in sealed],
        )
    conn.close()


def with_payload(record: AuditRecord, **changes: Any) -> AuditRecord:
    payload = {**json.loads(record.payload), **changes}
    return dataclasses.replace(record, payload=json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())


def first(records: list[AuditRecord], event_type: str) -> int:
    return next(i for i, r in enumerate(records) if r.event_type == event_type)
