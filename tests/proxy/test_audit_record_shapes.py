"""``waiaas audit verify --receipts`` refuses records whose shape the auditor does not expect, even when every
receipt in them verifies (docs/api.md, Audit log): a session record that holds a receipt, an order-receipt record
whose envelope hash is not a hex string. Found by mutation testing: neither refusal had a test. Without the first, a
receipt could ride on a session record unchecked; without the second, a record could state no envelope hash (or
any JSON value) and pass, since the receipt's own fields still agree with the rest of the payload. The log is a real
one, rewritten and re-chained as a hostile parent would (`tests.proxy.audit_log_rewrites`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from parent_proxy.enclave_sessions import ENCLAVE_SESSION_EVENT
from tests.proxy.audit_log_rewrites import cli, copy_of, first, read, real_log, rewrite, with_payload

ORDER_EVENT = "policy.enclave_installed"
"""The real log's order-receipt record (the policy install)."""


@pytest.fixture(scope="module")
def base_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return real_log(tmp_path_factory.mktemp("base"))


def test_a_session_record_holding_a_receipt_fails(
    base_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = copy_of(base_log, tmp_path)
    records = read(db)
    i = first(records, ENCLAVE_SESSION_EVENT)
    records[i] = dataclasses.replace(records[i], receipt=records[first(records, "transaction.signed")].receipt)
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and f"broken at seq {i + 1}: session record holds a receipt" in err, err


@pytest.mark.parametrize("envelope", [None, 7, ["ab"], {"sha256": "ab"}])
def test_an_order_record_whose_envelope_hash_is_not_text_fails(
    envelope: object, base_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = copy_of(base_log, tmp_path)
    records = read(db)
    i = first(records, ORDER_EVENT)
    assert isinstance(json.loads(records[i].payload)["envelope_sha256"], str)
    records[i] = with_payload(records[i], envelope_sha256=envelope)
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1, err
    assert f"broken at seq {i + 1}: {ORDER_EVENT} record without a readable sequence, document or receipt" in err


def test_the_log_rewritten_with_what_it_held_passes(
    base_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = copy_of(base_log, tmp_path)
    records = read(db)
    i = first(records, ORDER_EVENT)
    records[i] = with_payload(records[i], envelope_sha256=json.loads(records[i].payload)["envelope_sha256"])
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 0, err
