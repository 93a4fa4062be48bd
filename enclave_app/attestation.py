"""Verification of AWS Nitro Enclaves attestation documents (COSE_Sign1, ES384, AWS Nitro PKI).

Spec: the AWS Nitro attestation document specification (aws-nitro-enclaves-nsm-api,
``docs/attestation_process.md``), COSE RFC 9052/9053, X.509 RFC 5280.

Everything that decides trust is an argument: the pinned root certificate, the time, the expected PCRs and the
expected nonce. Nothing is read from the document to decide whom to trust.

What this function does NOT do, and the caller must:
- choose ``expected_pcrs`` from a trusted source (the deployment's pinned values), never from a running enclave;
- choose a fresh, unpredictable ``expected_nonce`` per challenge and accept each nonce once;
- decide what ``public_key`` and ``user_data`` mean in its own protocol.
"""

from __future__ import annotations

import hmac
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from enclave_app.cose import (
    COSE_ALG_ES384,
    COSE_HEADER_ALG,
    COSE_SIGN1_TAG,
    ES384_SIGNATURE_BYTES,
    raw_signature_to_der,
    sig_structure,
)
from enclave_app.errors import AttestationError, CborDecodeError
from enclave_app.safe_cbor import loads_untrusted

MAX_PAYLOAD_BYTES = 16384
"""COSE payload bound: ``bstr .size (1..16384)`` (attestation_process.md 3.1)."""

MAX_DOCUMENT_BYTES = MAX_PAYLOAD_BYTES + 1024
"""Whole COSE_Sign1 bound: the payload bound plus room for the headers and the 96-byte signature (ours)."""

MAX_CERT_BYTES = 1024
"""``cert = bytes .size (1..1024)`` (attestation_process.md 2.2)."""

MAX_USER_FIELD_BYTES = 1024
"""``user_data = bytes .size (0..1024)`` for public_key, user_data and nonce (attestation_process.md 2.2; the
prose in 3.2.2.2 says 512 for user_data and nonce; we accept the CDDL bound, which the NSM enforces)."""

MAX_CABUNDLE_CERTS = 8
"""Longest CA bundle accepted (ours: AWS issues 4, root first; the spec sets no bound)."""

PCR_COUNT = 32
"""PCR indexes are 0..31 (attestation_process.md 3.2.2.2)."""

PCR_SIZES = frozenset({32, 48, 64})
"""A PCR is 32, 48 or 64 bytes (attestation_process.md 2.2)."""

DIGEST_SHA384 = "SHA384"
"""The only digest the spec allows."""

MAX_DOCUMENT_AGE = timedelta(minutes=5)
"""Oldest document accepted, measured from ``at`` (ours: a document is fetched for one exchange)."""

MAX_CLOCK_SKEW = timedelta(seconds=60)
"""How far in the future of ``at`` a document timestamp may be (ours: clock differences)."""

_REQUIRED_FIELDS = frozenset({"module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"})
_OPTIONAL_FIELDS = frozenset({"public_key", "user_data", "nonce"})


@dataclass(frozen=True, slots=True)
class AttestationDocument:
    """A verified attestation document. Only :func:`verify_attestation_document` should build one."""

    module_id: str
    timestamp: datetime
    digest: str
    pcrs: Mapping[int, bytes]
    certificate: bytes
    cabundle: tuple[bytes, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None


def verify_attestation_document(
    document: bytes,
    *,
    root_certificate_pem: bytes,
    at: datetime,
    expected_pcrs: Mapping[int, bytes] | None = None,
    expected_nonce: bytes | None = None,
    allow_debug: bool = False,
) -> AttestationDocument:
    """Verify a COSE_Sign1 Nitro attestation document and return its content, or raise AttestationError.

    ``at`` (timezone-aware) is the time at which certificates and freshness are judged. ``expected_pcrs``
    maps PCR index to its exact value; every listed PCR must be present and equal. ``expected_nonce``, when
    given, must equal the document's nonce. Debug-mode documents (PCR0 all zeros) are refused unless
    ``allow_debug``.
    """
    # 0. Caller inputs: an aware time, a non-empty PCR expectation when one is given.
    if at.tzinfo is None or at.utcoffset() is None:
        raise AttestationError("the verification time must be timezone-aware")
    if expected_pcrs is not None and not expected_pcrs:
        raise AttestationError("expected_pcrs is empty: pass None to skip the PCR comparison")
    root = _load_root(root_certificate_pem)

    # 1. Size bound before decoding anything.
    if not isinstance(document, bytes) or not 0 < len(document) <= MAX_DOCUMENT_BYTES:
        raise AttestationError("document size out of bounds")

    # 2. COSE_Sign1 structure, tagged (18) or untagged.
    protected, payload, signature = _decode_sign1(document)

    # 3. Protected header is exactly {1: -35} (ES384); the unprotected header is empty.
    _check_protected_header(protected)

    # 4. Payload fields, types and sizes.
    fields = _decode_payload(payload)
    doc = _build_document(fields)

    # 5. Certificate chain from the pinned root: cabundle[0] must BE the pinned root; then each certificate
    #    is signed by the previous one, valid at `at`, with CA constraints; the leaf is an ES384 end entity.
    leaf = _verify_chain(root, doc.cabundle, doc.certificate, at)

    # 6. Signature of the leaf key over the COSE Sig_structure.
    _verify_signature(leaf, protected, payload, signature)

    # 7. Freshness: the signed timestamp is close to `at`.
    if doc.timestamp < at - MAX_DOCUMENT_AGE or doc.timestamp > at + MAX_CLOCK_SKEW:
        raise AttestationError("document is not fresh")

    # 8. Debug mode: PCR0 all zeros means the enclave runs in debug mode and its memory is readable.
    pcr0 = doc.pcrs.get(0)
    if pcr0 is None:
        raise AttestationError("PCR0 missing")
    if not any(pcr0) and not allow_debug:
        raise AttestationError("debug-mode document refused")

    # 9. PCRs, compared in constant time.
    if expected_pcrs is not None:
        for index, expected in sorted(expected_pcrs.items()):
            actual = doc.pcrs.get(index)
            if actual is None or not hmac.compare_digest(actual, expected):
                raise AttestationError("PCR mismatch")

    # 10. Nonce, compared in constant time.
    if expected_nonce is not None and (doc.nonce is None or not hmac.compare_digest(doc.nonce, expected_nonce)):
        raise AttestationError("nonce mismatch")
    return doc


def _load_root(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise AttestationError("root certificate unreadable") from exc


def _decode_sign1(document: bytes) -> tuple[bytes, bytes, bytes]:
    try:
        outer = loads_untrusted(document, allowed_tags=(COSE_SIGN1_TAG,), max_depth=4)
    except CborDecodeError as exc:
        raise AttestationError("document is not valid CBOR") from exc
    if isinstance(outer, cbor2.CBORTag):
        outer = outer.value  # content of a tag is decoded immutable: a tuple, with frozendict maps
    if not isinstance(outer, list | tuple) or len(outer) != 4:
        raise AttestationError("document is not a COSE_Sign1")
    protected, unprotected, payload, signature = outer
    if not isinstance(protected, bytes) or not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise AttestationError("document is not a COSE_Sign1")
    if not isinstance(unprotected, Mapping) or unprotected:
        raise AttestationError("unprotected header must be empty")
    if not 0 < len(payload) <= MAX_PAYLOAD_BYTES:
        raise AttestationError("payload size out of bounds")
    if len(signature) != ES384_SIGNATURE_BYTES:
        raise AttestationError("signature size invalid")
    return protected, payload, signature


def _check_protected_header(protected: bytes) -> None:
    try:
        header = loads_untrusted(protected, max_depth=2)
    except CborDecodeError as exc:
        raise AttestationError("protected header is not valid CBOR") from exc
    if header != {COSE_HEADER_ALG: COSE_ALG_ES384} or type(header[COSE_HEADER_ALG]) is not int:
        raise AttestationError("protected header must be {1: -35} (ES384)")


def _decode_payload(payload: bytes) -> dict[str, Any]:
    try:
        fields = loads_untrusted(payload, max_depth=4)
    except CborDecodeError as exc:
        raise AttestationError("payload is not valid CBOR") from exc
    if not isinstance(fields, dict) or not all(isinstance(key, str) for key in fields):
        raise AttestationError("payload is not a map of named fields")
    keys = frozenset(fields)
    if not keys >= _REQUIRED_FIELDS:
        raise AttestationError("payload misses a required field")
    if not keys <= _REQUIRED_FIELDS | _OPTIONAL_FIELDS:
        raise AttestationError("payload has an unknown field")
    return fields


def _bytes_field(fields: Mapping[str, Any], name: str, low: int, high: int) -> bytes:
    value = fields[name]
    if not isinstance(value, bytes) or not low <= len(value) <= high:
        raise AttestationError(f"field {name} has a wrong type or size")
    return value


def _optional_bytes_field(fields: Mapping[str, Any], name: str, low: int) -> bytes | None:
    # The NSM writes absent optional fields as null (see the fixtures), so null is accepted as "absent".
    if fields.get(name) is None:
        return None
    return _bytes_field(fields, name, low, MAX_USER_FIELD_BYTES)


def _build_document(fields: Mapping[str, Any]) -> AttestationDocument:
    module_id = fields["module_id"]
    if not isinstance(module_id, str) or not module_id:
        raise AttestationError("field module_id has a wrong type or size")
    if fields["digest"] != DIGEST_SHA384 or not isinstance(fields["digest"], str):
        raise AttestationError("field digest must be SHA384")
    millis = fields["timestamp"]
    if type(millis) is not int or not 0 < millis < 2**64:
        raise AttestationError("field timestamp has a wrong type or value")
    try:
        timestamp = datetime.fromtimestamp(millis / 1000, tz=UTC)
    except (OverflowError, ValueError, OSError) as exc:
        raise AttestationError("field timestamp has a wrong type or value") from exc
    raw_pcrs = fields["pcrs"]
    if not isinstance(raw_pcrs, dict) or not 1 <= len(raw_pcrs) <= PCR_COUNT:
        raise AttestationError("field pcrs has a wrong type or size")
    pcrs: dict[int, bytes] = {}
    for index, value in raw_pcrs.items():
        if type(index) is not int or not 0 <= index < PCR_COUNT:
            raise AttestationError("field pcrs has an invalid index")
        if not isinstance(value, bytes) or len(value) not in PCR_SIZES:
            raise AttestationError("field pcrs has an invalid value")
        pcrs[index] = value
    certificate = _bytes_field(fields, "certificate", 1, MAX_CERT_BYTES)
    bundle = fields["cabundle"]
    if not isinstance(bundle, list) or not 1 <= len(bundle) <= MAX_CABUNDLE_CERTS:
        raise AttestationError("field cabundle has a wrong type or size")
    for entry in bundle:
        if not isinstance(entry, bytes) or not 1 <= len(entry) <= MAX_CERT_BYTES:
            raise AttestationError("field cabundle has a wrong entry")
    return AttestationDocument(
        module_id=module_id,
        timestamp=timestamp,
        digest=DIGEST_SHA384,
        pcrs=MappingProxyType(pcrs),
        certificate=certificate,
        cabundle=tuple(bundle),
        public_key=_optional_bytes_field(fields, "public_key", 1),
        user_data=_optional_bytes_field(fields, "user_data", 0),
        nonce=_optional_bytes_field(fields, "nonce", 0),
    )


_ALLOWED_CRITICAL = frozenset({ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE})


def _verify_chain(
    root: x509.Certificate, cabundle: tuple[bytes, ...], leaf_der: bytes, at: datetime
) -> ec.EllipticCurvePublicKey:
    # 5a. cabundle[0] is compared byte for byte with the pinned root; it is never trusted on its own.
    if not hmac.compare_digest(cabundle[0], root.public_bytes(Encoding.DER)):
        raise AttestationError("certificate chain does not start at the pinned root")
    # 5a'. Parse every certificate completely, here: a malformed one (bad DER, unknown version, unknown key type,
    #      or anything cryptography only warns about, such as a non-positive serial number) is refused, never
    #      half-read. (catch_warnings changes process-wide warning filters for its duration: call the verifier
    #      from one thread at a time, as the enclave does.)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            intermediates = [x509.load_der_x509_certificate(der) for der in cabundle[1:]]
            leaf = x509.load_der_x509_certificate(leaf_der)
            for cert in (*intermediates, leaf):
                _parse_fields(cert)
    except Exception as exc:  # untrusted DER: cryptography's x509 errors share no base class
        # (ValueError, InvalidVersion, DuplicateExtension, UnsupportedAlgorithm, warnings raised as errors...)
        raise AttestationError("certificate unreadable") from exc
    chain = [root, *intermediates, leaf]
    for position, cert in enumerate(chain):
        # 5b. Every certificate, the root included, is ECDSA/SHA-384, within validity at `at`, and carries no
        #     critical extension we do not understand.
        if cert.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA384:
            raise AttestationError("certificate signature algorithm not allowed")
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise AttestationError("certificate not valid at the verification time")
        if any(ext.critical and ext.oid not in _ALLOWED_CRITICAL for ext in cert.extensions):
            raise AttestationError("certificate has an unknown critical extension")
        # 5c. Each certificate after the root is signed by the one before it (issuer name and signature).
        if position > 0:
            try:
                cert.verify_directly_issued_by(chain[position - 1])
            except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError) as exc:
                raise AttestationError("certificate chain signature invalid") from exc
        # 5d. CA certificates: critical basicConstraints CA=true, keyCertSign, and a pathLenConstraint that
        #     admits the CAs below them; the leaf: not a CA, digitalSignature.
        if position == len(chain) - 1:
            _check_leaf_constraints(cert)
        else:
            _check_ca_constraints(cert, cas_below=len(chain) - 2 - position)
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise AttestationError("leaf key is not P-384")
    return key


def _parse_fields(cert: x509.Certificate) -> None:
    """Parse now every field the chain checks read: cryptography decodes some of them (extensions, validity,
    names, the key) lazily, and a malformed one would otherwise raise ValueError in the middle of the checks."""
    _ = (cert.extensions, cert.not_valid_before_utc, cert.not_valid_after_utc, cert.signature_algorithm_oid)
    _ = (cert.issuer, cert.subject, cert.public_key())
    for ext in cert.extensions:
        _ = ext.value


def _extension(cert: x509.Certificate, extension_type: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(extension_type)
    except x509.ExtensionNotFound:
        return None


def _check_ca_constraints(cert: x509.Certificate, *, cas_below: int) -> None:
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is None or not constraints.critical or not constraints.value.ca:
        raise AttestationError("CA certificate lacks critical basicConstraints CA=true")
    path_length = constraints.value.path_length
    if path_length is not None and path_length < cas_below:
        raise AttestationError("CA certificate pathLenConstraint exceeded")
    usage = _extension(cert, x509.KeyUsage)
    if usage is None or not usage.value.key_cert_sign:
        raise AttestationError("CA certificate lacks keyCertSign")


def _check_leaf_constraints(cert: x509.Certificate) -> None:
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is not None and constraints.value.ca:
        raise AttestationError("signing certificate must not be a CA")
    usage = _extension(cert, x509.KeyUsage)
    if usage is None or not usage.value.digital_signature:
        raise AttestationError("signing certificate lacks digitalSignature")


def _verify_signature(key: ec.EllipticCurvePublicKey, protected: bytes, payload: bytes, signature: bytes) -> None:
    try:
        key.verify(raw_signature_to_der(signature), sig_structure(protected, payload), ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise AttestationError("document signature invalid") from exc
