"""`verify_attestation_document` refuses malformed documents with `AttestationError` naming the fault, never another
exception (docs/enclave.md; the AWS attestation document specification, attestation_process.md 3.1, 2.2).

Found by mutation testing: these refusals had no test, so each could be removed unnoticed. Removed, a text string in
place of a COSE byte string, or a timestamp whose date is out of range, raised TypeError or UnboundLocalError from
the verifier (an untranslated crash for its callers: the owner's checks, the auditor); an empty payload or a payload
that is not a map of named fields was refused, but for another reason than the one the specification gives. Each
document is signed by the test PKI's leaf (real ES384) unless the structure has no room for it; these checks come
before the signature's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import pytest

from enclave_app.attestation import MAX_PAYLOAD_BYTES, verify_attestation_document
from enclave_app.cose import ES384_PROTECTED_HEADER, ES384_SIGNATURE_BYTES
from enclave_app.errors import AttestationError
from tests.support.nitro_test_pki import NitroTestPki

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> NitroTestPki:
    return NitroTestPki.create(not_before=AT - timedelta(hours=1), not_after=AT + timedelta(hours=3))


def _refused(pki: NitroTestPki, document: bytes, message: str) -> None:
    with pytest.raises(AttestationError, match=f"^{message}$"):
        verify_attestation_document(document, root_certificate_pem=pki.root_pem, at=AT)


def test_the_well_formed_document_verifies(pki: NitroTestPki) -> None:
    """The control: the test PKI's document, as the tests below change it."""
    verify_attestation_document(pki.sign(pki.fields(timestamp=AT)), root_certificate_pem=pki.root_pem, at=AT)


@pytest.mark.parametrize("position", [0, 2, 3], ids=["protected", "payload", "signature"])
def test_a_text_string_in_place_of_a_byte_string_is_not_a_cose_sign1(pki: NitroTestPki, position: int) -> None:
    parts: list[Any] = [ES384_PROTECTED_HEADER, {}, cbor2.dumps(pki.fields(timestamp=AT)), bytes(ES384_SIGNATURE_BYTES)]
    parts[position] = "x" * len(parts[position])
    _refused(pki, cbor2.dumps(parts), "document is not a COSE_Sign1")


@pytest.mark.parametrize("size", [0, MAX_PAYLOAD_BYTES + 1])
def test_a_payload_outside_1_to_16384_bytes_is_refused(pki: NitroTestPki, size: int) -> None:
    _refused(pki, pki.sign(b"\x00" * size), "payload size out of bounds")


@pytest.mark.parametrize(
    "payload",
    [[1, 2], "module_id", {1: b"x"}, {"module_id": "m", 7: 1}],
    ids=["array", "text", "integer-keys", "one-integer-key"],
)
def test_a_payload_that_is_not_a_map_of_named_fields_is_refused(pki: NitroTestPki, payload: object) -> None:
    _refused(pki, pki.sign(cbor2.dumps(payload)), "payload is not a map of named fields")


@pytest.mark.parametrize("millis", [2**63, 2**64 - 1], ids=["2^63", "2^64-1"])
def test_a_timestamp_out_of_the_calendar_is_refused(pki: NitroTestPki, millis: int) -> None:
    """Below 2^64 (the field's bound) but past year 9999: Python cannot make it a date."""
    fields = {**pki.fields(timestamp=AT), "timestamp": millis}
    _refused(pki, pki.sign(fields), "field timestamp has a wrong type or value")
