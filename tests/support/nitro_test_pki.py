"""A throw-away PKI shaped like the AWS Nitro one (P-384, ECDSA-SHA384, root -> 2 CAs -> signing cert) and a
builder of COSE_Sign1 attestation documents signed by it. Keys are generated per call; none is checked in.

Used by the attestation tests (to re-sign deliberately malformed documents so that exactly one check can fire)
and by the fake NSM device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from enclave_app.cose import ES384_PROTECTED_HEADER, der_signature_to_raw, encode_sign1, sig_structure

PCR_ZERO = bytes(48)

NITRO_FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "nitro"
"""Real captured documents (see the README there); CI places ../shared beside the repository."""


SignatureHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512
"""The hashes a certificate here may be signed with (ECDSA takes these; a Nitro chain uses SHA-384 only)."""


class Validity(TypedDict):
    """A certificate's validity window, as `make_certificate` and `NitroTestPki.create` take it (``**window``)."""

    not_before: datetime
    not_after: datetime


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificate(
    *,
    subject: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool,
    path_length: int | None,
    not_before: datetime,
    not_after: datetime,
    key_cert_sign: bool | None = None,
    digital_signature: bool | None = None,
    signature_hash: SignatureHash | None = None,
    critical_extra: x509.ExtensionType | None = None,
) -> x509.Certificate:
    """One certificate, with basicConstraints (critical) and keyUsage set like AWS's, signed ECDSA/SHA-384 unless
    ``signature_hash`` says otherwise; ``critical_extra``: one more extension, marked critical."""
    key_cert_sign = ca if key_cert_sign is None else key_cert_sign
    digital_signature = (not ca) if digital_signature is None else digital_signature
    builder = x509.CertificateBuilder()
    if critical_extra is not None:
        builder = builder.add_extension(critical_extra, critical=True)
    return (
        builder.subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(issuer_key, signature_hash or hashes.SHA384())
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@dataclass
class NitroTestPki:
    """Root, two intermediate CAs and a signing certificate, valid from ``not_before`` to ``not_after``."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    intermediates: list[x509.Certificate]
    leaf_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        *,
        not_before: datetime,
        not_after: datetime,
        leaf_ca: bool = False,
        path_lengths: tuple[int | None, int | None, int | None] = (None, 1, 0),
        root_name: str = "test.nitro-enclaves",
    ) -> NitroTestPki:
        root_key, ca1_key, ca2_key, leaf_key = _new_key(), _new_key(), _new_key(), _new_key()
        common: Validity = {"not_before": not_before, "not_after": not_after}
        root = make_certificate(
            subject=root_name,
            public_key=root_key.public_key(),
            issuer=root_name,
            issuer_key=root_key,
            ca=True,
            path_length=path_lengths[0],
            **common,
        )
        ca1 = make_certificate(
            subject="ca1.test",
            public_key=ca1_key.public_key(),
            issuer=root_name,
            issuer_key=root_key,
            ca=True,
            path_length=path_lengths[1],
            **common,
        )
        ca2 = make_certificate(
            subject="ca2.test",
            public_key=ca2_key.public_key(),
            issuer="ca1.test",
            issuer_key=ca1_key,
            ca=True,
            path_length=path_lengths[2],
            **common,
        )
        leaf = make_certificate(
            subject="enclave.test",
            public_key=leaf_key.public_key(),
            issuer="ca2.test",
            issuer_key=ca2_key,
            ca=leaf_ca,
            path_length=None,
            digital_signature=True,
            **common,
        )
        return cls(root_key, root, [ca1, ca2], leaf_key, leaf)

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(Encoding.PEM)

    @property
    def cabundle(self) -> list[bytes]:
        return [c.public_bytes(Encoding.DER) for c in [self.root, *self.intermediates]]

    def fields(
        self,
        *,
        timestamp: datetime,
        pcrs: dict[int, bytes] | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
        user_data: bytes | None = None,
    ) -> dict[str, Any]:
        """Attestation payload fields in the NSM's order, with production-looking PCRs by default."""
        return {
            "module_id": "i-0123456789abcdef0-enc0123456789abcdef",
            "digest": "SHA384",
            "timestamp": int(timestamp.timestamp() * 1000),
            "pcrs": pcrs if pcrs is not None else {i: bytes([i + 1]) * 48 for i in range(16)},
            "certificate": self.leaf.public_bytes(Encoding.DER),
            "cabundle": self.cabundle,
            "public_key": public_key,
            "user_data": user_data,
            "nonce": nonce,
        }

    def sign(
        self,
        payload: dict[str, Any] | bytes,
        *,
        protected: bytes = ES384_PROTECTED_HEADER,
        tagged: bool = False,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> bytes:
        """COSE_Sign1 over ``payload`` (a field map, or raw payload bytes) with a real ES384 signature."""
        body = payload if isinstance(payload, bytes) else cbor2.dumps(payload)
        key = signing_key or self.leaf_key
        der = key.sign(sig_structure(protected, body), ec.ECDSA(hashes.SHA384()))
        return encode_sign1(protected, body, der_signature_to_raw(der), tagged=tagged)


def default_window(at: datetime) -> tuple[datetime, datetime]:
    """A validity window around ``at`` for test certificates."""
    return at - timedelta(hours=1), at + timedelta(hours=3)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)
