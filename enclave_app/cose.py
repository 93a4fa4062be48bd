"""The small part of COSE (RFC 9052) that Nitro attestation uses: COSE_Sign1 with ES384.

Shared by the verifier and by the development NSM so that both sides build the signed bytes the same way.
"""

from __future__ import annotations

import cbor2
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

COSE_SIGN1_TAG = 18
"""CBOR tag of a tagged COSE_Sign1 (RFC 9052 section 2)."""

COSE_HEADER_ALG = 1
"""Label of the ``alg`` header parameter (RFC 9052 section 3.1)."""

COSE_ALG_ES384 = -35
"""ECDSA w/ SHA-384 (RFC 9053 section 2.1); the only algorithm Nitro uses."""

ES384_PROTECTED_HEADER = cbor2.dumps({COSE_HEADER_ALG: COSE_ALG_ES384})
"""Serialized protected header ``{1: -35}``, as the NSM emits it."""

P384_SCALAR_BYTES = 48
"""Size of r and of s for P-384 (RFC 9053 section 2.1: the signature is r || s, each padded to this size)."""

ES384_SIGNATURE_BYTES = 2 * P384_SCALAR_BYTES


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """The bytes that are signed: ``["Signature1", protected, external_aad = b"", payload]`` (RFC 9052 4.4)."""
    return cbor2.dumps(["Signature1", protected, b"", payload])


def raw_signature_to_der(raw: bytes) -> bytes:
    """Convert COSE's fixed-size r || s into the DER form that ``cryptography`` verifies.

    The caller checks the length first.
    """
    r = int.from_bytes(raw[:P384_SCALAR_BYTES], "big")
    s = int.from_bytes(raw[P384_SCALAR_BYTES:], "big")
    return encode_dss_signature(r, s)


def der_signature_to_raw(der: bytes) -> bytes:
    """Convert a DER ECDSA signature from ``cryptography`` into COSE's r || s for P-384."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(P384_SCALAR_BYTES, "big") + s.to_bytes(P384_SCALAR_BYTES, "big")


def encode_sign1(protected: bytes, payload: bytes, signature: bytes, *, tagged: bool) -> bytes:
    """Serialize a COSE_Sign1 with an empty unprotected header."""
    body = [protected, {}, payload, signature]
    if tagged:
        return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, body))
    return cbor2.dumps(body)
