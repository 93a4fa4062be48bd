"""Sealing of agent keys: one versioned CBOR blob format, two ways to get the AES-256-GCM key.

- :class:`KmsSealer` (cloud): a data key from KMS ``GenerateDataKey`` with an attested Recipient, bound to the
  wallet by ``EncryptionContext={"wallet_id": ...}``; unsealing calls ``Decrypt`` with a Recipient, so only an
  enclave whose PCRs match the key policy gets the data key back.
- :class:`LocalSealer` (self-host): a key derived with Argon2id from an operator secret.

The server asks a :class:`Sealers` for the sealer of each request: the KMS one is made per request with the AWS
credentials the request carried (:mod:`enclave_app.kms_sealers`), the local one is always the same.

Blob (CBOR map, at most ``MAX_SEALED_BLOB_BYTES``)::

    {"format": "waiaas-sealed-key", "version": 1, "scheme": "kms-aes256gcm" | "argon2id-aes256gcm",
     "wallet_id": str, "nonce": bstr(12), "ciphertext": bstr,
     kms:   "key_id": str, "data_key": bstr            (the KMS CiphertextBlob of the data key)
     local: "salt": bstr(16), "t": int, "p": int, "m": int   (Argon2id parameters)}

The AEAD's associated data binds the wallet id, the agent public key, the owner public key, the scheme and its
parameters, so a blob cannot be moved to another wallet or re-labelled. The AEAD alone cannot stop a forged KMS
answer (whoever forges the answer chooses the data key), which is why :func:`unseal_agent_key` re-derives the
Ed25519 public key and compares it with the pinned one: that comparison is not optional.
"""

from __future__ import annotations

import hmac
import os
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from enclave_app.errors import CborDecodeError, KeyDerivationError, KeyMismatchError, SealingError
from enclave_app.kms import RecipientKms
from enclave_app.protocol_wire import AwsCredentials
from enclave_app.safe_cbor import loads_untrusted
from policies.identifiers import MAX_WALLET_ID_CHARS

BLOB_FORMAT = "waiaas-sealed-key"
BLOB_VERSION = 1
SCHEME_KMS = "kms-aes256gcm"
SCHEME_LOCAL = "argon2id-aes256gcm"

MAX_SEALED_BLOB_BYTES = 4096
"""Largest blob accepted (ours: a 32-byte seed plus headers and a KMS CiphertextBlob of a few hundred bytes)."""

GCM_NONCE_BYTES = 12
"""96-bit nonce (NIST SP 800-38D 8.2.2: random nonces; one nonce per blob, one blob per key)."""

ED25519_SEED_BYTES = 32
ED25519_PUBLIC_BYTES = 32

ARGON2_SALT_BYTES = 16
"""RFC 9106 section 3.1: 128-bit salt."""

ARGON2_ITERATIONS = 3
ARGON2_LANES = 4
ARGON2_MEMORY_KIB = 64 * 1024
"""RFC 9106 section 4, second recommended option: t=3, p=4, m=64 MiB (measured here: ~0.25 s per derivation on
one shared core), chosen over the first option (2 GiB) because the self-host signer runs on small machines.
Unsealing accepts exactly these parameters: a hostile blob can neither weaken nor inflate them."""

MIN_OPERATOR_SECRET_BYTES = 16
"""Minimum operator secret (ours: 128 bits; the KDF slows guessing, it does not create entropy)."""


@dataclass(frozen=True, slots=True)
class SealBinding:
    """What a sealed key is bound to: its wallet, its own public key, and the wallet owner's public key."""

    wallet_id: str
    agent_public_key: bytes
    owner_public_key: bytes

    def __post_init__(self) -> None:
        if not self.wallet_id or len(self.wallet_id) > MAX_WALLET_ID_CHARS:
            raise SealingError("wallet id empty or too long")
        if len(self.agent_public_key) != ED25519_PUBLIC_BYTES or len(self.owner_public_key) != ED25519_PUBLIC_BYTES:
            raise SealingError("public keys must be 32-byte Ed25519 keys")


class Sealer(Protocol):
    """Seals and unseals a secret for one :class:`SealBinding`; ``close`` when done with it (the KMS sealer's client
    holds a connection)."""

    def seal(self, secret: bytes, binding: SealBinding) -> bytes: ...

    def unseal(self, blob: bytes, binding: SealBinding) -> bytes: ...

    def close(self) -> None: ...


class Sealers(Protocol):
    """The sealer for one ``provision_wallet`` or ``load_wallet`` request; ``credentials`` are the AWS credentials it
    carried (or None). May raise :class:`~enclave_app.errors.KmsError` (the KMS sealer without credentials)."""

    def for_request(self, credentials: AwsCredentials | None) -> Sealer: ...


def _associated_data(scheme: str, binding: SealBinding, params: list[Any]) -> bytes:
    return cbor2.dumps(
        [BLOB_FORMAT, BLOB_VERSION, scheme, binding.wallet_id, binding.agent_public_key, binding.owner_public_key,
         params]
    )  # fmt: skip


def _encrypt(key: bytes, secret: bytes, aad: bytes) -> tuple[bytes, bytes]:
    nonce = os.urandom(GCM_NONCE_BYTES)
    return nonce, AESGCM(key).encrypt(nonce, secret, aad)


def _decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError) as exc:
        raise SealingError("sealed blob does not open") from exc


def _parse(blob: bytes, scheme: str, binding: SealBinding, extra: dict[str, type]) -> dict[str, Any]:
    if not isinstance(blob, bytes) or not 0 < len(blob) <= MAX_SEALED_BLOB_BYTES:
        raise SealingError("sealed blob size out of bounds")
    try:
        fields = loads_untrusted(blob, max_depth=2)
    except CborDecodeError as exc:
        raise SealingError("sealed blob malformed") from exc
    expected: dict[str, type] = {
        "format": str, "version": int, "scheme": str, "wallet_id": str, "nonce": bytes, "ciphertext": bytes, **extra,
    }  # fmt: skip
    if not isinstance(fields, dict) or set(fields) != set(expected):
        raise SealingError("sealed blob malformed")
    for name, kind in expected.items():
        if type(fields[name]) is not kind:
            raise SealingError("sealed blob malformed")
    if fields["format"] != BLOB_FORMAT or fields["version"] != BLOB_VERSION or fields["scheme"] != scheme:
        raise SealingError("sealed blob of an unknown format, version or scheme")
    if fields["wallet_id"] != binding.wallet_id:
        raise SealingError("sealed blob belongs to another wallet")
    if len(fields["nonce"]) != GCM_NONCE_BYTES:
        raise SealingError("sealed blob malformed")
    return fields


class KmsSealer:
    """AES-256-GCM under a KMS data key obtained (and recovered) with an attested Recipient."""

    def __init__(self, kms: RecipientKms, *, key_id: str) -> None:
        self._kms = kms
        self._key_id = key_id

    def seal(self, secret: bytes, binding: SealBinding) -> bytes:
        data_key = self._kms.generate_data_key(key_id=self._key_id, encryption_context=_context(binding))
        aad = _associated_data(SCHEME_KMS, binding, [self._key_id, data_key.ciphertext_blob])
        nonce, ciphertext = _encrypt(data_key.plaintext, secret, aad)
        return cbor2.dumps(
            {"format": BLOB_FORMAT, "version": BLOB_VERSION, "scheme": SCHEME_KMS, "wallet_id": binding.wallet_id,
             "nonce": nonce, "ciphertext": ciphertext, "key_id": self._key_id, "data_key": data_key.ciphertext_blob}
        )  # fmt: skip

    def close(self) -> None:
        self._kms.close()

    def unseal(self, blob: bytes, binding: SealBinding) -> bytes:
        fields = _parse(blob, SCHEME_KMS, binding, {"key_id": str, "data_key": bytes})
        if fields["key_id"] != self._key_id:
            raise SealingError("sealed blob names another KMS key")
        key = self._kms.decrypt(
            key_id=self._key_id, ciphertext_blob=fields["data_key"], encryption_context=_context(binding)
        )
        if len(key) != 32:
            raise SealingError("sealed blob does not open")
        aad = _associated_data(SCHEME_KMS, binding, [self._key_id, fields["data_key"]])
        return _decrypt(key, fields["nonce"], fields["ciphertext"], aad)


def _context(binding: SealBinding) -> dict[str, str]:
    return {"wallet_id": binding.wallet_id}


_KDF_LOCK = threading.Lock()
"""One Argon2id derivation at a time per process. With cryptography 50.0.2 (OpenSSL 4.0.3), two derivations with
several lanes running at once in two threads never return (measured: no CPU used, for ever), and every later one
raises MemoryError; one at a time each takes about 0.1 s on the development machine. Two wallets loaded at once
(two agents calling after a signer restart) did exactly that (security review, sixth session)."""


class LocalSealer:
    """AES-256-GCM under an Argon2id key derived from an operator secret (self-host)."""

    def __init__(self, operator_secret: bytes) -> None:
        if len(operator_secret) < MIN_OPERATOR_SECRET_BYTES:
            raise SealingError(f"operator secret too short (at least {MIN_OPERATOR_SECRET_BYTES} bytes)")
        self._secret = operator_secret

    def __repr__(self) -> str:
        return "LocalSealer(<secret>)"

    def for_request(self, credentials: AwsCredentials | None) -> LocalSealer:
        """Itself: no AWS credentials are needed (any that came are not used)."""
        del credentials
        return self

    def close(self) -> None:
        """Nothing to close: the local sealer holds no connection and is used again."""

    def _derive(self, salt: bytes) -> bytes:
        kdf = Argon2id(
            salt=salt, length=32, iterations=ARGON2_ITERATIONS, lanes=ARGON2_LANES, memory_cost=ARGON2_MEMORY_KIB
        )
        with _KDF_LOCK:
            try:
                return kdf.derive(self._secret)
            except Exception as exc:  # e.g. MemoryError: an exhausted resource, not an inconsistency of the enclave
                raise KeyDerivationError("key derivation failed") from exc

    def seal(self, secret: bytes, binding: SealBinding) -> bytes:
        salt = os.urandom(ARGON2_SALT_BYTES)
        params = [salt, ARGON2_ITERATIONS, ARGON2_LANES, ARGON2_MEMORY_KIB]
        nonce, ciphertext = _encrypt(self._derive(salt), secret, _associated_data(SCHEME_LOCAL, binding, params))
        return cbor2.dumps(
            {"format": BLOB_FORMAT, "version": BLOB_VERSION, "scheme": SCHEME_LOCAL, "wallet_id": binding.wallet_id,
             "nonce": nonce, "ciphertext": ciphertext, "salt": salt, "t": ARGON2_ITERATIONS, "p": ARGON2_LANES,
             "m": ARGON2_MEMORY_KIB}
        )  # fmt: skip

    def unseal(self, blob: bytes, binding: SealBinding) -> bytes:
        fields = _parse(blob, SCHEME_LOCAL, binding, {"salt": bytes, "t": int, "p": int, "m": int})
        if (fields["t"], fields["p"], fields["m"]) != (ARGON2_ITERATIONS, ARGON2_LANES, ARGON2_MEMORY_KIB):
            raise SealingError("sealed blob has unexpected KDF parameters")
        if len(fields["salt"]) != ARGON2_SALT_BYTES:
            raise SealingError("sealed blob malformed")
        params = [fields["salt"], ARGON2_ITERATIONS, ARGON2_LANES, ARGON2_MEMORY_KIB]
        key = self._derive(fields["salt"])
        return _decrypt(key, fields["nonce"], fields["ciphertext"], _associated_data(SCHEME_LOCAL, binding, params))


def _raw_public(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def seal_agent_key(sealer: Sealer, private_key: Ed25519PrivateKey, binding: SealBinding) -> bytes:
    """Seal an agent key; the binding's agent public key must be this key's."""
    if not hmac.compare_digest(_raw_public(private_key), binding.agent_public_key):
        raise KeyMismatchError("agent key does not match the binding")
    seed = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return sealer.seal(seed, binding)


def unseal_agent_key(sealer: Sealer, blob: bytes, binding: SealBinding) -> Ed25519PrivateKey:
    """Unseal an agent key and check that it derives the pinned agent public key, or raise.

    The caller must take ``binding.agent_public_key`` from a trusted source (the owner-signed wallet record /
    the on-chain multisig member), never from the parent's say-so.
    """
    seed = sealer.unseal(blob, binding)
    if len(seed) != ED25519_SEED_BYTES:
        raise KeyMismatchError("unsealed key does not match the pinned public key")
    private_key = Ed25519PrivateKey.from_private_bytes(seed)
    # The substitution check: a forged KMS answer can carry a key of the forger's choosing, never the pinned one.
    if not hmac.compare_digest(_raw_public(private_key), binding.agent_public_key):
        raise KeyMismatchError("unsealed key does not match the pinned public key")
    return private_key


# For the server's handlers, in a worker thread: making the KMS sealer makes a boto3 client, which is slow too. The
# sealer is closed when done, success or not (the KMS one closes its client's connection through the forwarder).
def seal_for_request(
    sealers: Sealers, credentials: AwsCredentials | None, private_key: Ed25519PrivateKey, binding: SealBinding
) -> bytes:
    """`seal_agent_key` with the sealer of one request (``credentials``: the AWS credentials it carried)."""
    sealer = sealers.for_request(credentials)
    try:
        return seal_agent_key(sealer, private_key, binding)
    finally:
        sealer.close()


def unseal_for_request(
    sealers: Sealers, credentials: AwsCredentials | None, blob: bytes, binding: SealBinding
) -> Ed25519PrivateKey:
    """`unseal_agent_key` with the sealer of one request (``credentials``: the AWS credentials it carried)."""
    sealer = sealers.for_request(credentials)
    try:
        return unseal_agent_key(sealer, blob, binding)
    finally:
        sealer.close()
