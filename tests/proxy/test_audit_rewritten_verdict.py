"""``waiaas audit verify --receipts`` fails on a decision whose verdict was rewritten under a valid receipt.

The receipt states the enclave's verdict, and a record's decision must agree with it (docs/api.md, Audit log; the
rule of `parent_proxy.receipt_checks.check_receipt_statement`). Found by mutation testing: the other fields of a
rewritten decision (policy sequence, reasons) had tests, the verdict none, so the auditor's verdict comparison could
be removed unnoticed. The log is a real one (`tests.proxy.audit_log_rewrites`), rewritten and re-chained as a
hostile parent would, so the hash chain itself verifies.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.proxy.audit_log_rewrites import cli, copy_of, first, read, real_log, rewrite, with_payload


@pytest.fixture(scope="module")
def base_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return real_log(tmp_path_factory.mktemp("base"))


@pytest.mark.parametrize("verdict", ["deny", "escalate"])
def test_a_signed_transfer_recorded_with_another_verdict_fails(
    verdict: str, base_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = copy_of(base_log, tmp_path)
    records = read(db)
    i = first(records, "transaction.signed")
    decision = json.loads(records[i].payload)["decision"]
    assert decision["verdict"] == "allow"  # what the receipt states
    records[i] = with_payload(records[i], decision={**decision, "verdict": verdict})
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and f"broken at seq {i + 1}" in err and "receipt verdict differs from the decision" in err, err


def test_the_same_log_rewritten_with_the_verdict_it_had_passes(
    base_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = copy_of(base_log, tmp_path)
    records = read(db)
    i = first(records, "transaction.signed")
    records[i] = with_payload(records[i], decision=json.loads(records[i].payload)["decision"])
    rewrite(db, records)
    assert cli(capsys, db, "--receipts")[0] == 0
