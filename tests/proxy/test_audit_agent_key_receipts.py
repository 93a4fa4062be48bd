"""Agent-key receipts, checked by the proxy when they arrive and by ``waiaas audit verify --receipts`` in the log.

A real rotation (the proxy, the enclave app with its local sealer, the embedded chain; the multisig account the
rotation would leave is written into the chain, as in `test_api_agent_key_rotation`) writes ``agent_key.candidate``,
``agent_key.rotation_signed`` and ``agent_key.switched``, each holding the enclave's agent-key receipt. The log
verifies; a hostile parent that rewrites one of those records and re-chains the log is caught at that record. The
proxy refuses an answer whose agent-key receipt does not check (503, nothing stored, ``agent_key.failed``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from solders.pubkey import Pubkey
from solders.signature import Signature

from enclave_app.receipts import AgentKeyReceipt, verify_agent_key_receipt
from parent_proxy.order_receipts import ORDER_RECEIPT_EVENTS
from parent_proxy.receipt_checks import RECEIPT_TIME_TOLERANCE_SECONDS
from parent_proxy.store.model import AuditRecord
from tests.proxy.api_harness import Harness, new_session_key, running_harness
from tests.proxy.audit_log_rewrites import cli, copy_of, first, read, rewrite, with_payload
from tests.proxy.rotation_requests import (
    agent_key_path,
    chain_shows,
    multisig_wallet,
    rotation_body,
    session_key,
    switch_body,
)
from tests.support.policies import MERCHANT
from tests.support.squads_rotation import rotation_transaction

EVENTS = ("agent_key.candidate", "agent_key.rotation_signed", "agent_key.switched")


def rotate(h: Harness) -> Pubkey:
    """The three rotation steps through the API on a multisig wallet; the new agent key."""
    multisig = multisig_wallet(h)
    made = h.owner_call("POST", agent_key_path(h, "/candidate"))
    assert made.status_code == 201, made.text
    new = Pubkey.from_string(made.json()["candidate_public_key"])
    raw = rotation_transaction(multisig, owner=h.owner_pub, agent=h.agent, new_agent=new)
    signed = h.owner_call("POST", agent_key_path(h, "/rotation"), rotation_body(h, raw, new))
    assert signed.status_code == 200, signed.text
    chain_shows(h, [h.owner_pub, new])
    switched = h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new))
    assert switched.status_code == 200, switched.text
    return new


@pytest.fixture(scope="module")
def base_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real log: a multisig wallet rotated before anything else was signed, then a transfer with the new key."""
    tmp_path = tmp_path_factory.mktemp("rotation")
    for h in running_harness(tmp_path, attestation="none"):
        h.agent = rotate(h)
        assert h.sign(h.transfer(1000, MERCHANT)).status_code == 200
    return tmp_path / "state.db"


@pytest.fixture
def db(base_log: Path, tmp_path: Path) -> Path:
    return copy_of(base_log, tmp_path)


def test_a_rotation_log_verifies_with_its_agent_key_receipts(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = read(db)
    events = [r.event_type for r in records]
    # The first receipt the proxy saw was the candidate's: it attested the enclave and recorded the session first.
    assert events.index("enclave.session") < events.index("agent_key.candidate")
    code, out, err = cli(capsys, db, "--receipts")
    assert code == 0, err
    assert "1 receipts under 1 session records" in out and "3 agent-key receipts" in out, out


def _payload(record: AuditRecord) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(record.payload)
    return loaded


def _other_key() -> str:
    return str(Pubkey.new_unique())


def _moved_receipt(source_event: str) -> Any:
    """The edit that puts the receipt of ``source_event``'s record into the record under test."""

    def edit(record: AuditRecord, records: list[AuditRecord]) -> AuditRecord:
        source = _payload(records[first(records, source_event)])
        return with_payload(record, receipt=source["receipt"], receipt_signature=source["receipt_signature"])

    return edit


def _resigned(record: AuditRecord, records: list[AuditRecord]) -> AuditRecord:
    """The same receipt, signed by a session key nothing recorded."""
    fields = cbor2.loads(base64.b64decode(_payload(record)["receipt"]))
    del fields["v"]
    _, signature = new_session_key().sign_agent_key(AgentKeyReceipt(**fields))
    return with_payload(record, receipt_signature=str(Signature.from_bytes(signature)))


def _into_record_field(record: AuditRecord, records: list[AuditRecord]) -> AuditRecord:
    payload = _payload(record)
    receipt = base64.b64decode(payload["receipt"]) + bytes(Signature.from_string(payload["receipt_signature"]))
    return dataclasses.replace(record, receipt=receipt)


def _without(name: str) -> Any:
    def edit(record: AuditRecord, records: list[AuditRecord]) -> AuditRecord:
        payload = {k: v for k, v in _payload(record).items() if k != name}
        return dataclasses.replace(record, payload=json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())

    return edit


EDITS: dict[str, tuple[str, Any, str]] = {
    # case: (record edited, edit, message expected)
    "candidate: another candidate key": (
        "agent_key.candidate", lambda r, _: with_payload(r, candidate_public_key=_other_key()),
        "names another new agent public key",
    ),
    "candidate: another old key": (
        "agent_key.candidate", lambda r, _: with_payload(r, agent_public_key=_other_key()),
        "names another agent public key",
    ),
    "candidate: another owner key": (
        "agent_key.candidate", lambda r, _: with_payload(r, owner_public_key=_other_key()),
        "names another owner public key",
    ),
    "candidate: no owner key": (
        "agent_key.candidate", _without("owner_public_key"), "without a readable agent-key receipt and keys",
    ),
    "candidate: no receipt": ("agent_key.candidate", _without("receipt"), "without a readable agent-key receipt"),
    "candidate: another wallet": (
        "agent_key.candidate", lambda r, _: dataclasses.replace(r, wallet_id="w2"), "names another wallet",
    ),
    "candidate: backdated": (
        "agent_key.candidate",
        lambda r, _: dataclasses.replace(r, time=r.time - RECEIPT_TIME_TOLERANCE_SECONDS - 1),
        "differ by more than 300 s",
    ),
    "candidate: re-signed": ("agent_key.candidate", _resigned, "receipt not signed by the session key of seq"),
    "candidate: receipt in the record field": (
        "agent_key.candidate", _into_record_field, "unexpected receipt field on a agent_key.candidate record",
    ),
    "rotation: another message": (
        "agent_key.rotation_signed", lambda r, _: with_payload(r, message_sha256="00" * 32),
        "is about another message",
    ),
    "rotation: no message": (
        "agent_key.rotation_signed", _without("message_sha256"), "states no message_sha256",
    ),
    "rotation: the candidate's receipt": (
        "agent_key.rotation_signed", _moved_receipt("agent_key.candidate"),
        "purpose 'agent_key_candidate', expected 'agent_key_rotation'",
    ),
    "switch: another new key": (
        "agent_key.switched", lambda r, _: with_payload(r, agent_public_key=_other_key()),
        "names another new agent public key",
    ),
    "switch: another previous key": (
        "agent_key.switched", lambda r, _: with_payload(r, previous_agent_public_key=_other_key()),
        "names another agent public key",
    ),
    "switch: the rotation's receipt": (
        "agent_key.switched", _moved_receipt("agent_key.rotation_signed"),
        "purpose 'agent_key_rotation', expected 'agent_key_switch'",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", EDITS)
def test_an_agent_key_record_rewritten_and_rechained_fails(
    case: str, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event, edit, message = EDITS[case]
    records = read(db)
    i = first(records, event)
    records[i] = edit(records[i], records)
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and f"broken at seq {i + 1}" in err and message in err, err


def test_a_copied_agent_key_record_fails(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = read(db)
    copy = records[first(records, "agent_key.switched")]
    rewrite(db, [*records, copy])
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and f"broken at seq {len(records) + 1}" in err and "agent-key receipt recorded twice" in err, err


def test_agent_key_records_without_a_session_record_fail(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Without the order receipts too (the policy install's comes first: tests/proxy/test_audit_order_receipts.py).
    records = [r for r in read(db) if r.event_type != "enclave.session" and r.event_type not in ORDER_RECEIPT_EVENTS]
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and "agent-key receipt recorded before any enclave.session record" in err, err


# -- the proxy, when the answer arrives ------------------------------------------------------------------------------


def _flipped(answer: Any) -> Any:
    signature = bytearray(answer.receipt_signature)
    signature[0] ^= 1
    return dataclasses.replace(answer, receipt_signature=bytes(signature))


def _patched(h: Harness, monkeypatch: pytest.MonkeyPatch, method: str, change: Any) -> None:
    real = getattr(h.services.relay, method)

    async def answer(*args: Any, **kwargs: Any) -> Any:
        return change(await real(*args, **kwargs))

    monkeypatch.setattr(h.services.relay, method, answer)


def _failed(h: Harness) -> dict[str, Any]:
    record = h.store.audit_records(0, 10_000)[-1]
    assert record.event_type == "agent_key.failed"
    payload: dict[str, Any] = json.loads(record.payload)
    return payload


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_flipped, "the enclave answered a receipt that the attested session key did not sign; nothing was signed"),
        (
            lambda a: dataclasses.replace(a, new_agent_public_key=bytes(Pubkey.new_unique())),
            "the enclave answered a receipt that contradicts its answer; nothing was signed",
        ),
    ],
    ids=["signature", "another-candidate"],
)
def test_a_candidate_whose_receipt_does_not_check_is_not_kept(
    h: Harness, monkeypatch: pytest.MonkeyPatch, change: Any, message: str
) -> None:
    multisig_wallet(h)
    _patched(h, monkeypatch, "prepare_agent_key", change)
    answer = h.owner_call("POST", agent_key_path(h, "/candidate"))
    assert answer.status_code == 503 and answer.json()["error"]["message"] == message, answer.text
    assert h.store.get_agent_key_candidate(h.wallet_id) is None
    assert "agent_key.candidate" not in h.audit_events()
    assert _failed(h)["step"] == "candidate" and _failed(h)["error"] == "enclave_unavailable"
    monkeypatch.undo()  # the real answer is kept
    assert h.owner_call("POST", agent_key_path(h, "/candidate")).status_code == 201


def test_a_co_signature_with_another_steps_receipt_is_withheld(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    multisig = multisig_wallet(h)
    made = h.owner_call("POST", agent_key_path(h, "/candidate")).json()
    new = Pubkey.from_string(made["candidate_public_key"])
    candidate_receipt = base64.b64decode(made["receipt"]["receipt"])
    candidate_signature = bytes(Signature.from_string(made["receipt"]["signature"]))
    _patched(
        h, monkeypatch, "sign_agent_key_rotation",
        lambda a: dataclasses.replace(a, receipt=candidate_receipt, receipt_signature=candidate_signature),
    )  # fmt: skip
    raw = rotation_transaction(multisig, owner=h.owner_pub, agent=h.agent, new_agent=new)
    answer = h.owner_call("POST", agent_key_path(h, "/rotation"), rotation_body(h, raw, new))
    assert answer.status_code == 503 and "contradicts its answer" in answer.json()["error"]["message"], answer.text
    assert "signed_transaction" not in answer.text
    assert "agent_key.rotation_signed" not in h.audit_events() and _failed(h)["step"] == "rotation"


def test_a_switch_whose_receipt_does_not_check_is_repeated(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The enclave switched but its answer did not check: the store keeps the old key until the owner repeats."""
    multisig_wallet(h)
    old = h.agent
    new = Pubkey.from_string(h.owner_call("POST", agent_key_path(h, "/candidate")).json()["candidate_public_key"])
    chain_shows(h, [h.owner_pub, new])
    _patched(h, monkeypatch, "switch_agent_key", _flipped)
    refused = h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new))
    assert refused.status_code == 503, refused.text
    assert h.store.get_wallet(h.wallet_id).agent_pubkey == bytes(old) and _failed(h)["step"] == "switch"
    monkeypatch.undo()
    repeated = h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new))
    assert repeated.status_code == 200, repeated.text
    assert h.store.get_wallet(h.wallet_id).agent_pubkey == bytes(new)


def test_answers_that_contradict_the_request_are_refused_and_recorded(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before any receipt is checked: a candidate for another agent key, a co-signature not by the agent key, a
    switch of other keys. Each is 503, nothing stored or handed out, and an ``agent_key.failed`` record names the
    step (the enclave's receipt for it is missing from the log; the record says why)."""
    multisig = multisig_wallet(h)
    old = h.agent
    _patched(h, monkeypatch, "prepare_agent_key", lambda a: dataclasses.replace(a, agent_public_key=bytes(32)))
    answer = h.owner_call("POST", agent_key_path(h, "/candidate"))
    assert answer.status_code == 503 and "candidate for another agent key" in answer.text, answer.text
    assert h.store.get_agent_key_candidate(h.wallet_id) is None
    assert (_failed(h)["step"], _failed(h)["error"]) == ("candidate", "enclave_unavailable")
    monkeypatch.undo()

    new = Pubkey.from_string(h.owner_call("POST", agent_key_path(h, "/candidate")).json()["candidate_public_key"])
    _patched(h, monkeypatch, "sign_agent_key_rotation", lambda a: dataclasses.replace(a, signature=bytes(64)))
    raw = rotation_transaction(multisig, owner=h.owner_pub, agent=h.agent, new_agent=new)
    answer = h.owner_call("POST", agent_key_path(h, "/rotation"), rotation_body(h, raw, new))
    assert answer.status_code == 503 and "co-signature does not check" in answer.text, answer.text
    assert "signed_transaction" not in answer.text and "agent_key.rotation_signed" not in h.audit_events()
    assert _failed(h)["step"] == "rotation"
    monkeypatch.undo()

    chain_shows(h, [h.owner_pub, new])
    _patched(h, monkeypatch, "switch_agent_key", lambda a: dataclasses.replace(a, new_agent_public_key=bytes(32)))
    answer = h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new))
    assert answer.status_code == 503 and "switched other keys" in answer.text, answer.text
    assert h.store.get_wallet(h.wallet_id).agent_pubkey == bytes(old) and _failed(h)["step"] == "switch"


def test_the_receipts_the_proxy_records_are_the_enclaves(h: Harness) -> None:
    """Each agent_key.* record holds the receipt of its answer, verifiable under the attested session key."""
    new = rotate(h)
    recorded = [r for r in h.store.audit_records(0, 10_000) if r.event_type in EVENTS]
    assert [r.event_type for r in recorded] == list(EVENTS)
    for record in recorded:
        payload = _payload(record)
        receipt = base64.b64decode(payload["receipt"])
        signature = bytes(Signature.from_string(payload["receipt_signature"]))
        verified = verify_agent_key_receipt(receipt, signature, session_key(h))
        assert (verified.wallet_id, verified.new_agent_public_key) == (h.wallet_id, bytes(new))
        assert verified.owner_public_key == bytes(h.owner_pub) and payload["owner_public_key"] == str(h.owner_pub)


@pytest.mark.parametrize(
    "change",
    [lambda a: dataclasses.replace(a, sealed_blob=None), lambda a: dataclasses.replace(a, wallet_id="another")],
    ids=["no-blob", "another-wallet"],
)
def test_a_malformed_candidate_from_the_enclave_is_recorded(
    h: Harness, monkeypatch: pytest.MonkeyPatch, change: Any
) -> None:
    """Changed below the relay (at the enclave client): the route refuses it and writes ``agent_key.failed`` (before:
    the relay refused a candidate without its sealed key, or for another wallet, and nothing was recorded)."""
    multisig_wallet(h)
    client = h.services.relay._client
    real = client.prepare_agent_key

    async def malformed(*args: Any, **kwargs: Any) -> Any:
        return change(await real(*args, **kwargs))

    monkeypatch.setattr(client, "prepare_agent_key", malformed)
    answer = h.owner_call("POST", agent_key_path(h, "/candidate"))
    assert answer.status_code == 503, answer.text
    assert h.store.get_agent_key_candidate(h.wallet_id) is None
    assert (_failed(h)["step"], _failed(h)["error"]) == ("candidate", "enclave_unavailable")


def test_a_switch_answered_for_another_wallet_is_recorded(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    multisig_wallet(h)
    old = h.agent
    new = Pubkey.from_string(h.owner_call("POST", agent_key_path(h, "/candidate")).json()["candidate_public_key"])
    chain_shows(h, [h.owner_pub, new])
    client = h.services.relay._client
    real = client.switch_agent_key

    async def another_wallet(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(await real(*args, **kwargs), wallet_id="another")

    monkeypatch.setattr(client, "switch_agent_key", another_wallet)
    answer = h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new))
    assert answer.status_code == 503 and "switched other keys" in answer.text, answer.text
    assert h.store.get_wallet(h.wallet_id).agent_pubkey == bytes(old) and _failed(h)["step"] == "switch"
