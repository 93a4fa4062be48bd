"""``waiaas audit verify --receipts``: the receipts of a real log (the real enclave app behind the proxy) verify under
the session records before them; a hostile parent that rewrites its log and re-hashes the whole chain (so that the
chain alone still verifies) is caught at the first record it changed: a receipt re-signed by another key, a receipt
before any session record, a copied receipt, a forged nitro session record when a root and PCRs are given.

Mode nitro with an anchor uses the real NSM driver over the fake device of tests/fakes, rooted in the test PKI of
tests/support (the development NSM's CA is not a root anyone pins).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from solders.pubkey import Pubkey

from enclave_app.protocol import SESSION_USER_DATA
from enclave_app.receipts import verify_receipt
from parent_proxy.audit import canonical_json
from parent_proxy.audit_receipts import verify_audit_receipts
from parent_proxy.enclave_sessions import ENCLAVE_SESSION_EVENT
from parent_proxy.errors import AuditChainError
from parent_proxy.receipt_checks import split_receipt
from parent_proxy.store.model import AuditRecord
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.trust_anchor import Anchor
from tests.proxy.api_harness import new_session_key
from tests.proxy.audit_log_rewrites import (
    PCRS,
    cli,
    first,
    nitro_log,
    pki_window,
    read,
    real_log,
    resign,
    rewrite,
    with_payload,
)
from tests.support.nitro_test_pki import NitroTestPki

# -- a real log ---------------------------------------------------------------------------------------------------


def test_a_real_log_verifies_and_mode_none_says_it_proves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = real_log(tmp_path)
    signed = [r for r in read(db) if r.event_type == "transaction.signed"]
    assert signed and all(len(json.loads(r.payload)["message_sha256"]) == 64 for r in signed)  # the receipt's subject
    code, out, err = cli(capsys, db, "--receipts")
    assert code == 0, err
    assert "receipts OK: 3 receipts under 1 session records (0 attestation documents verified)" in out
    assert "attestation mode none" in err and "prove nothing about the code" in err
    plain, out, err = cli(capsys, db)  # the chain only, as before
    assert plain == 0 and "OK:" in out and "receipts" not in out and err == ""
    session_seq = read(db)[first(read(db), ENCLAVE_SESSION_EVENT)].seq
    (tmp_path / "root.pem").write_bytes(NitroTestPki.create(**pki_window()).root_pem)
    code, _, err = cli(capsys, db, "--receipts", "--require-attestation", "--root-pem", str(tmp_path / "root.pem"),
                       "--pcr", f"0={PCRS[0].hex()}")  # fmt: skip
    assert code == 1 and f"broken at seq {session_seq}: session key not attested (mode none)" in err


def test_a_receipt_re_signed_by_another_key_is_caught_though_the_chain_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = real_log(tmp_path)
    records = read(db)
    i = first(records, "transaction.signed")
    records[i] = resign(records[i], new_session_key())
    rewrite(db, records)
    assert cli(capsys, db)[0] == 0  # the chain alone cannot tell
    code, _, err = cli(capsys, db, "--receipts")
    session_seq = records[first(records, ENCLAVE_SESSION_EVENT)].seq
    assert code == 1
    assert f"broken at seq {i + 1}: receipt not signed by the session key of seq {session_seq}" in err


def test_a_receipt_before_any_session_record_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = real_log(tmp_path)
    records = read(db)
    del records[first(records, ENCLAVE_SESSION_EVENT)]
    del records[first(records, "policy.enclave_installed")]  # an order receipt: tests/proxy/test_audit_order_receipts
    rewrite(db, records)
    assert cli(capsys, db)[0] == 0
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1
    seq = first(records, "transaction.signed") + 1
    assert f"broken at seq {seq}: receipt recorded before any enclave.session record" in err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rs, i: dataclasses.replace(rs[i], wallet_id="w2"), "receipt names another wallet"),
        (lambda rs, i: dataclasses.replace(rs[i], event_type="transaction.refused"), "receipt states a signature"),
        (lambda rs, i: dataclasses.replace(rs[i], receipt=rs[i - 1].receipt), "recorded twice under the session key"),
        (lambda rs, i: dataclasses.replace(rs[i], receipt=rs[-1].receipt), "kind 'message', expected 'transaction'"),
        (lambda rs, i: dataclasses.replace(rs[i], event_type="webhook.sent"), "unexpected receipt on a webhook.sent"),
        (lambda rs, i: with_payload(rs[i], message_sha256="00" * 32), "receipt is about another message"),
        (lambda rs, i: dataclasses.replace(rs[i], receipt=bytes(64)), "receipt field unreadable: receipt field too"),
    ],
    ids=[
        "another wallet",
        "a signature recorded as a refusal",
        "a copied receipt",
        "a message receipt",
        "elsewhere",
        "another message",
        "a signature alone",
    ],
)
def test_a_receipt_that_disagrees_with_its_record_is_caught(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[list[AuditRecord], int], AuditRecord],
    message: str,
) -> None:
    db = real_log(tmp_path)
    records = read(db)
    i = max(j for j, r in enumerate(records) if r.event_type == "transaction.signed")  # the second signed transfer
    records[i] = edit(records, i)
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and f"broken at seq {i + 1}" in err and message in err, err


# -- mode nitro ---------------------------------------------------------------------------------------------------


@pytest.fixture
def nitro(tmp_path: Path) -> tuple[Path, NitroTestPki, Path]:
    """A real log from an enclave whose NSM is the real driver over the fake device (test PKI root); the root PEM."""
    return nitro_log(tmp_path)


def test_nitro_session_documents_verify_against_the_pinned_root(
    nitro: tuple[Path, NitroTestPki, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _, root = nitro
    anchor = ("--root-pem", str(root), "--pcr", f"0={PCRS[0].hex()}", "--pcr", f"8={PCRS[8].hex()}")
    code, out, err = cli(capsys, db, "--receipts", *anchor, "--require-attestation")
    assert code == 0, err
    assert "3 receipts under 1 session records (1 attestation documents verified)" in out and "WARNING" not in err
    code, out, err = cli(capsys, db, "--receipts")  # no anchor: the key is read from the document, unverified
    assert code == 0 and "1 attestation documents not verified (pass --root-pem and --pcr)" in err
    session_seq = read(db)[first(read(db), ENCLAVE_SESSION_EVENT)].seq
    code, _, err = cli(capsys, db, "--receipts", "--root-pem", str(root), "--pcr", f"0={bytes(48).hex()}")
    assert code == 1 and f"broken at seq {session_seq}: attestation document refused: PCR mismatch" in err


def test_a_forged_nitro_session_record_is_caught_with_an_anchor(
    nitro: tuple[Path, NitroTestPki, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The parent makes a session key of its own, a document for it from a CA of its own, re-signs every receipt
    with it and re-hashes the chain: consistent, and refused as soon as the pinned root is given."""
    db, _, root = nitro
    records = read(db)
    i = first(records, ENCLAVE_SESSION_EVENT)
    payload = json.loads(records[i].payload)
    forger, rogue = new_session_key(), NitroTestPki.create(**pki_window())
    fields = rogue.fields(timestamp=datetime.now(UTC), pcrs=dict(PCRS), nonce=bytes.fromhex(payload["nonce"]),
                          public_key=forger.public_key, user_data=SESSION_USER_DATA)  # fmt: skip
    forged = {**payload, "session_public_key": str(Pubkey.from_bytes(forger.public_key)),
              "document": base64.b64encode(rogue.sign(fields)).decode()}  # fmt: skip
    records[i] = dataclasses.replace(records[i], payload=canonical_json(forged))
    records = [resign(r, forger) if r.receipt is not None else r for r in records]
    rewrite(db, records)
    assert cli(capsys, db, "--receipts")[0] == 0  # without an anchor the forgery is self-consistent
    code, _, err = cli(capsys, db, "--receipts", "--root-pem", str(root), "--pcr", f"0={PCRS[0].hex()}")
    assert code == 1 and f"broken at seq {i + 1}: attestation document refused" in err


def test_an_anchor_refuses_a_mode_none_session_record(
    nitro: tuple[Path, NitroTestPki, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The parent appends a mode-none session record naming a key it made, then a forged transaction.signed whose
    receipt it signs with that key, and re-hashes the chain. With an anchor this fails (an anchor implies
    --require-attestation); without one it passes, and the command says nothing was anchored."""
    db, _, root = nitro
    records = read(db)
    real_session = records[first(records, ENCLAVE_SESSION_EVENT)]
    signed = [r for r in records if r.event_type == "transaction.signed"][-1]
    forger = new_session_key()
    session_payload = {"session_public_key": str(Pubkey.from_bytes(forger.public_key)), "mode": "none",
                       "document": None, "nonce": "00" * 32, "reason": "attestation unavailable"}  # fmt: skip
    fake_session = dataclasses.replace(real_session, time=signed.time + 1, payload=canonical_json(session_payload))
    stated = verify_receipt(*split_receipt(signed.receipt or b""), bytes(Pubkey.from_string(
        json.loads(real_session.payload)["session_public_key"])))  # fmt: skip
    new_message = hashlib.sha256(b"a transfer the enclave never signed").digest()
    receipt = dataclasses.replace(stated, message_hash=new_message, counter=1,
                                  time_ms=int((signed.time + 2) * 1000)).encode()  # fmt: skip
    forged = dataclasses.replace(
        with_payload(signed, message_sha256=new_message.hex(), signature="1" * 88),
        time=signed.time + 2, receipt=receipt + forger.sign_encoded(receipt),
    )  # fmt: skip
    rewrite(db, [*records, fake_session, forged])
    session_seq = len(records) + 1
    anchor = ("--root-pem", str(root), "--pcr", f"0={PCRS[0].hex()}", "--pcr", f"8={PCRS[8].hex()}")
    for extra in [(), ("--allow-gaps",), ("--allow-debug",), ("--require-attestation",)]:
        code, out, err = cli(capsys, db, "--receipts", *anchor, *extra)
        assert code == 1, (extra, out, err)
        assert f"broken at seq {session_seq}: session key not attested (mode none)" in err, (extra, err)
    direct = Anchor(root.read_bytes(), {0: PCRS[0]})  # a direct caller who passes an anchor alone: the same
    with pytest.raises(AuditChainError, match=f"seq {session_seq}: session key not attested"):
        verify_audit_receipts(read(db), anchor=direct, require_attestation=False)
    code, _, err = cli(capsys, db, "--receipts", "--pcr", f"0={PCRS[0].hex()}")  # half an anchor: refused outright
    assert code == 2 and "--root-pem and --pcr go together" in err
    code, out, err = cli(capsys, db, "--receipts")  # no anchor: self-consistent, and said to prove nothing
    assert code == 0, err
    assert "not anchored" in out and "no --root-pem and --pcr" in err and "attestation mode none" in err


def test_the_development_nsm_does_not_verify_against_a_pinned_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = real_log(tmp_path, attestation="nitro")  # the development NSM: a throw-away CA of its own
    (tmp_path / "root.pem").write_bytes(NitroTestPki.create(**pki_window()).root_pem)
    code, _, err = cli(capsys, db, "--receipts", "--root-pem", str(tmp_path / "root.pem"), "--pcr", f"0={'00' * 48}",
                       "--allow-debug")  # fmt: skip
    assert code == 1 and "attestation document refused" in err


# -- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--receipts", "--pcr", "0=00"], "--root-pem and --pcr go together"),
        (["--receipts", "--root-pem", "ROOT"], "--root-pem and --pcr go together"),
        (["--receipts", "--require-attestation"], "--require-attestation needs --root-pem and --pcr"),
        (["--receipts", "--allow-debug"], "--allow-debug needs --root-pem and --pcr"),
        (["--root-pem", "ROOT", "--pcr", "0=00"], "go with --receipts"),
        (["--receipts", "--root-pem", "ROOT", "--pcr", "zero"], "expected INDEX=HEX"),
        (["--receipts", "--root-pem", "ROOT", "--pcr", "0=xyz"], "expected INDEX=HEX"),
        (["--receipts", "--root-pem", "MISSING", "--pcr", "0=00"], "cannot read"),
        (["--receipts", "--root-pem", "NOT_PEM", "--pcr", "0=00"], "not a PEM certificate"),
        (["--receipts", "--root-pem", "ROOT", "--pcr", "8=00"], "--pcr needs PCR 0 (the enclave image)"),
    ],
)
def test_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    db = tmp_path / "state.db"
    SqliteStore(db).close()
    (tmp_path / "root.pem").write_bytes(NitroTestPki.create(**pki_window()).root_pem)
    (tmp_path / "not.pem").write_bytes(b"hello")
    paths = {"ROOT": tmp_path / "root.pem", "MISSING": tmp_path / "missing.pem", "NOT_PEM": tmp_path / "not.pem"}
    code, out, err = cli(capsys, db, *[str(paths.get(a, a)) for a in args])
    assert code == 2 and message in err and out == ""
