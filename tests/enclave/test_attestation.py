"""Attestation verifier: real AWS documents at their capture time, and one test per kind of tampering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from enclave_app.attestation import (
    MAX_CLOCK_SKEW,
    MAX_DOCUMENT_AGE,
    MAX_DOCUMENT_BYTES,
    MAX_USER_FIELD_BYTES,
    verify_attestation_document,
)
from enclave_app.cose import COSE_SIGN1_TAG
from enclave_app.errors import AttestationError
from tests.support.nitro_test_pki import NITRO_FIXTURES, PCR_ZERO, NitroTestPki

PRODUCTION = (NITRO_FIXTURES / "attestation-2022-10-13-production.cbor").read_bytes()
DEBUG = (NITRO_FIXTURES / "attestation-2022-10-12-debug.cbor").read_bytes()
AWS_ROOT = (NITRO_FIXTURES / "aws-nitro-root-g1.pem").read_bytes()
PRODUCTION_AT = datetime.fromtimestamp(1665651482136 / 1000, tz=UTC)
DEBUG_AT = datetime.fromtimestamp(1665582606081 / 1000, tz=UTC)
PRODUCTION_PCR0 = bytes.fromhex(
    "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b"
)
PRODUCTION_PCR8 = bytes.fromhex(
    "8790eb3cce6c83d07e84b126dc61ca923333d6f66615c4a79157de48c5ab2418bdc60746ea7b7afbff03a1c6210201cb"
)
TEST_AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def _parts(document: bytes) -> list[Any]:
    outer = cbor2.loads(document)
    return list(outer.value if isinstance(outer, cbor2.CBORTag) else outer)


def _with_payload_fields(document: bytes, **changes: Any) -> bytes:
    """The document with payload fields replaced, NOT re-signed."""
    protected, unprotected, payload, signature = _parts(document)
    fields = cbor2.loads(payload)
    fields.update(changes)
    return cbor2.dumps([protected, unprotected, cbor2.dumps(fields), signature])


def _production_nonce() -> bytes:
    return bytes(cbor2.loads(_parts(PRODUCTION)[2])["nonce"])


@pytest.fixture(scope="module")
def pki() -> NitroTestPki:
    return NitroTestPki.create(not_before=TEST_AT - timedelta(hours=1), not_after=TEST_AT + timedelta(hours=3))


def _verify_test(pki: NitroTestPki, document: bytes, **kwargs: Any) -> Any:
    kwargs.setdefault("at", TEST_AT)
    return verify_attestation_document(document, root_certificate_pem=pki.root_pem, **kwargs)


# --- real AWS documents -------------------------------------------------------------------------------------


def test_real_production_document_verifies_at_its_timestamp() -> None:
    doc = verify_attestation_document(
        PRODUCTION,
        root_certificate_pem=AWS_ROOT,
        at=PRODUCTION_AT,
        expected_pcrs={0: PRODUCTION_PCR0, 8: PRODUCTION_PCR8},
        expected_nonce=_production_nonce(),
    )
    assert doc.module_id == "i-020b6af9246d90e92-enc0183d09086c24190"
    assert doc.timestamp == PRODUCTION_AT
    assert doc.digest == "SHA384"
    assert sorted(doc.pcrs) == list(range(16))
    assert doc.public_key is None and doc.user_data is None
    assert doc.nonce is not None and len(doc.nonce) == 256
    assert len(doc.cabundle) == 4


def test_real_production_document_refused_at_current_time() -> None:
    with pytest.raises(AttestationError, match="certificate not valid"):
        verify_attestation_document(PRODUCTION, root_certificate_pem=AWS_ROOT, at=datetime.now(UTC))


def test_real_document_refused_when_stale_but_certificates_still_valid() -> None:
    # The leaf is valid for three hours; the freshness bound is much shorter.
    with pytest.raises(AttestationError, match="not fresh"):
        verify_attestation_document(
            PRODUCTION, root_certificate_pem=AWS_ROOT, at=PRODUCTION_AT + MAX_DOCUMENT_AGE + timedelta(seconds=1)
        )


def test_document_from_the_future_refused(pki: NitroTestPki) -> None:
    document = pki.sign(pki.fields(timestamp=TEST_AT + MAX_CLOCK_SKEW + timedelta(seconds=1)))
    with pytest.raises(AttestationError, match="not fresh"):
        _verify_test(pki, document)
    _verify_test(pki, pki.sign(pki.fields(timestamp=TEST_AT + MAX_CLOCK_SKEW)))


def test_real_debug_document_refused_unless_allowed() -> None:
    with pytest.raises(AttestationError, match="debug-mode"):
        verify_attestation_document(DEBUG, root_certificate_pem=AWS_ROOT, at=DEBUG_AT)
    doc = verify_attestation_document(DEBUG, root_certificate_pem=AWS_ROOT, at=DEBUG_AT, allow_debug=True)
    assert doc.pcrs[0] == PCR_ZERO
    assert doc.public_key == b"my super secret key"
    assert doc.user_data == b"hello, world!"


def test_real_document_accepted_tagged_and_untagged() -> None:
    assert cbor2.loads(PRODUCTION).__class__ is list  # the capture is untagged
    tagged = cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, cbor2.loads(PRODUCTION)))
    for document in (PRODUCTION, tagged):
        verify_attestation_document(document, root_certificate_pem=AWS_ROOT, at=PRODUCTION_AT)


def test_other_tag_refused() -> None:
    wrong_tag = cbor2.dumps(cbor2.CBORTag(98, cbor2.loads(PRODUCTION)))
    with pytest.raises(AttestationError, match="not valid CBOR"):
        verify_attestation_document(wrong_tag, root_certificate_pem=AWS_ROOT, at=PRODUCTION_AT)


# --- tampering with the real document -----------------------------------------------------------------------


def test_payload_byte_flip_refused() -> None:
    nonce = bytearray(_production_nonce())
    nonce[0] ^= 0x01
    with pytest.raises(AttestationError, match="document signature invalid"):
        verify_attestation_document(
            _with_payload_fields(PRODUCTION, nonce=bytes(nonce)), root_certificate_pem=AWS_ROOT, at=PRODUCTION_AT
        )


def test_signature_flip_refused() -> None:
    protected, unprotected, payload, signature = _parts(PRODUCTION)
    flipped = bytes([signature[0] ^ 0x80]) + signature[1:]
    document = cbor2.dumps([protected, unprotected, payload, flipped])
    with pytest.raises(AttestationError, match="document signature invalid"):
        verify_attestation_document(document, root_certificate_pem=AWS_ROOT, at=PRODUCTION_AT)


def test_wrong_pinned_root_refused(pki: NitroTestPki) -> None:
    with pytest.raises(AttestationError, match="pinned root"):
        verify_attestation_document(PRODUCTION, root_certificate_pem=pki.root_pem, at=PRODUCTION_AT)


def test_cabundle_reordered_refused() -> None:
    bundle = list(cbor2.loads(_parts(PRODUCTION)[2])["cabundle"])
    swapped = [bundle[0], bundle[2], bundle[1], bundle[3]]
    with pytest.raises(AttestationError, match="chain signature invalid"):
        verify_attestation_document(
            _with_payload_fields(PRODUCTION, cabundle=swapped), root_certificate_pem=AWS_ROOT, at=PRODUCTION_AT
        )
    root_last = [*bundle[1:], bundle[0]]
    with pytest.raises(AttestationError, match="pinned root"):
        verify_attestation_document(
            _with_payload_fields(PRODUCTION, cabundle=root_last), root_certificate_pem=AWS_ROOT, at=PRODUCTION_AT
        )


@pytest.mark.parametrize("keep", [[0, 1, 3], [0, 2, 3], [0, 1, 2], [0]])
def test_cabundle_truncated_refused(keep: list[int]) -> None:
    bundle = list(cbor2.loads(_parts(PRODUCTION)[2])["cabundle"])
    with pytest.raises(AttestationError, match="chain signature invalid"):
        verify_attestation_document(
            _with_payload_fields(PRODUCTION, cabundle=[bundle[i] for i in keep]),
            root_certificate_pem=AWS_ROOT,
            at=PRODUCTION_AT,
        )


def test_empty_cabundle_refused() -> None:
    with pytest.raises(AttestationError, match="cabundle"):
        verify_attestation_document(
            _with_payload_fields(PRODUCTION, cabundle=[]), root_certificate_pem=AWS_ROOT, at=PRODUCTION_AT
        )


def test_pcr_mismatch_refused() -> None:
    wrong = bytes([PRODUCTION_PCR0[0] ^ 1]) + PRODUCTION_PCR0[1:]
    for expected in ({0: wrong}, {0: PRODUCTION_PCR0, 8: wrong}, {20: PRODUCTION_PCR0}, {0: PRODUCTION_PCR0[:32]}):
        with pytest.raises(AttestationError, match="PCR mismatch"):
            verify_attestation_document(
                PRODUCTION, root_certificate_pem=AWS_ROOT, at=PRODUCTION_AT, expected_pcrs=expected
            )


def test_nonce_mismatch_refused() -> None:
    with pytest.raises(AttestationError, match="nonce mismatch"):
        verify_attestation_document(
            PRODUCTION, root_certificate_pem=AWS_ROOT, at=PRODUCTION_AT, expected_nonce=_production_nonce()[:-1]
        )


def test_nonce_expected_but_absent_refused() -> None:
    with pytest.raises(AttestationError, match="nonce mismatch"):
        verify_attestation_document(
            DEBUG, root_certificate_pem=AWS_ROOT, at=DEBUG_AT, allow_debug=True, expected_nonce=b"n" * 32
        )


def test_caller_mistakes_refused() -> None:
    with pytest.raises(AttestationError, match="timezone-aware"):
        verify_attestation_document(PRODUCTION, root_certificate_pem=AWS_ROOT, at=PRODUCTION_AT.replace(tzinfo=None))
    with pytest.raises(AttestationError, match="expected_pcrs is empty"):
        verify_attestation_document(PRODUCTION, root_certificate_pem=AWS_ROOT, at=PRODUCTION_AT, expected_pcrs={})
    with pytest.raises(AttestationError, match="root certificate unreadable"):
        verify_attestation_document(PRODUCTION, root_certificate_pem=b"not a pem", at=PRODUCTION_AT)


# --- tampering that needs a re-signed document (test PKI), so only the targeted check can fire ----------------


def test_test_pki_document_verifies(pki: NitroTestPki) -> None:
    fields = pki.fields(timestamp=TEST_AT, nonce=b"n" * 32, public_key=b"k" * 294, user_data=b"")
    doc = _verify_test(pki, pki.sign(fields), expected_nonce=b"n" * 32, expected_pcrs={0: b"\x01" * 48})
    assert doc.user_data == b""
    assert doc.public_key == b"k" * 294


def test_wrong_alg_header_refused(pki: NitroTestPki) -> None:
    fields = pki.fields(timestamp=TEST_AT)
    for header in ({1: -7}, {1: -35, 4: b"kid"}, {}, {1: "ES384"}):
        with pytest.raises(AttestationError, match="protected header"):
            _verify_test(pki, pki.sign(fields, protected=cbor2.dumps(header)))


def test_unprotected_header_refused(pki: NitroTestPki) -> None:
    protected, _, payload, signature = _parts(pki.sign(pki.fields(timestamp=TEST_AT)))
    document = cbor2.dumps([protected, {1: -35}, payload, signature])
    with pytest.raises(AttestationError, match="unprotected header"):
        _verify_test(pki, document)


def test_extra_field_refused(pki: NitroTestPki) -> None:
    fields = pki.fields(timestamp=TEST_AT)
    fields["debug"] = True
    with pytest.raises(AttestationError, match="unknown field"):
        _verify_test(pki, pki.sign(fields))


@pytest.mark.parametrize("missing", ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"])
def test_missing_field_refused(pki: NitroTestPki, missing: str) -> None:
    fields = pki.fields(timestamp=TEST_AT)
    del fields[missing]
    with pytest.raises(AttestationError, match="misses a required field"):
        _verify_test(pki, pki.sign(fields))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nonce": b"n" * (MAX_USER_FIELD_BYTES + 1)}, "field nonce"),
        ({"user_data": b"u" * (MAX_USER_FIELD_BYTES + 1)}, "field user_data"),
        ({"public_key": b"k" * (MAX_USER_FIELD_BYTES + 1)}, "field public_key"),
        ({"public_key": b""}, "field public_key"),
        ({"certificate": b"c" * 1025}, "field certificate"),
        ({"module_id": ""}, "field module_id"),
        ({"module_id": b"bytes"}, "field module_id"),
        ({"digest": "SHA256"}, "digest"),
        ({"timestamp": 0}, "field timestamp"),
        ({"timestamp": -5}, "field timestamp"),
        ({"timestamp": "now"}, "field timestamp"),
        ({"pcrs": {}}, "field pcrs"),
        ({"pcrs": {0: b"\x01" * 40}}, "field pcrs"),
        ({"pcrs": {32: b"\x01" * 48}}, "field pcrs"),
        ({"pcrs": {"0": b"\x01" * 48}}, "field pcrs"),
        ({"pcrs": {i: b"\x01" * 48 for i in range(33)}}, "field pcrs"),
        ({"cabundle": [b""]}, "field cabundle"),
        ({"cabundle": [b"c" * 1025]}, "field cabundle"),
        ({"cabundle": [b"c"] * 9}, "field cabundle"),
        ({"nonce": "text"}, "field nonce"),
    ],
)
def test_bad_field_type_or_size_refused(pki: NitroTestPki, change: dict[str, Any], message: str) -> None:
    fields = pki.fields(timestamp=TEST_AT)
    fields.update(change)
    with pytest.raises(AttestationError, match=message):
        _verify_test(pki, pki.sign(fields))


def test_oversized_document_refused(pki: NitroTestPki) -> None:
    with pytest.raises(AttestationError, match="document size"):
        _verify_test(pki, b"\x84" + b"\x00" * MAX_DOCUMENT_BYTES)


def test_wrong_signature_size_refused(pki: NitroTestPki) -> None:
    protected, unprotected, payload, signature = _parts(pki.sign(pki.fields(timestamp=TEST_AT)))
    with pytest.raises(AttestationError, match="signature size"):
        _verify_test(pki, cbor2.dumps([protected, unprotected, payload, signature + b"\x00"]))


def test_signed_by_other_key_refused(pki: NitroTestPki) -> None:
    document = pki.sign(pki.fields(timestamp=TEST_AT), signing_key=ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(AttestationError, match="document signature invalid"):
        _verify_test(pki, document)


def test_attacker_chain_under_real_root_refused(pki: NitroTestPki) -> None:
    # cabundle[0] is the genuine pinned root, but the CAs below it are the attacker's.
    real_root_der = bytes(cbor2.loads(_parts(PRODUCTION)[2])["cabundle"][0])
    fields = pki.fields(timestamp=TEST_AT)
    fields["cabundle"] = [real_root_der, *pki.cabundle[1:]]
    with pytest.raises(AttestationError, match="chain signature invalid"):
        verify_attestation_document(pki.sign(fields), root_certificate_pem=AWS_ROOT, at=TEST_AT)


def test_expired_intermediate_refused() -> None:
    early = NitroTestPki.create(not_before=TEST_AT - timedelta(days=2), not_after=TEST_AT - timedelta(days=1))
    with pytest.raises(AttestationError, match="certificate not valid"):
        _verify_test(early, early.sign(early.fields(timestamp=TEST_AT)))


def test_leaf_that_is_a_ca_refused() -> None:
    bad = NitroTestPki.create(
        not_before=TEST_AT - timedelta(hours=1), not_after=TEST_AT + timedelta(hours=1), leaf_ca=True
    )
    with pytest.raises(AttestationError, match="must not be a CA"):
        _verify_test(bad, bad.sign(bad.fields(timestamp=TEST_AT)))


def test_path_length_exceeded_refused() -> None:
    bad = NitroTestPki.create(
        not_before=TEST_AT - timedelta(hours=1), not_after=TEST_AT + timedelta(hours=1), path_lengths=(0, 1, 0)
    )
    with pytest.raises(AttestationError, match="pathLenConstraint"):
        _verify_test(bad, bad.sign(bad.fields(timestamp=TEST_AT)))


def test_debug_mode_test_pki_refused_unless_allowed(pki: NitroTestPki) -> None:
    document = pki.sign(pki.fields(timestamp=TEST_AT, pcrs={0: PCR_ZERO, 1: PCR_ZERO, 2: PCR_ZERO}))
    with pytest.raises(AttestationError, match="debug-mode"):
        _verify_test(pki, document)
    _verify_test(pki, document, allow_debug=True)


def test_missing_pcr0_refused(pki: NitroTestPki) -> None:
    with pytest.raises(AttestationError, match="PCR0 missing"):
        _verify_test(pki, pki.sign(pki.fields(timestamp=TEST_AT, pcrs={1: b"\x01" * 48})))


def test_duplicate_payload_key_refused(pki: NitroTestPki) -> None:
    payload = cbor2.dumps(pki.fields(timestamp=TEST_AT))
    # Append a second "nonce" entry by hand: map header 0xa9 (9 entries) becomes 0xaa (10 entries).
    duplicated = b"\xaa" + payload[1:] + cbor2.dumps("nonce") + cbor2.dumps(b"x")
    with pytest.raises(AttestationError, match="payload is not valid CBOR"):
        _verify_test(pki, pki.sign(duplicated))


def test_tagged_payload_value_refused(pki: NitroTestPki) -> None:
    fields = pki.fields(timestamp=TEST_AT)
    fields["user_data"] = cbor2.CBORTag(1, 0)  # a date tag where bytes are expected
    with pytest.raises(AttestationError, match="payload is not valid CBOR"):
        _verify_test(pki, pki.sign(fields))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_mutations_only_raise_attestation_error(data: st.DataObject) -> None:
    document = bytearray(PRODUCTION)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(document) - 1))
        document[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(document)))
    assume(bytes(document[:cut]) != PRODUCTION)  # a "mutation" that wrote back the same bytes is no tampering
    with pytest.raises(AttestationError):
        verify_attestation_document(bytes(document[:cut]), root_certificate_pem=AWS_ROOT, at=PRODUCTION_AT)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_attestation_error(blob: bytes) -> None:
    with pytest.raises(AttestationError):
        verify_attestation_document(blob, root_certificate_pem=AWS_ROOT, at=PRODUCTION_AT)


@pytest.mark.parametrize(
    ("position", "value", "cause"),
    [
        (2608, 0, "ValueError"),  # an extension cryptography only parses when it is first read
        (944, 4, "InvalidVersion"),  # an X.509 version that does not exist
        (2589, 35, "DuplicateExtension"),
        (2135, 169, "CryptographyDeprecationWarning"),  # a non-positive serial number: only a warning upstream
    ],
)
def test_malformed_certificate_is_an_attestation_error(position: int, value: int, cause: str) -> None:
    """Regressions found by hypothesis and a mutation fuzzer: single byte changes in the real document's
    certificates used to escape the verifier as other exceptions (or, for the warning, pass with a warning)."""
    document = bytearray(PRODUCTION)
    document[position] = value
    with pytest.raises(AttestationError, match="certificate unreadable") as info:
        verify_attestation_document(bytes(document), root_certificate_pem=AWS_ROOT, at=PRODUCTION_AT)
    assert type(info.value.__cause__).__name__ == cause
