"""The forged-KMS-answer attack: a parent forging KMS's Decrypt answer, a fixed data key, a key's raw seed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, load_der_public_key

from enclave_app.kms import DataKey, KmsApi
from tests.support.cms_envelopes import build_envelope


def raw_seed(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


class ForgingParent:
    """A compromised parent relaying KMS calls: it reads the attestation document (it is not secret), takes the
    recipient public key from it, and answers Decrypt with a CMS envelope of a data key of its own choosing."""

    def __init__(self, real: KmsApi, forged_data_key: bytes, *, with_plaintext: bool = False) -> None:
        self._real = real
        self._key = forged_data_key
        self._with_plaintext = with_plaintext

    def generate_data_key(self, **kwargs: Any) -> Mapping[str, Any]:
        return self._real.generate_data_key(**kwargs)

    def generate_random(self, **kwargs: Any) -> Mapping[str, Any]:
        return self._real.generate_random(**kwargs)

    def decrypt(self, **kwargs: Any) -> Mapping[str, Any]:
        outer = cbor2.loads(kwargs["Recipient"]["AttestationDocument"])
        payload = cbor2.loads(outer[2])
        recipient_key = load_der_public_key(payload["public_key"])
        assert isinstance(recipient_key, rsa.RSAPublicKey)  # the enclave's recipient key
        envelope = build_envelope(self._key, recipient_key)
        return {
            "KeyId": kwargs["KeyId"],
            "Plaintext": self._key if self._with_plaintext else None,
            "CiphertextForRecipient": envelope,
        }

    def close(self) -> None:
        self._real.close()


class FixedDataKey:
    def __init__(self, key: bytes) -> None:
        self.key = key

    def generate_data_key(self, *, key_id: str, encryption_context: Mapping[str, str]) -> DataKey:
        return DataKey(plaintext=self.key, ciphertext_blob=b"attacker-chosen")

    def decrypt(self, *, key_id: str, ciphertext_blob: bytes, encryption_context: Mapping[str, str]) -> bytes:
        return self.key

    def generate_random(self, number_of_bytes: int) -> bytes:
        return bytes(number_of_bytes)

    def close(self) -> None:
        pass
