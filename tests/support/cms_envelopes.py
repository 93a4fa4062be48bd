"""Re-runnable generator of KMS-shaped ``CiphertextForRecipient`` blobs (CMS EnvelopedData, BER).

KMS emits BER, not DER: indefinite lengths on the outer layers and the encrypted content as a constructed,
chunked OCTET STRING. asn1crypto only writes DER, so the outer layers are written here by hand and the inner
pieces (RecipientInfo, AlgorithmIdentifiers) by asn1crypto. Knobs let the tests produce exactly one defect at
a time. Run ``python -m tests.support.cms_envelopes OUTDIR`` to write a sample blob, its key and certificate
(all fresh, never checked in) for inspection with ``openssl cms -decrypt``.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asn1crypto import algos, cms, core, keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from cryptography.x509.oid import NameOID

_EOC = b"\x00\x00"


def _indefinite(identifier: int, *parts: bytes) -> bytes:
    """A constructed BER element with indefinite length (X.690 8.1.3.6)."""
    return bytes([identifier, 0x80]) + b"".join(parts) + _EOC


def _chunked_octets(identifier: int, data: bytes, chunk: int) -> bytes:
    """A constructed OCTET STRING (or implicit [0]) made of primitive OCTET STRING chunks (X.690 8.7.3)."""
    pieces = [core.OctetString(data[i : i + chunk]).dump() for i in range(0, len(data), chunk)]
    return _indefinite(identifier, *pieces)


def subject_key_identifier(public_key: rsa.RSAPublicKey) -> bytes:
    """SHA-1 of the subjectPublicKey BIT STRING (RFC 5280 4.2.1.2 method 1), as openssl computes it."""
    info = keys.PublicKeyInfo.load(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    return hashlib.sha1(info["public_key"].contents[1:], usedforsecurity=False).digest()


@dataclass(frozen=True)
class EnvelopeOptions:
    """Defaults give exactly what KMS sends; each field can break one thing."""

    oaep_hash: str = "sha256"
    mgf_hash: str = "sha256"
    key_algorithm: str = "rsaes_oaep"
    content_algorithm: str = "aes256_cbc"
    content_key_bytes: int = 32
    iv_bytes: int = 16
    chunk_bytes: int = 1000
    recipients: int = 1
    use_issuer_and_serial: bool = False
    bad_padding: bool = False
    content_type: str = "data"


def build_envelope(
    plaintext: bytes, recipient: rsa.RSAPublicKey, options: EnvelopeOptions = EnvelopeOptions()
) -> bytes:
    """Encrypt ``plaintext`` to ``recipient`` the way KMS builds CiphertextForRecipient."""
    content_key = os.urandom(options.content_key_bytes)
    iv = os.urandom(options.iv_bytes)
    if options.bad_padding:
        padded = plaintext + bytes(16 - len(plaintext) % 16 or 16)  # zero bytes: not PKCS#7
    else:
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
    key_for_cipher = content_key if len(content_key) in (16, 24, 32) else content_key[:32].ljust(32, b"\x00")
    iv_for_cipher = iv if len(iv) == 16 else iv[:16].ljust(16, b"\x00")
    encryptor = Cipher(algorithms.AES(key_for_cipher), modes.CBC(iv_for_cipher)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()

    hash_cls: dict[str, Callable[[], hashes.HashAlgorithm]] = {
        "sha256": hashes.SHA256,
        "sha1": hashes.SHA1,
        "sha512": hashes.SHA512,
    }
    oaep = asym_padding.OAEP(
        mgf=asym_padding.MGF1(hash_cls[options.mgf_hash]()), algorithm=hash_cls[options.oaep_hash](), label=None
    )
    if options.key_algorithm == "rsaes_pkcs1v15":
        encrypted_key = recipient.encrypt(content_key, asym_padding.PKCS1v15())
        key_algorithm = cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_pkcs1v15"})
    else:
        encrypted_key = recipient.encrypt(content_key, oaep)
        key_algorithm = cms.KeyEncryptionAlgorithm(
            {
                "algorithm": "rsaes_oaep",
                "parameters": algos.RSAESOAEPParams(
                    {
                        "hash_algorithm": {"algorithm": options.oaep_hash},
                        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": options.mgf_hash}},
                    }
                ),
            }
        )
    if options.use_issuer_and_serial:
        rid = cms.RecipientIdentifier(
            {
                "issuer_and_serial_number": {
                    "issuer": asn1_x509.Name.build({"common_name": "cms test recipient"}),
                    "serial_number": 1,
                }
            }
        )
        version = "v0"
    else:
        rid = cms.RecipientIdentifier({"subject_key_identifier": subject_key_identifier(recipient)})
        version = "v2"
    ktri = cms.RecipientInfo(
        {
            "ktri": {
                "version": version,
                "rid": rid,
                "key_encryption_algorithm": key_algorithm,
                "encrypted_key": encrypted_key,
            }
        }
    )
    recipient_infos = cms.RecipientInfos([ktri] * options.recipients).dump()
    content_algorithm = algos.EncryptionAlgorithm(
        {"algorithm": options.content_algorithm, "parameters": core.OctetString(iv)}
    ).dump()
    encrypted_content_info = _indefinite(
        0x30,
        cms.ContentType(options.content_type).dump(),
        content_algorithm,
        _chunked_octets(0xA0, ciphertext, options.chunk_bytes),  # [0] IMPLICIT, constructed
    )
    enveloped_data = _indefinite(0x30, core.Integer(2).dump(), recipient_infos, encrypted_content_info)
    return _indefinite(0x30, cms.ContentType("enveloped_data").dump(), _indefinite(0xA0, enveloped_data))


def self_signed_certificate(private_key: rsa.RSAPrivateKey) -> x509.Certificate:
    """A recipient certificate for ``openssl cms -encrypt -keyid`` (its SKI is computed like ours)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cms test recipient")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private_key.public_key()), critical=False)
        .sign(private_key, hashes.SHA256())
    )


def write_sample(directory: Path, plaintext: bytes = b"sample plaintext for openssl") -> None:
    """Write ``envelope.ber``, ``recipient-key.pem`` and ``recipient-cert.pem`` into ``directory``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "envelope.ber").write_bytes(build_envelope(plaintext, key.public_key()))
    (directory / "recipient-key.pem").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (directory / "recipient-cert.pem").write_bytes(self_signed_certificate(key).public_bytes(Encoding.PEM))


if __name__ == "__main__":
    write_sample(Path(sys.argv[1]))
