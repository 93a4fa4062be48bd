"""The proxy lends the enclave this host's temporary AWS credentials (``WAIAAS_ENCLAVE_KMS_CREDENTIALS=host``).

Unit checks of `parent_proxy.host_credentials` (boto3's default chain; only temporary credentials; errors that
name no credential), the setting, and the whole cloud path through the HTTP API: the proxy built from its
environment, the real enclave server with the production KMS sealers, and the test KMS that evaluates each call as
the role whose credentials signed it. Before this, no request carried credentials and a cloud enclave could create
or load no wallet. Last, the cloud side of `parent_proxy.signer_secret`: an enclave that cannot open the stored
wallets (an image KMS refuses, another seal key) makes no wallet, and one damaged blob does not stop creation.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from solders.pubkey import Pubkey

from enclave_app.errors import CredentialsUnavailableError
from enclave_app.protocol import AwsCredentials
from enclave_app.server import EnclaveServer
from enclave_app.state import Enclave
from enclave_app.transport import UnixAddress
from parent_proxy.__main__ import build_app, build_services
from parent_proxy.errors import NotFound
from parent_proxy.host_credentials import HostAwsCredentials
from parent_proxy.owner_auth import OwnerRequest, owner_request_headers
from parent_proxy.settings import SettingsError, load_settings
from policies.signing import sign_document
from tests.fakes.attesting_kms import cdk_seal_key_policy
from tests.proxy.api_harness import HARNESS_ORIGIN, LoopThread
from tests.support.enclave_world import GOOD_PCRS, EnclaveWorld, world_in_moto
from tests.support.policies import example_policy

WALLET = "wallet-cloud"
ENV_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE")


def _only_env_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **values: str) -> None:
    """boto3's default chain with nothing to find but ``values`` in the environment (no files, no metadata)."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def _lend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, credentials: AwsCredentials) -> None:
    _only_env_credentials(
        monkeypatch, tmp_path, AWS_ACCESS_KEY_ID=credentials.access_key_id,
        AWS_SECRET_ACCESS_KEY=credentials.secret_access_key, AWS_SESSION_TOKEN=credentials.session_token,
    )  # fmt: skip


# -- the credentials source ---------------------------------------------------------------------------------------


def test_the_hosts_temporary_credentials_are_lent_as_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lent = AwsCredentials("ASIAHOSTROLE00000001", secrets.token_urlsafe(30), secrets.token_urlsafe(500))
    _lend(monkeypatch, tmp_path, lent)
    source = HostAwsCredentials()
    assert source() == lent
    assert lent.secret_access_key not in repr(source) and lent.session_token not in repr(source())


def test_one_session_serves_every_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import boto3

    _lend(monkeypatch, tmp_path, AwsCredentials("ASIAHOSTROLE00000001", "s" * 40, "t" * 400))
    made: list[int] = []

    def factory() -> boto3.session.Session:
        made.append(1)
        return boto3.session.Session()

    source = HostAwsCredentials(factory)
    assert source() == source() == source()
    assert made == [1]


def test_long_term_access_keys_are_not_lent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _only_env_credentials(
        monkeypatch, tmp_path, AWS_ACCESS_KEY_ID="AKIALONGTERMKEY00001", AWS_SECRET_ACCESS_KEY="long-term-secret"
    )
    with pytest.raises(CredentialsUnavailableError, match="long-term") as refused:
        HostAwsCredentials()()
    assert "long-term-secret" not in str(refused.value)


def test_a_host_without_credentials_is_refused_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _only_env_credentials(monkeypatch, tmp_path)
    with pytest.raises(CredentialsUnavailableError, match="no AWS credentials found on this host"):
        HostAwsCredentials()()


def test_a_failing_provider_is_named_by_type_only() -> None:
    class Broken:
        def get_credentials(self) -> Any:
            raise ValueError("aws_secret_access_key = the-secret-from-a-malformed-file")

    with pytest.raises(CredentialsUnavailableError) as refused:
        HostAwsCredentials(Broken)()  # type: ignore[arg-type]
    assert "ValueError" in str(refused.value) and "the-secret" not in str(refused.value)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__


# -- the setting ----------------------------------------------------------------------------------------------------


def _env(tmp_path: Path, socket: Path, owner: Ed25519PrivateKey, **extra: str) -> dict[str, str]:
    """The proxy's environment. The embedded chain has no Squads program, and the example policy the tests install
    declares no multisig: so ``WAIAAS_REQUIRE_MULTISIG=false``, as on the self-host local chain."""
    owner_key = Pubkey.from_bytes(owner.public_key().public_bytes_raw())
    return {
        "WAIAAS_STATE": f"sqlite:{tmp_path / 'state.db'}", "WAIAAS_ENCLAVE": f"unix:{socket}",
        "WAIAAS_OWNER_KEYS": str(owner_key), "WAIAAS_CHAIN": "litesvm", "WAIAAS_REQUIRE_MULTISIG": "false",
        "WAIAAS_PUBLIC_ORIGINS": HARNESS_ORIGIN, **extra,
    }  # fmt: skip


@pytest.mark.parametrize(("text", "value"), [(None, "none"), ("none", "none"), ("host", "host"), (" HOST ", "host")])
def test_the_setting_defaults_to_none(tmp_path: Path, text: str | None, value: str) -> None:
    extra = {} if text is None else {"WAIAAS_ENCLAVE_KMS_CREDENTIALS": text}
    settings = load_settings(_env(tmp_path, tmp_path / "s", Ed25519PrivateKey.generate(), **extra))
    assert settings.enclave_kms_credentials == value
    lent = build_services(settings).relay._client._aws_credentials
    assert isinstance(lent, HostAwsCredentials) if value == "host" else lent is None


@pytest.mark.parametrize("text", ["", "instance-role", "true", "hosts"])
def test_other_values_stop_start_up(tmp_path: Path, text: str) -> None:
    env = _env(tmp_path, tmp_path / "s", Ed25519PrivateKey.generate(), WAIAAS_ENCLAVE_KMS_CREDENTIALS=text)
    with pytest.raises(SettingsError, match="WAIAAS_ENCLAVE_KMS_CREDENTIALS must be none or host"):
        load_settings(env)


# -- the cloud path through the API ---------------------------------------------------------------------------------


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[EnclaveWorld]:
    yield from world_in_moto(monkeypatch)


class Cloud:
    """The proxy app built from its environment, in front of the enclave server with the KMS sealers."""

    def __init__(self, world: EnclaveWorld, tmp_path: Path, **extra: str) -> None:
        self.world, self.socket, self.loop = world, tmp_path / "enclave.sock", LoopThread()
        self.owner = Ed25519PrivateKey.generate()
        self.server: Any = None
        self.boot()
        _, app, self.services = build_app(_env(tmp_path, self.socket, self.owner, **extra))
        self.client = TestClient(app, raise_server_exceptions=False)
        self.client.__enter__()  # one event loop for every request (the relay keeps its connections in it)

    def boot(self, **options: Any) -> Enclave:
        """Start (or restart) the enclave (`EnclaveWorld.boot` with ``options``): a fresh boot knows no wallet."""
        if self.server is not None:
            self.server.close()
            self.loop.run(self.server.wait_closed())
            self.loop.run(self.services.relay.close())
            self.socket.unlink(missing_ok=True)
        booted = self.world.boot(**options)
        self.server = self.loop.run(EnclaveServer(booted.handler).start(UnixAddress(str(self.socket))))
        return booted.enclave

    def owner_call(self, method: str, path: str, body: Any = None) -> Any:
        content = b"" if body is None else json.dumps(body).encode()
        public = Pubkey.from_bytes(self.owner.public_key().public_bytes_raw())
        request = OwnerRequest(
            method, path, content, int(time.time()), secrets.token_urlsafe(24), audience=HARNESS_ORIGIN
        )
        headers = {**owner_request_headers(request, public, self.owner.sign), "Content-Type": "application/json"}
        return self.client.request(method, path, content=content, headers=headers)

    def create_wallet(self, wallet_id: str = WALLET) -> Any:
        public = Pubkey.from_bytes(self.owner.public_key().public_bytes_raw())
        return self.owner_call("POST", "/v1/wallets", {"wallet_id": wallet_id, "owner_public_key": str(public)})

    def install_policy(self) -> Any:
        document = example_policy()
        document["wallet_id"] = WALLET
        envelope = sign_document("policy", document, self.owner)
        return self.owner_call("PUT", f"/v1/wallets/{WALLET}/policy", {"envelope": envelope})

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.server.close()
        self.loop.stop()


@pytest.fixture
def cloud_factory(world: EnclaveWorld, tmp_path: Path) -> Iterator[Any]:
    made: list[Cloud] = []

    def make(**extra: str) -> Cloud:
        made.append(Cloud(world, tmp_path, **extra))
        return made[-1]

    yield make
    for cloud in made:
        cloud.close()


def test_with_host_credentials_the_cloud_enclave_creates_and_reloads_wallets(
    world: EnclaveWorld, cloud_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    host_role = world.kms.caller_arn
    world.kms.caller_arn = "arn:aws:iam::111122223333:role/not-the-host"  # only lent credentials name the host
    _lend(monkeypatch, tmp_path, world.host_credentials)
    cloud = cloud_factory(WAIAAS_ENCLAVE_KMS_CREDENTIALS="host")
    with caplog.at_level(logging.DEBUG):
        created = cloud.create_wallet()
        assert created.status_code == 201, created.text
        cloud.boot()  # the enclave restarts: installing the policy loads the wallet from its sealed blob first
        installed = cloud.install_policy()
        assert installed.status_code == 200, installed.text
    assert [(name, info["caller"]) for name, info in world.kms.calls] == [
        ("GenerateDataKey", host_role), ("Decrypt", host_role)
    ]  # fmt: skip
    seen = caplog.text + created.text + installed.text
    for secret in (world.host_credentials.secret_access_key, world.host_credentials.session_token):
        assert secret not in seen


def test_without_the_setting_the_cloud_enclave_refuses_and_the_log_says_why(
    world: EnclaveWorld, cloud_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    _lend(monkeypatch, tmp_path, world.host_credentials)
    cloud = cloud_factory()  # WAIAAS_ENCLAVE_KMS_CREDENTIALS unset: none
    with caplog.at_level(logging.WARNING, logger="parent_proxy"):
        refused = cloud.create_wallet()
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "enclave_unavailable"
    assert "kms_unavailable" in caplog.text and "WAIAAS_ENCLAVE_KMS_CREDENTIALS=host" in caplog.text
    assert world.kms.calls == []
    with pytest.raises(NotFound, match=f"wallet {WALLET} not found"):
        cloud.services.store.get_wallet(WALLET)


def test_a_host_with_long_term_keys_lends_nothing_and_creates_nothing(
    world: EnclaveWorld, cloud_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    _only_env_credentials(
        monkeypatch, tmp_path, AWS_ACCESS_KEY_ID="AKIALONGTERMKEY00001", AWS_SECRET_ACCESS_KEY="long-term-secret"
    )
    cloud = cloud_factory(WAIAAS_ENCLAVE_KMS_CREDENTIALS="host")
    with caplog.at_level(logging.WARNING, logger="parent_proxy"):
        refused = cloud.create_wallet()
    assert refused.status_code == 503 and "AWS credentials" in refused.json()["error"]["message"]
    assert "long-term" in caplog.text and "long-term-secret" not in caplog.text + refused.text
    assert world.kms.calls == [] and world.boot().enclave.wallet_count == 0
    with pytest.raises(NotFound, match=f"wallet {WALLET} not found"):
        cloud.services.store.get_wallet(WALLET)


# -- a cloud enclave that cannot open the stored wallets makes none (parent_proxy.signer_secret) ---------------------


def test_an_image_whose_pcrs_kms_refuses_provisions_nothing(
    world: EnclaveWorld, cloud_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _lend(monkeypatch, tmp_path, world.host_credentials)
    cloud = cloud_factory(WAIAAS_ENCLAVE_KMS_CREDENTIALS="host")
    assert cloud.create_wallet().status_code == 201
    wrong = cloud.boot(pcrs={**GOOD_PCRS, 0: b"\x99" * 48})  # another image: the seal key's policy names PCR0
    world.kms.calls.clear()

    refused = cloud.create_wallet("wallet-cloud-2")

    assert refused.status_code == 503 and refused.json()["error"]["code"] == "attestation_refused", refused.text
    assert [name for name, _ in world.kms.calls] == ["Decrypt"]  # the check's load; no key was asked for
    assert wrong.wallet_count == 0
    with pytest.raises(NotFound, match="wallet wallet-cloud-2 not found"):
        cloud.services.store.get_wallet("wallet-cloud-2")
    assert cloud.client.get("/readyz").json()["error"]["code"] == "attestation_refused"


def test_an_enclave_sealing_with_another_kms_key_makes_no_wallet(
    world: EnclaveWorld, cloud_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The cloud's "other unseal secret": a deployment whose enclave seals with another key (a wrong setting) opens
    no stored wallet (each blob names the key it was sealed with) and would seal new ones under its own key."""
    policy, _ = cdk_seal_key_policy(pcr0=GOOD_PCRS[0], pcr8=GOOD_PCRS[8])  # the world's seal key's policy
    other_key = world.kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["Arn"]
    _lend(monkeypatch, tmp_path, world.host_credentials)
    cloud = cloud_factory(WAIAAS_ENCLAVE_KMS_CREDENTIALS="host")
    assert cloud.create_wallet().status_code == 201
    wrong = cloud.boot(key_id=other_key)

    refused = cloud.create_wallet("wallet-cloud-2")

    assert refused.status_code == 503 and refused.json()["error"]["code"] == "signer_secret_mismatch", refused.text
    assert wrong.wallet_count == 0
    with pytest.raises(NotFound, match="wallet wallet-cloud-2 not found"):
        cloud.services.store.get_wallet("wallet-cloud-2")
    cloud.boot()  # the right key again
    assert cloud.create_wallet("wallet-cloud-2").status_code == 201


def test_a_wallet_whose_data_key_kms_cannot_decrypt_is_passed_over(
    world: EnclaveWorld, cloud_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A damaged blob in the cloud may fail in KMS (``kms_unavailable``) rather than in the AEAD: the check tries the
    next wallet, and one that opens lets the creation go ahead."""
    _lend(monkeypatch, tmp_path, world.host_credentials)
    cloud = cloud_factory(WAIAAS_ENCLAVE_KMS_CREDENTIALS="host")
    for wallet_id in (WALLET, "wallet-cloud-2"):
        assert cloud.create_wallet(wallet_id).status_code == 201
    store = cloud.services.store
    blob = cbor2.loads(store.get_wallet("wallet-cloud-2").sealed_key)
    blob["data_key"] = blob["data_key"][:-1] + bytes([blob["data_key"][-1] ^ 1])
    store._conn().execute(
        "UPDATE wallets SET sealed_key = ? WHERE wallet_id = ?", (cbor2.dumps(blob), "wallet-cloud-2")
    )
    enclave = cloud.boot()
    world.kms.calls.clear()

    created = cloud.create_wallet("wallet-cloud-3")

    assert created.status_code == 201, created.text
    assert [name for name, _ in world.kms.calls] == ["Decrypt", "Decrypt", "GenerateDataKey"]
    enclave.wallet(WALLET)  # the older wallet opened: the enclave holds it
