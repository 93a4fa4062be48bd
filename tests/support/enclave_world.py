"""An in-process enclave for tests: the real server, handler, signer and sealing, with test doubles only at the
hardware and cloud seams (the fake ``/dev/nsm`` ioctl, the attesting test KMS on moto).

A "boot" builds a fresh :class:`Enclave` (new session key, empty registry) as a process restart would; the KMS,
its seal key and the PKI survive boots, so sealed blobs from one boot can be loaded in the next.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from moto import mock_aws

from enclave_app.client import CredentialsSource, EnclaveClient
from enclave_app.kms import KmsApi
from enclave_app.kms_sealers import KmsSealers
from enclave_app.nsm import DeviceNsm
from enclave_app.protocol import AwsCredentials
from enclave_app.sealing import Sealers
from enclave_app.server import EnclaveServer, Handler, SerializedNsm
from enclave_app.state import Enclave
from enclave_app.transport import TcpAddress
from policies.signing import sign_document
from tests.fakes.attesting_kms import AttestingTestKms, cdk_seal_key_policy
from tests.fakes.fake_nsm_device import FakeNsmDevice
from tests.support.aws_env import use_test_credentials
from tests.support.nitro_test_pki import NitroTestPki
from tests.support.policies import example_policy

NOW = datetime(2032, 2, 3, 4, 5, 6, tzinfo=UTC)
GOOD_PCRS = {i: bytes([0x10 + i]) * 48 for i in range(16)}


def world_in_moto(monkeypatch: Any) -> Iterator[EnclaveWorld]:
    """The body of a ``world`` fixture: test AWS credentials in the environment, moto started, a fresh world."""
    use_test_credentials(monkeypatch)
    with mock_aws():
        yield EnclaveWorld.create()


@functools.cache
def _cdk_policy() -> tuple[dict[str, Any], str]:
    return cdk_seal_key_policy(pcr0=GOOD_PCRS[0], pcr8=GOOD_PCRS[8])


@dataclass
class ManualClock:
    """The enclave's injectable clock; tests move it."""

    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Boot:
    """One enclave process: its NSM, registry and handler."""

    enclave: Enclave
    handler: Handler
    device: FakeNsmDevice
    aws_credentials: CredentialsSource | None = None
    """What the parent lends with wallet requests (`serving` gives it to the client): the host role's credentials."""


@dataclass
class EnclaveWorld:
    pki: NitroTestPki
    kms: AttestingTestKms
    seal_key: str
    host_credentials: AwsCredentials
    """Temporary credentials of the host role, issued by the test KMS: what the parent lends the enclave."""
    clock: ManualClock = field(default_factory=ManualClock)
    owner: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @classmethod
    def create(cls) -> EnclaveWorld:
        """A world whose seal key carries the policy CDK synthesizes for ``GOOD_PCRS`` (PCR0 and PCR8)."""
        seal_key_policy, host_role = _cdk_policy()
        pki = NitroTestPki.create(not_before=NOW - timedelta(hours=1), not_after=NOW + timedelta(hours=3))
        kms = AttestingTestKms(root_certificate_pem=pki.root_pem, clock=lambda: NOW, caller_arn=host_role)
        seal_key = kms.create_key(Policy=json.dumps(seal_key_policy))["KeyMetadata"]["Arn"]
        return cls(pki=pki, kms=kms, seal_key=seal_key, host_credentials=kms.issue_credentials(host_role))

    @property
    def owner_public(self) -> bytes:
        return self.owner.public_key().public_bytes_raw()

    def boot(
        self,
        *,
        pcrs: Mapping[int, bytes] = GOOD_PCRS,
        kms: KmsApi | None = None,
        sealers: Sealers | None = None,
        key_id: str | None = None,
        require_multisig: bool = False,
    ) -> Boot:
        """A fresh enclave with the production KMS sealers: a KMS client per wallet request, made from the
        credentials the request carried (the test KMS checks them); ``kms`` replaces that client whatever the
        credentials (a failing or forging KMS); ``key_id`` seals with another key than the world's seal key.
        ``require_multisig``: ``WAIAAS_ENCLAVE_REQUIRE_MULTISIG`` (true in the image), false by default here: the
        example policy the tests install declares no multisig."""
        device = FakeNsmDevice(pki=self.pki, now=NOW, pcrs=dict(pcrs))
        nsm = SerializedNsm(DeviceNsm(-1, ioctl=device.ioctl))
        if sealers is None:
            clients = self.kms.client_for if kms is None else (lambda credentials: kms)
            sealers = KmsSealers(clients, nsm, key_id=key_id or self.seal_key)
        enclave = Enclave(nsm=nsm, clock=self.clock, require_multisig=require_multisig)
        return Boot(
            enclave=enclave, handler=Handler(enclave, sealers), device=device, aws_credentials=self.lend_credentials
        )

    def lend_credentials(self) -> AwsCredentials:
        return self.host_credentials

    # -- owner documents -------------------------------------------------------------------------------------

    def signed(self, purpose: str, document: dict[str, Any], key: Ed25519PrivateKey | None = None) -> bytes:
        return json.dumps(sign_document(purpose, document, key or self.owner)).encode()

    def policy(self, wallet_id: str, *, sequence: int = 1, **rule_changes: Any) -> bytes:
        document = example_policy()
        document["wallet_id"] = wallet_id
        document["sequence"] = sequence
        document["rules"].update(rule_changes)
        return self.signed("policy", document)

    def order(self, purpose: str, wallet_id: str, sequence: int, *, lifetime: int = 600) -> bytes:
        expires = int(self.clock.now.timestamp()) + lifetime
        return self.signed(purpose, {"wallet_id": wallet_id, "sequence": sequence, "expires_at": expires})

    def approval(self, wallet_id: str, message_hash: bytes, *, lifetime: int = 600) -> bytes:
        expires = int(self.clock.now.timestamp()) + lifetime
        document = {"wallet_id": wallet_id, "message_hash": message_hash.hex(), "expires_at": expires}
        return self.signed("approval", document)


@asynccontextmanager
async def serving(boot: Boot, **limits: Any) -> AsyncIterator[tuple[EnclaveClient, EnclaveServer]]:
    """Serve ``boot`` on an ephemeral loopback port; yield a client for it and the server."""
    server = EnclaveServer(boot.handler, **limits)
    listener = await server.start(TcpAddress("127.0.0.1", 0))
    port = listener.sockets[0].getsockname()[1]
    try:
        yield EnclaveClient(TcpAddress("127.0.0.1", port), timeout=10.0, aws_credentials=boot.aws_credentials), server
    finally:
        listener.close()
        await listener.wait_closed()
