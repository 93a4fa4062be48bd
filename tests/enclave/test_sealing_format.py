"""The self-host sealed-key blob, built and opened independently from its documented format (`enclave_app.sealing`'s
module docstring; docs/selfhost.md: Argon2id of 64 MiB, then AES-256-GCM): a blob a signer wrote must open in every
later signer, so its parameters, labels and associated data are a stored format, not an implementation detail
(mutation testing, twenty-fourth session: a sealer that changed any of them still opened its own blobs)."""

from __future__ import annotations

import os

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from enclave_app.errors import SealingError
from enclave_app.sealing import LocalSealer, SealBinding, seal_agent_key, unseal_agent_key

SECRET = b"operator secret, 32 bytes long!!"
WALLET = "wallet-7f3a"
OWNER = bytes(range(32))


def _agent() -> tuple[Ed25519PrivateKey, bytes, bytes]:
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return key, seed, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _key(salt: bytes) -> bytes:
    """RFC 9106's second recommended option: t=3, p=4, m=64 MiB, a 32-byte key."""
    return Argon2id(salt=salt, length=32, iterations=3, lanes=4, memory_cost=65536).derive(SECRET)


def _aad(agent_public: bytes, salt: bytes) -> bytes:
    return cbor2.dumps(["waiaas-sealed-key", 1, "argon2id-aes256gcm", WALLET, agent_public, OWNER, [salt, 3, 4, 65536]])


def test_a_blob_written_to_the_documented_format_opens() -> None:
    _, seed, agent_public = _agent()
    salt, nonce = os.urandom(16), os.urandom(12)
    blob = cbor2.dumps(
        {"format": "waiaas-sealed-key", "version": 1, "scheme": "argon2id-aes256gcm", "wallet_id": WALLET,
         "nonce": nonce, "ciphertext": AESGCM(_key(salt)).encrypt(nonce, seed, _aad(agent_public, salt)),
         "salt": salt, "t": 3, "p": 4, "m": 65536}
    )  # fmt: skip
    opened = unseal_agent_key(LocalSealer(SECRET), blob, SealBinding(WALLET, agent_public, OWNER))
    assert opened.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()) == seed


def test_a_sealed_blob_is_the_documented_format() -> None:
    key, seed, agent_public = _agent()
    blob = seal_agent_key(LocalSealer(SECRET), key, SealBinding(WALLET, agent_public, OWNER))
    fields = cbor2.loads(blob)
    assert set(fields) == {"format", "version", "scheme", "wallet_id", "nonce", "ciphertext", "salt", "t", "p", "m"}
    assert (fields["format"], fields["version"], fields["scheme"]) == ("waiaas-sealed-key", 1, "argon2id-aes256gcm")
    assert (fields["wallet_id"], fields["t"], fields["p"], fields["m"]) == (WALLET, 3, 4, 65536)
    assert (len(fields["salt"]), len(fields["nonce"])) == (16, 12)
    aad = _aad(agent_public, fields["salt"])
    assert AESGCM(_key(fields["salt"])).decrypt(fields["nonce"], fields["ciphertext"], aad) == seed


def test_a_salt_or_nonce_of_another_length_or_type_is_refused() -> None:
    key, _, agent_public = _agent()
    binding = SealBinding(WALLET, agent_public, OWNER)
    sealer = LocalSealer(SECRET)
    fields = cbor2.loads(seal_agent_key(sealer, key, binding))
    for salt in (fields["salt"][:15], fields["salt"] + b"\0"):
        with pytest.raises(SealingError, match=r"^sealed blob malformed$"):
            sealer.unseal(cbor2.dumps(dict(fields, salt=salt)), binding)
    for salt in ("s" * 16, list(fields["salt"])):  # every field of its CBOR type: no text or array for bytes
        with pytest.raises(SealingError, match=r"^sealed blob malformed$"):
            sealer.unseal(cbor2.dumps(dict(fields, salt=salt)), binding)
    for nonce in (fields["nonce"][:11], fields["nonce"] + b"\0"):
        with pytest.raises(SealingError, match=r"^sealed blob malformed$"):
            sealer.unseal(cbor2.dumps(dict(fields, nonce=nonce)), binding)


def test_an_operator_secret_of_sixteen_bytes_is_the_shortest_taken() -> None:
    LocalSealer(b"x" * 16)
    with pytest.raises(SealingError, match=r"^operator secret too short \(at least 16 bytes\)$"):
        LocalSealer(b"x" * 15)


def test_a_blob_past_4096_bytes_or_empty_is_refused_before_it_is_read() -> None:
    key, _, agent_public = _agent()
    binding = SealBinding(WALLET, agent_public, OWNER)
    sealer = LocalSealer(SECRET)
    fields = cbor2.loads(seal_agent_key(sealer, key, binding))
    padding = 4097 - len(cbor2.dumps(fields))
    padded = cbor2.dumps(dict(fields, ciphertext=fields["ciphertext"] + b"\0" * padding))
    padded = cbor2.dumps(dict(fields, ciphertext=fields["ciphertext"] + b"\0" * (padding - (len(padded) - 4097))))
    assert len(padded) == 4097  # the ciphertext's length header grows by a byte past 255 bytes
    for refused in (padded, b""):
        with pytest.raises(SealingError, match=r"^sealed blob size out of bounds$"):
            sealer.unseal(refused, binding)


@pytest.mark.parametrize(("agent", "owner"), [(bytes(31), bytes(32)), (bytes(32), bytes(33)), (bytes(33), bytes(31))])
def test_a_binding_takes_only_32_byte_keys(agent: bytes, owner: bytes) -> None:
    with pytest.raises(SealingError, match=r"^public keys must be 32-byte Ed25519 keys$"):
        SealBinding(WALLET, agent, owner)
