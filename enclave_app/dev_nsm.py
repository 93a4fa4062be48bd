"""UNSAFE development stand-in for the NSM, for local and self-hosted runs without Nitro hardware.

It produces real COSE_Sign1 ES384 attestation documents, in the NSM's format, signed by a certificate chain
that it generates in memory at construction (root -> intermediate -> a fresh signing certificate per
document). Nothing here is rooted in AWS: a document from this class proves nothing about what code runs, and
only verifies against :attr:`UnsafeDevelopmentNsm.root_certificate_pem`, never against the AWS Nitro root.
Construction logs a warning so that a deployment using it by mistake is visible.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import datetime, timedelta

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from enclave_app.attestation import MAX_USER_FIELD_BYTES, PCR_COUNT, PCR_SIZES
from enclave_app.clock import Clock, utc_now
from enclave_app.cose import ES384_PROTECTED_HEADER, der_signature_to_raw, encode_sign1, sig_structure
from enclave_app.errors import NsmError
from enclave_app.nsm import PcrDescription

_LOG = logging.getLogger(__name__)

DEV_CA_LIFETIME = timedelta(days=30)
"""Lifetime of the in-memory root and intermediate (ours: longer than any development session)."""

DEV_SIGNING_CERT_LIFETIME = timedelta(hours=3)
"""Lifetime of each per-document signing certificate (same as the real NSM's, see the fixtures README)."""

DEV_RANDOM_BYTES = 256
"""Bytes returned by one GetRandom (the real NSM returns up to 256)."""

DEV_MODULE_ID = "unsafe-development-nsm"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    *,
    subject: str,
    issuer: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool,
    path_length: int | None,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    usage = x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(usage, critical=True)
        .sign(issuer_key, hashes.SHA384())
    )


class UnsafeDevelopmentNsm:
    """An :class:`~enclave_app.nsm.Nsm` for development: real signatures, made-up trust. Never for production."""

    def __init__(
        self,
        *,
        pcrs: Mapping[int, bytes],
        clock: Clock = utc_now,
    ) -> None:
        if not pcrs or 0 not in pcrs:
            raise NsmError("development NSM needs PCR values, PCR0 included")
        for index, value in pcrs.items():
            if not 0 <= index < PCR_COUNT or len(value) not in PCR_SIZES:
                raise NsmError("development NSM PCR index or size invalid")
        _LOG.warning(
            "UnsafeDevelopmentNsm in use: attestation documents are signed by a throw-away local CA and prove "
            "nothing about the running code. Never use this in production."
        )
        self._pcrs = dict(pcrs)
        self._clock = clock
        now = clock()
        self._root_key = ec.generate_private_key(ec.SECP384R1())
        self._ca_key = ec.generate_private_key(ec.SECP384R1())
        window = {"not_before": now - timedelta(minutes=5), "not_after": now + DEV_CA_LIFETIME}
        root_name, ca_name = "unsafe-development-nsm-root", "unsafe-development-nsm-ca"
        self._root = _certificate(
            subject=root_name, issuer=root_name, public_key=self._root_key.public_key(),
            issuer_key=self._root_key, ca=True, path_length=1, **window,
        )  # fmt: skip
        self._ca = _certificate(
            subject=ca_name, issuer=root_name, public_key=self._ca_key.public_key(),
            issuer_key=self._root_key, ca=True, path_length=0, **window,
        )  # fmt: skip

    @property
    def root_certificate_pem(self) -> bytes:
        """The only root under which this object's documents verify."""
        return self._root.public_bytes(Encoding.PEM)

    def attestation(self, *, public_key: bytes | None, user_data: bytes | None, nonce: bytes | None) -> bytes:
        for value in (public_key, user_data, nonce):
            if value is not None and len(value) > MAX_USER_FIELD_BYTES:
                raise NsmError("attestation field too large")
        now = self._clock()
        signing_key = ec.generate_private_key(ec.SECP384R1())
        signing_cert = _certificate(
            subject="unsafe-development-nsm-document", issuer="unsafe-development-nsm-ca",
            public_key=signing_key.public_key(), issuer_key=self._ca_key, ca=False, path_length=None,
            not_before=now - timedelta(seconds=5), not_after=now + DEV_SIGNING_CERT_LIFETIME,
        )  # fmt: skip
        payload = cbor2.dumps(
            {
                "module_id": DEV_MODULE_ID,
                "digest": "SHA384",
                "timestamp": int(now.timestamp() * 1000),
                "pcrs": self._pcrs,
                "certificate": signing_cert.public_bytes(Encoding.DER),
                "cabundle": [self._root.public_bytes(Encoding.DER), self._ca.public_bytes(Encoding.DER)],
                "public_key": public_key,
                "user_data": user_data,
                "nonce": nonce,
            }
        )
        der = signing_key.sign(sig_structure(ES384_PROTECTED_HEADER, payload), ec.ECDSA(hashes.SHA384()))
        return encode_sign1(ES384_PROTECTED_HEADER, payload, der_signature_to_raw(der), tagged=False)

    def get_random(self) -> bytes:
        return os.urandom(DEV_RANDOM_BYTES)

    def describe_pcr(self, index: int) -> PcrDescription:
        if not 0 <= index < PCR_COUNT:
            raise NsmError("PCR index out of range")
        return PcrDescription(locked=True, data=self._pcrs.get(index, bytes(48)))
