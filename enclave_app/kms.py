"""KMS from inside the enclave: every call that releases a secret carries a ``Recipient`` attestation document.

For each call a fresh RSA-2048 key pair is generated; its public key (DER SubjectPublicKeyInfo) goes into an NSM
attestation document, which goes to KMS as ``Recipient={"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
"AttestationDocument": doc}``. KMS checks the document against the key policy and answers with
``CiphertextForRecipient`` (CMS EnvelopedData to that public key) instead of ``Plaintext``. Only this process
holds the private key, so only it can open the answer. The parent relays the TLS stream and sees nothing.

A ``Plaintext`` field in an answer to a Recipient request is refused: KMS never sends one, and accepting it
would let whoever forged the answer choose the secret. (A forger can still build a CMS envelope to the public
key in the document; callers must check what the secret binds, e.g. :func:`enclave_app.sealing.unseal_agent_key`.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from enclave_app.cms import decrypt_ciphertext_for_recipient
from enclave_app.errors import KmsAccessDeniedError, KmsCredentialsRejectedError, KmsError, RecipientDecryptionError
from enclave_app.nsm import Nsm

RECIPIENT_KEY_ENCRYPTION_ALGORITHM = "RSAES_OAEP_SHA_256"
"""The only ``KeyEncryptionAlgorithm`` KMS offers for a Recipient (KMS API reference, RecipientInfo)."""

RECIPIENT_RSA_BITS = 2048
"""Ephemeral recipient key size: what KMS requires for RSAES_OAEP_SHA_256 recipients."""

DATA_KEY_SPEC = "AES_256"
DATA_KEY_BYTES = 32

ACCESS_DENIED = "AccessDeniedException"
"""KMS error code when the caller's IAM or key policy (here: the attestation conditions) refuses the call."""

CREDENTIALS_REJECTED = frozenset({
    "ExpiredTokenException", "ExpiredToken", "UnrecognizedClientException", "InvalidClientTokenId",
    "InvalidSignatureException", "SignatureDoesNotMatch", "IncompleteSignature", "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
})  # fmt: skip
"""Error codes with which AWS refuses the credentials a call was signed with (expired, unknown, altered, missing;
AWS common errors), before any key policy is looked at."""

MAX_RANDOM_BYTES = 1024
"""KMS GenerateRandom accepts NumberOfBytes 1..1024 (KMS API reference)."""


class KmsApi(Protocol):
    """The subset of the boto3 KMS client the enclave uses (keyword arguments as in the KMS API)."""

    def generate_data_key(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def decrypt(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def generate_random(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def close(self) -> None:
        """Close the client's connections (boto3: ``BaseClient.close``)."""
        ...


@dataclass(frozen=True, slots=True)
class DataKey:
    """A data key: plaintext for immediate use (never logged, not in repr), ciphertext blob for storage."""

    plaintext: bytes = field(repr=False)
    ciphertext_blob: bytes


class RecipientKms(Protocol):
    """What the sealer needs from KMS; :class:`AttestedKms` is the production implementation."""

    def generate_data_key(self, *, key_id: str, encryption_context: Mapping[str, str]) -> DataKey: ...

    def decrypt(self, *, key_id: str, ciphertext_blob: bytes, encryption_context: Mapping[str, str]) -> bytes: ...

    def generate_random(self, number_of_bytes: int) -> bytes: ...

    def close(self) -> None: ...


def _check_key(response: Mapping[str, Any], key_id: str) -> None:
    """KMS names the key it used (always its ARN): when the caller named the key by ARN, it must be that key."""
    if key_id.startswith("arn:") and response.get("KeyId") != key_id:
        raise KmsError("KMS answered with another key than the one asked for")


class AttestedKms:
    """KMS calls with an attested Recipient; plaintext is returned only after CMS decryption."""

    def __init__(self, client: KmsApi, nsm: Nsm) -> None:
        self._client = client
        self._nsm = nsm

    def generate_data_key(self, *, key_id: str, encryption_context: Mapping[str, str]) -> DataKey:
        private_key, recipient = self._recipient()
        response = self._call(
            "generate_data_key",
            KeyId=key_id,
            KeySpec=DATA_KEY_SPEC,
            EncryptionContext=dict(encryption_context),
            Recipient=recipient,
        )
        blob = response.get("CiphertextBlob")
        if not isinstance(blob, bytes) or not blob:
            raise KmsError("GenerateDataKey answer lacks CiphertextBlob")
        _check_key(response, key_id)
        plaintext = self._open(response, private_key)
        if len(plaintext) != DATA_KEY_BYTES:
            raise KmsError("GenerateDataKey answer has a wrong key size")
        return DataKey(plaintext=plaintext, ciphertext_blob=blob)

    def decrypt(self, *, key_id: str, ciphertext_blob: bytes, encryption_context: Mapping[str, str]) -> bytes:
        private_key, recipient = self._recipient()
        response = self._call(
            "decrypt",
            KeyId=key_id,
            CiphertextBlob=ciphertext_blob,
            EncryptionContext=dict(encryption_context),
            Recipient=recipient,
        )
        _check_key(response, key_id)
        return self._open(response, private_key)

    def generate_random(self, number_of_bytes: int) -> bytes:
        if not 1 <= number_of_bytes <= MAX_RANDOM_BYTES:
            raise KmsError("GenerateRandom size out of range")
        private_key, recipient = self._recipient()
        response = self._call("generate_random", NumberOfBytes=number_of_bytes, Recipient=recipient)
        random = self._open(response, private_key)
        if len(random) != number_of_bytes:
            raise KmsError("GenerateRandom answer has a wrong size")
        return random

    def close(self) -> None:
        """Close the client's connections now rather than when it is collected (each wallet request has its own
        client: `enclave_app.kms_sealers`). A failure to close changes nothing about the answer."""
        close = getattr(self._client, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()

    def _recipient(self) -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
        # 1. A fresh key per call: a captured document is useless for any other answer.
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=RECIPIENT_RSA_BITS)
        public_der = private_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        # 2. The NSM binds the public key to this enclave's measurements.
        document = self._nsm.attestation(public_key=public_der, user_data=None, nonce=None)
        return private_key, {
            "KeyEncryptionAlgorithm": RECIPIENT_KEY_ENCRYPTION_ALGORITHM,
            "AttestationDocument": document,
        }

    def _call(self, operation: str, **kwargs: Any) -> Mapping[str, Any]:
        # Lower-layer errors (botocore ClientError, BotoCoreError, connection errors) are translated here only.
        try:
            response = getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == ACCESS_DENIED:
                raise KmsAccessDeniedError(f"KMS {operation} failed: access denied") from exc
            if code in CREDENTIALS_REJECTED:
                raise KmsCredentialsRejectedError(f"KMS {operation} failed: credentials refused ({code})") from exc
            raise KmsError(f"KMS {operation} failed") from exc
        except Exception as exc:
            raise KmsError(f"KMS {operation} failed") from exc
        if not isinstance(response, Mapping):
            raise KmsError(f"KMS {operation} answer malformed")
        return response

    @staticmethod
    def _open(response: Mapping[str, Any], private_key: rsa.RSAPrivateKey) -> bytes:
        # 3. A Recipient answer carries no Plaintext, only CiphertextForRecipient.
        if response.get("Plaintext") is not None:
            raise KmsError("KMS answer carries Plaintext despite Recipient")
        envelope = response.get("CiphertextForRecipient")
        if not isinstance(envelope, bytes):
            raise KmsError("KMS answer lacks CiphertextForRecipient")
        # 4. Only our ephemeral key opens it.
        try:
            return decrypt_ciphertext_for_recipient(envelope, private_key)
        except RecipientDecryptionError as exc:
            raise KmsError("KMS answer could not be opened") from exc
