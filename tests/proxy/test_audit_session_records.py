"""``waiaas audit verify --receipts`` step 1: a session record the parent rewrote is refused (docs/api.md, Audit log).

A hostile parent that rewrites and re-chains its log (so that the chain itself verifies) may change what a session
record says: the key it names, its mode, its document. Each such record fails the check at that record, with a
message that names the fault, never a traceback. Found by mutation testing: none of these refusals had a test, so any
of them could be removed unnoticed; the weightiest, an anchored check that accepted the genuine attestation document
beside a session key the parent made (`parent_proxy.audit_receipts._session`), let every receipt the parent signed
with its own key pass as the enclave's.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from solders.pubkey import Pubkey

from parent_proxy.audit import canonical_json
from parent_proxy.audit_receipts import verify_audit_receipts
from parent_proxy.enclave_sessions import ENCLAVE_SESSION_EVENT
from parent_proxy.errors import AuditChainError
from parent_proxy.store.model import AuditRecord
from tests.proxy.api_harness import new_session_key
from tests.proxy.audit_log_rewrites import PCRS, cli, copy_of, first, nitro_log, read, real_log, resign, rewrite

Edit = Callable[[dict[str, Any]], dict[str, Any]]


def _with_session(records: list[AuditRecord], payload: object) -> int:
    """Replace the first session record's payload (any JSON value) in place; its index."""
    i = first(records, ENCLAVE_SESSION_EVENT)
    records[i] = dataclasses.replace(records[i], payload=canonical_json(payload))
    return i


def _forged_key(records: list[AuditRecord]) -> int:
    """The session record names a key the parent made (its document unchanged), and every receipt is re-signed with
    that key: consistent, except with the document."""
    forger = new_session_key()
    i = first(records, ENCLAVE_SESSION_EVENT)
    payload = {**json.loads(records[i].payload), "session_public_key": str(Pubkey.from_bytes(forger.public_key))}
    records[i] = dataclasses.replace(records[i], payload=canonical_json(payload))
    records[:] = [resign(r, forger) if r.receipt is not None else r for r in records]
    return i


# -- mode none: malformed session records --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def none_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return real_log(tmp_path_factory.mktemp("none"))


def _drop(name: str) -> Edit:
    return lambda p: {k: v for k, v in p.items() if k != name}


MALFORMED: dict[str, tuple[Edit | list[object], str]] = {
    "a list, not a map": ([], "session record malformed"),
    "no session key": (_drop("session_public_key"), "session record malformed"),
    "no mode": (_drop("mode"), "session record malformed"),
    "a nonce that is not hex": (lambda p: {**p, "nonce": "zz"}, "session record malformed"),
    "a document in mode none": (
        lambda p: {**p, "document": "AAAA"},
        "session record malformed: a document in mode none",
    ),
    "an unknown mode": (
        lambda p: {**p, "mode": "tpm", "document": "AAAA"},
        "session record malformed: unknown mode or no document",
    ),
    "mode nitro without a document": (
        lambda p: {**p, "mode": "nitro"},
        "session record malformed: unknown mode or no document",
    ),
    "a document that is not base64": (
        lambda p: {**p, "mode": "nitro", "document": "not base64!"},
        "session record malformed: document is not base64",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_session_record_fails_at_that_record(
    case: str, none_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit, message = MALFORMED[case]
    db = copy_of(none_log, tmp_path)
    records = read(db)
    payload = json.loads(records[first(records, ENCLAVE_SESSION_EVENT)].payload)
    assert payload["mode"] == "none" and payload["document"] is None
    i = _with_session(records, edit(payload) if callable(edit) else edit)
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and f"broken at seq {i + 1}: {message}" in err, err


def test_the_mode_none_log_rewritten_as_it_was_passes(
    none_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = copy_of(none_log, tmp_path)
    records = read(db)
    _with_session(records, json.loads(records[first(records, ENCLAVE_SESSION_EVENT)].payload))
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 0, err


# -- mode nitro: the key the record names against the key its document carries ----------------------------------


@pytest.fixture(scope="module")
def nitro(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real log whose session key a document of the test PKI attests; the root PEM."""
    db, _, root = nitro_log(tmp_path_factory.mktemp("nitro"))
    return db, root


def _anchor(root: Path) -> tuple[str, ...]:
    return ("--root-pem", str(root), "--pcr", f"0={PCRS[0].hex()}", "--pcr", f"8={PCRS[8].hex()}")


def test_an_anchored_check_refuses_the_genuine_document_beside_another_session_key(
    nitro: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, root = nitro
    db = copy_of(source, tmp_path)
    assert cli(capsys, db, "--receipts", *_anchor(root))[0] == 0  # the control: the log as written
    records = read(db)
    i = _forged_key(records)
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts", *_anchor(root))
    assert code == 1 and f"broken at seq {i + 1}: the attested session key is not the recorded key" in err, err


def test_an_unanchored_check_refuses_a_document_carrying_another_session_key(
    nitro: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, _ = nitro
    db = copy_of(source, tmp_path)
    records = read(db)
    i = _forged_key(records)
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and f"broken at seq {i + 1}: the document carries another session key than the record" in err


def test_an_anchored_check_refuses_a_document_without_a_readable_timestamp(
    nitro: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The time a document is verified at is its own timestamp; one that is not an integer is refused, not read."""
    source, root = nitro
    db = copy_of(source, tmp_path)
    records = read(db)
    i = first(records, ENCLAVE_SESSION_EVENT)
    payload = json.loads(records[i].payload)
    document = base64.b64decode(payload["document"])  # the check comes before any signature: none is made again
    protected, unprotected, body, signature = cbor2.loads(document)
    fields = {**cbor2.loads(body), "timestamp": "now"}
    forged = cbor2.dumps([protected, unprotected, cbor2.dumps(fields), signature])
    records[i] = dataclasses.replace(
        records[i], payload=canonical_json({**payload, "document": base64.b64encode(forged).decode()})
    )
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts", *_anchor(root))
    assert code == 1 and f"broken at seq {i + 1}: attestation document refused: no readable timestamp" in err, err


def test_a_direct_caller_requiring_attestation_without_an_anchor_is_refused(nitro: tuple[Path, Path]) -> None:
    """The CLI refuses ``--require-attestation`` without ``--root-pem`` and ``--pcr``; a direct caller gets a failure at
    the first session record instead of keys taken unverified."""
    source, _ = nitro
    records = read(source)
    assert verify_audit_receipts(records).unverified_documents == 1  # the control: without the requirement
    seq = records[first(records, ENCLAVE_SESSION_EVENT)].seq
    with pytest.raises(AuditChainError, match=f"seq {seq}: session key not attested \\(no root and PCRs"):
        verify_audit_receipts(records, require_attestation=True)
