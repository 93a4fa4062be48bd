"""Sealing end to end: KmsSealer against the attesting test KMS (moto + real attestation + real CMS), LocalSealer,
the forged-KMS-answer attack, and a scan of everything the flows emit for the private seed."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)
from moto import mock_aws

from enclave_app.errors import KeyMismatchError, KmsAccessDeniedError, KmsError, SealingError
from enclave_app.kms import AttestedKms, DataKey, KmsApi
from enclave_app.nsm import DeviceNsm
from enclave_app.sealing import (
    KmsSealer,
    LocalSealer,
    SealBinding,
    seal_agent_key,
    unseal_agent_key,
)
from tests.enclave.forged_kms import FixedDataKey, ForgingParent, raw_seed
from tests.fakes.attesting_kms import AttestingTestKms, cdk_seal_key_policy
from tests.fakes.fake_nsm_device import FakeNsmDevice
from tests.support.aws_env import use_test_credentials
from tests.support.nitro_test_pki import NitroTestPki

NOW = datetime(2032, 2, 3, 4, 5, 6, tzinfo=UTC)
GOOD_PCRS = {i: bytes([0x10 + i]) * 48 for i in range(16)}
# The seal-key policy CDK deploys, rendered for these PCRs: the test KMS evaluates the deployed policy itself.
SEAL_KEY_POLICY, HOST_ROLE = cdk_seal_key_policy(pcr0=GOOD_PCRS[0], pcr8=GOOD_PCRS[8])
WALLET = "wallet-7f3a"


def owner_key_policy() -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": HOST_ROLE},
                "Action": "kms:Sign",
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:SigningAlgorithm": "ED25519_SHA_512", "kms:MessageType": "RAW"}},
            },
            {"Effect": "Allow", "Principal": {"AWS": HOST_ROLE}, "Action": "kms:GetPublicKey", "Resource": "*"},
        ],
    }


class World:
    """One test world: a PKI, a test KMS with a seal key and an owner key, and enclaves to attest with."""

    def __init__(self) -> None:
        self.pki = NitroTestPki.create(not_before=NOW - timedelta(hours=1), not_after=NOW + timedelta(hours=3))
        self.kms = AttestingTestKms(root_certificate_pem=self.pki.root_pem, clock=lambda: NOW, caller_arn=HOST_ROLE)
        self.seal_key = self.kms.create_key(Policy=json.dumps(SEAL_KEY_POLICY))["KeyMetadata"]["KeyId"]
        owner = self.kms.create_key(
            Policy=json.dumps(owner_key_policy()), KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY"
        )
        self.owner_key = owner["KeyMetadata"]["KeyId"]
        der = self.kms.get_public_key(KeyId=self.owner_key)["PublicKey"]
        self.owner_public = load_der_public_key(der).public_bytes(Encoding.Raw, PublicFormat.Raw)

    def enclave(self, pcrs: Mapping[int, bytes] = GOOD_PCRS, client: KmsApi | None = None) -> AttestedKms:
        device = FakeNsmDevice(pki=self.pki, now=NOW, pcrs=dict(pcrs))
        return AttestedKms(client or self.kms, DeviceNsm(-1, ioctl=device.ioctl))

    def sealer(self, pcrs: Mapping[int, bytes] = GOOD_PCRS, client: KmsApi | None = None) -> KmsSealer:
        return KmsSealer(self.enclave(pcrs, client), key_id=self.seal_key)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    use_test_credentials(monkeypatch)
    with mock_aws():
        yield World()


def _agent() -> tuple[Ed25519PrivateKey, bytes]:
    key = Ed25519PrivateKey.generate()
    return key, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_kms_seal_unseal_round_trip_with_right_pcrs(world: World) -> None:
    agent, agent_public = _agent()
    binding = SealBinding(WALLET, agent_public, world.owner_public)
    blob = seal_agent_key(world.sealer(), agent, binding)
    # A later boot of the same image: a new NSM device, a new ephemeral recipient key.
    recovered = unseal_agent_key(world.sealer(), blob, binding)
    assert raw_seed(recovered) == raw_seed(agent)
    operations = [(name, info["recipient"]) for name, info in world.kms.calls]
    assert operations == [("GenerateDataKey", True), ("Decrypt", True)]


def test_kms_unseal_with_wrong_pcr0_refused(world: World) -> None:
    agent, agent_public = _agent()
    binding = SealBinding(WALLET, agent_public, world.owner_public)
    blob = seal_agent_key(world.sealer(), agent, binding)
    other_image = {**GOOD_PCRS, 0: b"\xee" * 48}
    with pytest.raises(KmsAccessDeniedError, match="KMS decrypt failed: access denied") as caught:
        unseal_agent_key(world.sealer(other_image), blob, binding)
    assert "AccessDeniedException" in repr(caught.value.__cause__)


def test_kms_unseal_with_wrong_pcr8_refused(world: World) -> None:
    agent, agent_public = _agent()
    binding = SealBinding(WALLET, agent_public, world.owner_public)
    blob = seal_agent_key(world.sealer(), agent, binding)
    with pytest.raises(KmsAccessDeniedError, match="KMS decrypt failed: access denied"):
        unseal_agent_key(world.sealer({**GOOD_PCRS, 8: b"\x01" * 48}), blob, binding)


def test_kms_refuses_missing_recipient_and_other_root(world: World) -> None:
    data_key = world.kms.generate_data_key  # no Recipient: the Allow does not apply, the Denies do
    with pytest.raises(Exception, match="AccessDenied"):
        data_key(KeyId=world.seal_key, KeySpec="AES_256", EncryptionContext={"wallet_id": WALLET})
    rogue = NitroTestPki.create(not_before=NOW - timedelta(hours=1), not_after=NOW + timedelta(hours=3))
    device = FakeNsmDevice(pki=rogue, now=NOW, pcrs=dict(GOOD_PCRS))  # right PCRs, wrong PKI
    sealer = KmsSealer(AttestedKms(world.kms, DeviceNsm(-1, ioctl=device.ioctl)), key_id=world.seal_key)
    _, agent_public = _agent()
    with pytest.raises(KmsError, match="generate_data_key failed"):
        sealer.seal(b"s" * 32, SealBinding(WALLET, agent_public, world.owner_public))


def test_kms_blob_bound_to_wallet(world: World) -> None:
    agent, agent_public = _agent()
    blob = seal_agent_key(world.sealer(), agent, SealBinding(WALLET, agent_public, world.owner_public))
    with pytest.raises(SealingError, match="another wallet"):
        unseal_agent_key(world.sealer(), blob, SealBinding("wallet-other", agent_public, world.owner_public))
    # Same wallet id, different owner key: the AEAD's associated data does not match.
    _, stranger = _agent()
    with pytest.raises(SealingError, match="does not open"):
        unseal_agent_key(world.sealer(), blob, SealBinding(WALLET, agent_public, stranger))


def test_forged_kms_answer_with_another_key_refused_by_public_key_comparison(world: World) -> None:
    _, pinned_public = _agent()
    binding = SealBinding(WALLET, pinned_public, world.owner_public)
    # The attacker seals ITS OWN seed under ITS OWN data key, with the pinned binding (all public information).
    attacker_key, attacker_data_key = Ed25519PrivateKey.generate(), b"\x42" * 32
    forged_blob = KmsSealer(FixedDataKey(attacker_data_key), key_id=world.seal_key).seal(
        raw_seed(attacker_key), binding
    )
    forged_blob_fields = cbor2.loads(forged_blob)
    assert forged_blob_fields["data_key"] == b"attacker-chosen"
    sealer = world.sealer(client=ForgingParent(world.kms, attacker_data_key))
    assert sealer.unseal(forged_blob, binding) == raw_seed(attacker_key)  # the AEAD alone is fooled...
    with pytest.raises(KeyMismatchError, match="does not match the pinned public key"):
        unseal_agent_key(sealer, forged_blob, binding)  # ...the public-key comparison is not


def test_forged_kms_answer_with_plaintext_refused(world: World) -> None:
    agent, agent_public = _agent()
    binding = SealBinding(WALLET, agent_public, world.owner_public)
    blob = seal_agent_key(world.sealer(), agent, binding)
    sealer = world.sealer(client=ForgingParent(world.kms, b"\x42" * 32, with_plaintext=True))
    with pytest.raises(KmsError, match="Plaintext despite Recipient"):
        unseal_agent_key(sealer, blob, binding)


def test_generate_random_with_recipient(world: World) -> None:
    random = world.enclave().generate_random(64)
    assert len(random) == 64 and random != bytes(64)


def test_owner_key_is_real_pure_ed25519(world: World) -> None:
    message = b"owner approves policy 7"
    signature = world.kms.sign(
        KeyId=world.owner_key, Message=message, MessageType="RAW", SigningAlgorithm="ED25519_SHA_512"
    )["Signature"]
    public = load_der_public_key(world.kms.get_public_key(KeyId=world.owner_key)["PublicKey"])
    public.verify(signature, message)  # type: ignore[union-attr, call-arg]
    with pytest.raises(Exception, match="AccessDenied"):
        world.kms.sign(KeyId=world.owner_key, Message=message, MessageType="DIGEST", SigningAlgorithm="ED25519_SHA_512")


# --- LocalSealer ------------------------------------------------------------------------------------------


def test_local_sealer_round_trip_and_wrong_secret() -> None:
    agent, agent_public = _agent()
    binding = SealBinding(WALLET, agent_public, b"\x07" * 32)
    blob = seal_agent_key(LocalSealer(b"operator secret, 32 bytes long!!"), agent, binding)
    recovered = unseal_agent_key(LocalSealer(b"operator secret, 32 bytes long!!"), blob, binding)
    assert raw_seed(recovered) == raw_seed(agent)
    with pytest.raises(SealingError, match="does not open"):
        unseal_agent_key(LocalSealer(b"operator secret, 32 bytes long!?"), blob, binding)


def test_local_sealer_refuses_tampering_and_weak_parameters() -> None:
    agent, agent_public = _agent()
    binding = SealBinding(WALLET, agent_public, b"\x07" * 32)
    sealer = LocalSealer(b"operator secret, 32 bytes long!!")
    fields = cbor2.loads(seal_agent_key(sealer, agent, binding))
    flipped = dict(fields, ciphertext=bytes([fields["ciphertext"][0] ^ 1]) + fields["ciphertext"][1:])
    with pytest.raises(SealingError, match="does not open"):
        sealer.unseal(cbor2.dumps(flipped), binding)
    with pytest.raises(SealingError, match="KDF parameters"):
        sealer.unseal(cbor2.dumps(dict(fields, m=8)), binding)
    with pytest.raises(SealingError, match="unknown format"):
        sealer.unseal(cbor2.dumps(dict(fields, version=2)), binding)
    with pytest.raises(SealingError, match="unknown format"):
        sealer.unseal(cbor2.dumps(dict(fields, scheme="kms-aes256gcm")), binding)
    with pytest.raises(SealingError, match="malformed"):
        sealer.unseal(cbor2.dumps(dict(fields, extra=1)), binding)
    with pytest.raises(SealingError, match="malformed"):
        sealer.unseal(b"\xff", binding)
    with pytest.raises(SealingError, match="too short"):
        LocalSealer(b"short")


def test_seal_refuses_key_that_does_not_match_binding() -> None:
    agent, _ = _agent()
    _, other_public = _agent()
    with pytest.raises(KeyMismatchError, match="does not match the binding"):
        seal_agent_key(
            LocalSealer(b"operator secret, 32 bytes long!!"), agent, SealBinding(WALLET, other_public, b"\x07" * 32)
        )


# --- no key material in anything the flows emit ----------------------------------------------------------

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _base58(data: bytes) -> str:
    number, out = int.from_bytes(data, "big"), ""
    while number:
        number, digit = divmod(number, 58)
        out = _B58[digit] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def _encodings(secret: bytes) -> list[str]:
    return [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode().rstrip("="),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
        _base58(secret),
        _base58(
            secret
            + Ed25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        ),
        repr(secret)[2:-1],
    ]


def test_flows_never_emit_the_seed(
    world: World, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    agent, agent_public = _agent()
    seed = raw_seed(agent)
    binding = SealBinding(WALLET, agent_public, world.owner_public)
    emitted: list[str] = []
    blobs: list[bytes] = []
    blobs.append(seal_agent_key(world.sealer(), agent, binding))
    unseal_agent_key(world.sealer(), blobs[0], binding)
    local = LocalSealer(b"operator secret, 32 bytes long!!")
    blobs.append(seal_agent_key(local, agent, binding))
    unseal_agent_key(local, blobs[1], binding)
    failures: list[BaseException] = []
    attempts: tuple[tuple[Callable[[], object], type[Exception], str], ...] = (
        (
            lambda: unseal_agent_key(world.sealer({**GOOD_PCRS, 0: b"\xee" * 48}), blobs[0], binding),
            KmsAccessDeniedError,
            "KMS decrypt failed: access denied",
        ),
        (
            lambda: unseal_agent_key(LocalSealer(b"another operator secret........."), blobs[1], binding),
            SealingError,
            r"^sealed blob does not open$",
        ),
        (
            lambda: unseal_agent_key(local, blobs[1], SealBinding(WALLET, agent_public, b"\x01" * 32)),
            SealingError,
            r"^sealed blob does not open$",
        ),
    )
    for attempt, error, refusal in attempts:
        with pytest.raises(error, match=refusal) as caught:
            attempt()
        failures.append(caught.value)
    for failure in failures:
        chain: BaseException | None = failure
        while chain is not None:
            emitted += [str(chain), repr(chain)]
            chain = chain.__cause__
    captured = capsys.readouterr()
    emitted += [captured.out, captured.err, caplog.text]
    emitted += [repr(binding), repr(local), repr(DataKey(plaintext=seed, ciphertext_blob=b"c"))]
    emitted += [json.dumps(world.kms.calls, default=repr)]
    text = "\n".join(emitted)
    for encoded in _encodings(seed):
        assert encoded not in text
    for blob in blobs:
        assert seed not in blob
        for encoded in _encodings(seed):
            assert encoded.encode() not in blob
    assert caplog.records  # the flows did log (moto/botocore); the scan looked at real output
