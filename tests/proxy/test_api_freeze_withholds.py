"""A freeze stored while a request is in the enclave stops its signature (`parent_proxy.withheld`), on both stores:
the request read the wallet unfrozen, the enclave signed before the freeze order reached it, and the owner's freeze
was stored (and answered) before the signature's record. The record's transaction is refused (`StillUnfrozen`), the
answer is 403 ``wallet_frozen``, nothing is handed out or broadcast, the reservation is released, an owner approval
is pending again, and the receipt is recorded as ``transaction.withheld`` (``message.withheld``), so that
``waiaas audit verify --receipts`` passes on the log without gaps.

The pause between the enclave's answer and the record is the store seam every API test uses (`FailingStore.before`):
the owner's freeze (or freeze and unfreeze) is sent through the API from there, as another host would.

Before (review s7): the approve answered 200 with the signed transaction after the owner's freeze was answered 200;
the audit log read ``approval.approved``, ``wallet.frozen``, ``transaction.signed``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from parent_proxy.audit_receipts import verify_audit_receipts
from parent_proxy.errors import AuditChainError
from tests.proxy.api_harness import Harness, pending_approval_ids, provision, running_harness, spy_calls
from tests.proxy.audit_log_rewrites import cli
from tests.proxy.conftest import provisioned_on_store
from tests.proxy.harness_calls import ESCALATING, escalate, order, records, send, sign_message
from tests.support.policies import MERCHANT

SMALL = 1_000_000  # under the example policy's automatic threshold: signed at once
FROZEN = "the wallet is frozen until the owner unfreezes it"


@pytest.fixture(params=["sqlite", "dynamodb"])
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """A provisioned wallet (off-chain messages allowed) on each store, with a second store thread: the owner's
    freeze runs while the request is held in the store seam."""
    yield from provisioned_on_store(
        request,
        tmp_path,
        store_threads=2,
        policy=lambda harness: harness.policy(1, offchain_messages={"allowed": True}),
    )


def meanwhile(h: Harness, method: str, *orders: tuple[int, str]) -> list[dict[str, Any]]:
    """Before the store's next ``method`` call (the record of a signature the enclave made), the owner sends
    ``orders`` ((sequence, ``freeze`` or ``unfreeze``), each answered 200); the list fills with their answers."""
    answers: list[dict[str, Any]] = []

    def owner_orders() -> None:
        h.store.before.pop(method)
        for sequence, purpose in orders:
            answers.append(send(h, order(h, sequence, purpose), purpose))

    h.store.before[method] = owner_orders
    return answers


def withheld_record(h: Harness) -> dict[str, Any]:
    (record,) = [r for r in records(h) if r.event_type.endswith(".withheld")]
    assert record.receipt is not None
    payload: dict[str, Any] = json.loads(record.payload)
    return payload


def refused_as_frozen(answer: Any) -> None:
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == {"code": "wallet_frozen", "message": FROZEN}
    assert "signature" not in answer.text and "signed_transaction" not in answer.text


def test_an_approval_signed_as_the_owner_froze_is_withheld_and_pending_again(h: Harness) -> None:
    approval_id, body, path = escalate(h)
    froze = meanwhile(h, "finish_signing", (1, "freeze"))
    refused_as_frozen(h.owner_call("POST", path, body))
    assert froze[0]["frozen"] is True and froze[0]["enclave_acknowledged"] is True
    events = [e for e in h.audit_events() if not e.startswith("wallet.enclave_")]
    assert events[events.index("approval.approved") :] == [
        "approval.approved", "wallet.frozen", "transaction.withheld", "approval.reopened",
    ]  # fmt: skip
    assert "transaction.signed" not in events
    assert h.spent() == 0  # the reservation given back
    assert pending_approval_ids(h) == [approval_id]  # the owner rejects it, or approves it once unfrozen
    payload = withheld_record(h)
    assert payload["reason"] == "the wallet was frozen, or took an owner order, while the request was being signed"
    assert "signature" not in payload and len(bytes.fromhex(payload["message_sha256"])) == 32
    report = verify_audit_receipts(records(h))  # no gap: the withheld signature's receipt is in the log
    assert (report.withheld, report.counter_gaps) == (1, 0)
    # Unfrozen, the owner's approval signs it once.
    send(h, order(h, 2, "unfreeze"), "unfreeze")
    signed = h.owner_call("POST", path, body)
    assert signed.status_code == 200, signed.text
    assert h.spent() == ESCALATING and h.audit_events().count("transaction.signed") == 1
    assert verify_audit_receipts(records(h)).withheld == 1


def test_an_agent_signature_made_as_the_owner_froze_is_withheld_and_not_sent(h: Harness) -> None:
    sent = spy_calls(h.services.chain, "submit")
    tx = h.transfer(SMALL, MERCHANT)
    meanwhile(h, "finish_signing", (1, "freeze"))
    refused_as_frozen(h.sign(tx, key="k", submit=True))
    assert sent == [] and h.spent() == 0
    replay = h.sign(tx, key="k", submit=True)  # a decision: stored under the key
    refused_as_frozen(replay)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    events = h.audit_events()
    assert "transaction.signed" not in events and events[-1] == "transaction.withheld"
    assert events.index("wallet.frozen") < events.index("transaction.withheld")
    assert verify_audit_receipts(records(h)).withheld == 1


def test_a_freeze_and_unfreeze_meanwhile_withhold_it_too(h: Harness) -> None:
    """The wallet is unfrozen again when the record is written, but a freeze was answered in between."""
    tx = h.transfer(SMALL, MERCHANT)
    meanwhile(h, "finish_signing", (1, "freeze"), (2, "unfreeze"))
    refused_as_frozen(h.sign(tx, key="k"))
    assert h.store.get_wallet(h.wallet_id).frozen is False and h.spent() == 0
    assert h.sign(tx, key="k2").status_code == 200  # a request that read the wallet since: signed


def test_a_withheld_record_the_store_cannot_write_gives_everything_back(h: Harness) -> None:
    """The store fails as the withheld record is written: 503, nothing handed out or stored under the key (the agent
    may send it again), the reservation released, and nothing recorded (the receipt's counter a gap, as for any
    store failure)."""
    tx = h.transfer(SMALL, MERCHANT)

    def freeze_then_fail() -> None:
        h.store.before.pop("finish_signing")
        send(h, order(h, 1, "freeze"), "freeze")
        h.store.failing.add("apply_audited")  # the withheld record's transaction

    h.store.before["finish_signing"] = freeze_then_fail
    answer = h.sign(tx, key="k")
    h.store.failing.discard("apply_audited")
    assert answer.status_code == 503, answer.text
    assert "signature" not in answer.text and "signed_transaction" not in answer.text
    assert h.spent() == 0
    assert not any(e.endswith((".withheld", ".signed")) for e in h.audit_events())
    refused_as_frozen(h.sign(tx, key="k"))  # the key was freed: decided anew, on the frozen wallet


def test_an_offchain_message_signed_as_the_owner_froze_is_withheld(h: Harness) -> None:
    meanwhile(h, "apply_audited", (1, "freeze"))  # the record of the message's signature
    refused_as_frozen(sign_message(h))
    events = h.audit_events()
    assert "message.signed" not in events and events[-1] == "message.withheld"
    assert verify_audit_receipts(records(h)).withheld == 1


def test_a_request_finished_before_the_freeze_is_signed(h: Harness) -> None:
    """The other order: the signature's record first, then the freeze. Nothing withheld."""
    answer = h.sign(h.transfer(SMALL, MERCHANT))
    assert answer.status_code == 200, answer.text
    send(h, order(h, 1, "freeze"), "freeze")
    assert verify_audit_receipts(records(h)).withheld == 0


def test_the_auditor_holds_a_withheld_record_to_its_receipt(h: Harness) -> None:
    """A withheld record must hold a receipt that states a signature; the same receipt on a record of a refusal, or
    the record without it, fails the check (so the record cannot pass off another receipt, nor none)."""
    meanwhile(h, "finish_signing", (1, "freeze"))
    refused_as_frozen(h.sign(h.transfer(SMALL, MERCHANT)))
    log = records(h)
    at = next(i for i, r in enumerate(log) if r.event_type == "transaction.withheld")
    as_refusal = [*log[:at], replace(log[at], event_type="transaction.refused"), *log[at + 1 :]]
    with pytest.raises(AuditChainError, match="receipt disagrees with the record: receipt states a signature"):
        verify_audit_receipts(as_refusal)
    without = [*log[:at], replace(log[at], receipt=None), *log[at + 1 :]]
    with pytest.raises(AuditChainError, match=r"transaction\.withheld record without the enclave's receipt"):
        verify_audit_receipts(without)


def test_audit_verify_passes_and_warns_of_withheld_signatures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for h in running_harness(tmp_path, store_threads=2):  # the command reads a SQLite state file
        provision(h)
        meanwhile(h, "finish_signing", (1, "freeze"))
        refused_as_frozen(h.sign(h.transfer(SMALL, MERCHANT)))
    code, out, err = cli(capsys, tmp_path / "state.db", "--receipts")
    assert code == 0 and "receipts OK" in out, err
    assert "1 signatures withheld (transaction.withheld, message.withheld" in err
