"""Opening KMS ``CiphertextForRecipient``: CMS EnvelopedData (RFC 5652) addressed to the enclave's RSA key.

KMS answers a request that carries a ``Recipient`` with a BER-encoded (indefinite lengths, chunked OCTET STRING)
ContentInfo/EnvelopedData holding exactly one KeyTransRecipientInfo: the content-encryption key wrapped with
RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label, RFC 8017), and the content encrypted with AES-256-CBC and PKCS#7
padding. ``cryptography`` has no CMS decryption, so asn1crypto parses the structure and ``cryptography``
primitives do the arithmetic. Every algorithm is pinned: anything else is refused before any key is used.

Every failure raises :class:`RecipientDecryptionError` with the same message (no padding or OAEP oracle).
The recipient is authenticated by the OAEP decryption itself: a blob wrapped to another key does not open.
"""

from __future__ import annotations

from asn1crypto import cms as asn1_cms
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from enclave_app.errors import RecipientDecryptionError

MAX_ENVELOPE_BYTES = 16384
"""Largest CiphertextForRecipient accepted. KMS plaintexts are at most 4096 bytes (KMS Decrypt/GenerateDataKey
limits); with an RSA-2048 wrapped key, IV, padding and BER framing the envelope stays far below this bound."""

AES256_KEY_BYTES = 32
AES_BLOCK_BYTES = 16
MAX_SUBJECT_KEY_IDENTIFIER_BYTES = 64
"""A subjectKeyIdentifier is a hash of the public key (RFC 5280 4.2.1.2); 64 bytes covers SHA-512."""

_OPAQUE = "CiphertextForRecipient could not be opened"


def decrypt_ciphertext_for_recipient(envelope: bytes, private_key: rsa.RSAPrivateKey) -> bytes:
    """Return the plaintext inside ``envelope``, or raise :class:`RecipientDecryptionError`.

    The caller must not use the plaintext for anything but the one purpose it asked KMS for, and must
    still check whatever binds it (for a sealed agent key: the re-derived public key).
    """
    try:
        return _decrypt(envelope, private_key)
    except RecipientDecryptionError:
        raise
    except Exception as exc:  # parser and primitive failures alike, all opaque
        raise RecipientDecryptionError(_OPAQUE) from exc


def _refuse() -> RecipientDecryptionError:
    return RecipientDecryptionError(_OPAQUE)


def _decrypt(envelope: bytes, private_key: rsa.RSAPrivateKey) -> bytes:
    # 1. Size bound, then parse (BER allowed) and require a fully consumed ContentInfo/EnvelopedData.
    if not isinstance(envelope, bytes) or not 0 < len(envelope) <= MAX_ENVELOPE_BYTES:
        raise _refuse()
    info = asn1_cms.ContentInfo.load(envelope, strict=True)
    if info["content_type"].native != "enveloped_data":
        raise _refuse()
    enveloped = info["content"]
    # 2. No originator info, no unprotected attributes (KMS sends neither), exactly one recipient.
    if enveloped["originator_info"].native is not None or enveloped["unprotected_attrs"].native is not None:
        raise _refuse()
    recipients = enveloped["recipient_infos"]
    if len(recipients) != 1 or recipients[0].name != "ktri":
        raise _refuse()
    ktri = recipients[0].chosen
    # 3. Recipient identified by subjectKeyIdentifier (RFC 5652 6.2.1: version 2 goes with it).
    if ktri["version"].native != "v2" or ktri["rid"].name != "subject_key_identifier":
        raise _refuse()
    if not 0 < len(ktri["rid"].chosen.native) <= MAX_SUBJECT_KEY_IDENTIFIER_BYTES:
        raise _refuse()
    # 4. Key transport is RSAES-OAEP with SHA-256, MGF1-SHA-256 and an empty label; nothing else.
    _check_oaep_sha256(ktri["key_encryption_algorithm"])
    # 5. Content is id-data under AES-256-CBC with a 16-byte IV, whole blocks, present (not detached).
    content_info = enveloped["encrypted_content_info"]
    if content_info["content_type"].native != "data":
        raise _refuse()
    algorithm = content_info["content_encryption_algorithm"]
    if algorithm["algorithm"].native != "aes256_cbc":
        raise _refuse()
    iv = algorithm["parameters"].native
    ciphertext = content_info["encrypted_content"].native
    if not isinstance(iv, bytes) or len(iv) != AES_BLOCK_BYTES:
        raise _refuse()
    if not isinstance(ciphertext, bytes) or not ciphertext or len(ciphertext) % AES_BLOCK_BYTES:
        raise _refuse()
    # 6. Unwrap the content-encryption key; it must be exactly an AES-256 key.
    encrypted_key = ktri["encrypted_key"].native
    if len(encrypted_key) != private_key.key_size // 8:
        raise _refuse()
    oaep = asym_padding.OAEP(mgf=asym_padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    content_key = private_key.decrypt(encrypted_key, oaep)
    if len(content_key) != AES256_KEY_BYTES:
        raise _refuse()
    # 7. Decrypt and strip PKCS#7 padding.
    decryptor = Cipher(algorithms.AES(content_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(AES_BLOCK_BYTES * 8).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def _check_oaep_sha256(algorithm: asn1_cms.KeyEncryptionAlgorithm) -> None:
    if algorithm["algorithm"].native != "rsaes_oaep":
        raise _refuse()
    params = algorithm["parameters"]
    if params["hash_algorithm"]["algorithm"].native != "sha256":
        raise _refuse()
    mgf = params["mask_gen_algorithm"]
    if mgf["algorithm"].native != "mgf1" or mgf["parameters"]["algorithm"].native != "sha256":
        raise _refuse()
    source = params["p_source_algorithm"]
    if source["algorithm"].native != "p_specified" or source["parameters"].native != b"":
        raise _refuse()
