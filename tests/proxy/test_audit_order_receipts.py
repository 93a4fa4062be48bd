"""``waiaas audit verify --receipts`` over order receipts (step 6 of `parent_proxy.audit_receipts`): a real log whose
policy installs, freeze and unfreeze carry the enclave's receipts verifies, their counters and the decision
receipts' in one sequence; a hostile parent that rewrites an order-receipt record and re-chains the log is caught at
that record, and one that drops or copies such a record at the counter check."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest

from enclave_app.order_receipts import OrderReceipt
from parent_proxy.receipt_checks import RECEIPT_TIME_TOLERANCE_SECONDS, split_receipt
from parent_proxy.store.model import AuditRecord
from policies.orders import freeze_document
from policies.signing import sign_document
from tests.proxy.api_harness import new_session_key, provision, running_harness
from tests.proxy.audit_log_rewrites import cli, copy_of, first, read, rewrite, with_payload
from tests.support.policies import MERCHANT

FROZEN = "wallet.enclave_frozen"


@pytest.fixture(scope="module")
def base_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real log (mode none): provisioning, a freeze, an unfreeze, a second policy, a signed transfer."""
    tmp_path = tmp_path_factory.mktemp("orders")
    for h in running_harness(tmp_path, attestation="none"):
        provision(h)
        for sequence, purpose in ((1, "freeze"), (2, "unfreeze")):
            document = freeze_document(h.wallet_id, sequence, int(time.time()) + 600)
            answer = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/{purpose}",
                                  {"envelope": sign_document(purpose, document, h.owner)})  # fmt: skip
            assert answer.json()["enclave_acknowledged"] is True, answer.text
        assert h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": h.policy(2)}).status_code == 200
        assert h.sign(h.transfer(1000, MERCHANT)).status_code == 200
    return tmp_path / "state.db"


@pytest.fixture
def db(base_log: Path, tmp_path: Path) -> Path:
    return copy_of(base_log, tmp_path)


def test_a_real_log_with_order_receipts_verifies(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = [r.event_type for r in read(db)]
    assert events.count("policy.enclave_installed") == 2 and FROZEN in events and "wallet.enclave_unfrozen" in events
    code, out, err = cli(capsys, db, "--receipts")
    assert code == 0, err
    assert "receipts OK: 1 receipts under 1 session records (0 attestation documents verified), 4 order receipts" in out


def _resigned(record: AuditRecord) -> AuditRecord:
    """The same order receipt, signed by a key no session record names."""
    receipt, _ = split_receipt(record.receipt or b"")
    fields = {name: value for name, value in cbor2.loads(receipt).items() if name != "v"}
    return dataclasses.replace(record, receipt=b"".join(new_session_key().sign_order(OrderReceipt(**fields))))


EDITS: dict[str, tuple[Callable[[AuditRecord], AuditRecord], str]] = {
    "sequence": (lambda r: with_payload(r, sequence=5), "order receipt of sequence 1, expected 5"),
    "document": (lambda r: with_payload(r, document_sha256="00" * 32), "order receipt is about another document"),
    "frozen": (lambda r: with_payload(r, frozen=False), "the payload states otherwise than the receipt"),
    "policy hash": (lambda r: with_payload(r, policy_hash=None), "the payload states otherwise than the receipt"),
    "extra field": (lambda r: with_payload(r, note="x"), "the payload states otherwise than the receipt"),
    "no sequence": (lambda r: with_payload(r, sequence="1"), "record without a readable sequence"),
    "event": (
        lambda r: dataclasses.replace(r, event_type="wallet.enclave_unfrozen"),
        "order receipt of purpose 'freeze', expected 'unfreeze'",
    ),
    "wallet": (lambda r: dataclasses.replace(r, wallet_id="w2"), "order receipt names another wallet"),
    "backdated": (
        lambda r: dataclasses.replace(r, time=r.time - RECEIPT_TIME_TOLERANCE_SECONDS - 1),
        "receipt time and the proxy's clock differ by more than 300 s",
    ),
    "re-signed": (_resigned, "order receipt not signed by the session key of seq"),
    "receipt stripped": (lambda r: dataclasses.replace(r, receipt=None), "record without the enclave's receipt"),
}


@pytest.mark.parametrize("case", EDITS)
def test_a_rewritten_order_receipt_record_fails(case: str, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit, message = EDITS[case]
    records = read(db)
    i = first(records, FROZEN)
    records[i] = edit(records[i])
    rewrite(db, records)
    assert cli(capsys, db)[0] == 0  # the chain alone cannot tell
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and f"broken at seq {i + 1}" in err and message in err, err


def test_a_dropped_order_receipt_is_a_counter_gap(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = read(db)
    del records[first(records, FROZEN)]  # counter 2: after provisioning's install
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and "1 receipt counter(s) of this session missing from the log, the first 2" in err, err
    code, out, err = cli(capsys, db, "--receipts", "--allow-gaps")
    assert code == 0 and "3 order receipts" in out and "WARNING: 1 receipt counters not in the log" in err


def test_a_copied_order_receipt_fails(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = read(db)
    rewrite(db, [*records, records[first(records, FROZEN)]])
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and f"broken at seq {len(records) + 1}: receipt counter 2 recorded twice" in err, err


def test_an_order_receipt_before_any_session_record_fails(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records: list[Any] = read(db)
    session = records.pop(first(records, "enclave.session"))
    i = first(records, "policy.enclave_installed")
    rewrite(db, [*records[: i + 1], session, *records[i + 1 :]])  # the session record after the first receipt
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and f"broken at seq {i + 1}: order receipt recorded before any enclave.session record" in err
