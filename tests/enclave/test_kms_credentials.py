"""The AWS credentials the parent lends the enclave for its KMS calls (DESIGN section 7).

The enclave has none of its own: the KMS sealer makes a KMS client per wallet request from the credentials that
request carried. Checked here: the wire field (strict, optional, hidden from repr), the enclave using exactly the
lent credentials (the test KMS evaluates calls as the role they were issued for), every way they can be missing or
wrong (refused, nothing registered), the production boto3 client maker (signs with the given credentials, ignores
the environment's, short time limits), and the client's side (a failing credentials source sends nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Any

import pytest
from botocore.awsrequest import AWSPreparedRequest
from botocore.exceptions import ClientError
from moto import mock_aws

from enclave_app.client import EnclaveClient
from enclave_app.errors import (
    CredentialsUnavailableError,
    EnclaveRequestError,
    KmsAccessDeniedError,
    KmsCredentialsMissingError,
    KmsCredentialsRejectedError,
    KmsError,
    ProtocolError,
)
from enclave_app.kms import CREDENTIALS_REJECTED, AttestedKms, KmsApi
from enclave_app.kms_sealers import KmsSealers, boto3_kms_clients
from enclave_app.no_attestation import NoAttestationNsm
from enclave_app.protocol import (
    AwsCredentials,
    LoadWalletRequest,
    ProvisionWalletRequest,
    decode_request,
)
from enclave_app.sealing import LocalSealer
from enclave_app.server import CREDENTIALS_REJECTED_MESSAGE
from enclave_app.transport import TcpAddress
from tests.support.enclave_world import EnclaveWorld, serving

WALLET = "wallet-credentials"


def _secrets(credentials: AwsCredentials) -> list[str]:
    return [credentials.secret_access_key, credentials.session_token]


def _credentials(**changes: Any) -> AwsCredentials:
    fields = {"access_key_id": "ASIAEXAMPLE000000001", "secret_access_key": "s" * 40, "session_token": "t" * 1200}
    return AwsCredentials(**{**fields, **changes})


# -- the wire field ------------------------------------------------------------------------------------------------


def test_credentials_travel_with_both_wallet_requests_and_stay_out_of_repr() -> None:
    credentials = _credentials()
    requests = [
        ProvisionWalletRequest(wallet_id=WALLET, owner_public_key=bytes(32), aws_credentials=credentials),
        LoadWalletRequest(
            wallet_id=WALLET, owner_public_key=bytes(32), agent_public_key=bytes(32), sealed_blob=b"x",
            aws_credentials=credentials,
        ),
    ]  # fmt: skip
    for request in requests:
        assert decode_request(request.to_wire()) == request
        for secret in _secrets(credentials):
            assert secret not in repr(request) and secret not in str(request)
        assert secret not in repr(credentials)


def test_without_credentials_the_request_has_the_older_shape_both_ways() -> None:
    """A request without credentials leaves the key out, so an enclave built before the field still reads it (the
    parent can be upgraded first); a request of that shape decodes with None."""
    request = ProvisionWalletRequest(wallet_id=WALLET, owner_public_key=bytes(32))
    wire = request.to_wire()
    assert set(wire) == {"v", "type", "wallet_id", "owner_public_key"}
    assert decode_request(wire) == request
    with_null = {**wire, "aws_credentials": None}  # the full shape with null decodes too
    assert decode_request(with_null) == request


BAD_TEXT = "text field of wrong type or size"
BAD_SHAPE = "AwsCredentials has missing or extra fields"


@pytest.mark.parametrize(
    ("bad", "refusal"),
    [
        ({"access_key_id": "ASIA"}, BAD_TEXT),  # shorter than any IAM access key id
        ({"access_key_id": "A" * 129}, BAD_TEXT),
        ({"secret_access_key": ""}, BAD_TEXT),
        ({"secret_access_key": "s" * 129}, BAD_TEXT),
        ({"session_token": ""}, BAD_TEXT),
        ({"session_token": "t" * 8193}, BAD_TEXT),
        ({"session_token": b"bytes"}, BAD_TEXT),
        ({"extra": "field"}, BAD_SHAPE),
        ({"session_token": None}, BAD_SHAPE),  # left out: the token is required
    ],
)
def test_malformed_credentials_are_refused_on_decoding_and_encoding(bad: dict[str, Any], refusal: str) -> None:
    good = ProvisionWalletRequest(wallet_id=WALLET, owner_public_key=bytes(32), aws_credentials=_credentials())
    wire = good.to_wire()
    credentials = {**wire["aws_credentials"], **bad}
    credentials = {k: v for k, v in credentials.items() if not (k == "session_token" and v is None)}
    wire["aws_credentials"] = credentials
    with pytest.raises(ProtocolError, match=refusal):
        decode_request(wire)
    if "extra" not in bad and "session_token" in credentials:
        with pytest.raises(ProtocolError, match=refusal):
            ProvisionWalletRequest(
                wallet_id=WALLET, owner_public_key=bytes(32), aws_credentials=AwsCredentials(**credentials)
            ).to_wire()


# -- the enclave uses exactly the lent credentials ----------------------------------------------------------------


def test_provisioning_and_loading_call_kms_as_the_role_the_lent_credentials_belong_to(world: EnclaveWorld) -> None:
    host_role = world.kms.caller_arn
    world.kms.caller_arn = "arn:aws:iam::111122223333:role/not-the-host"  # only the credentials can name the host

    async def run() -> None:
        async with serving(world.boot()) as (client, _):
            created = await client.provision_wallet(WALLET, world.owner_public)
        assert created.sealed_blob is not None
        boot = world.boot()  # a restarted enclave loads it again
        async with serving(boot) as (client, _):
            await client.load_wallet(
                WALLET, owner_public_key=world.owner_public, agent_public_key=created.agent_public_key,
                sealed_blob=created.sealed_blob,
            )  # fmt: skip
        assert boot.enclave.wallet_count == 1

    asyncio.run(run())
    assert [(name, info["caller"]) for name, info in world.kms.calls] == [
        ("GenerateDataKey", host_role), ("Decrypt", host_role)
    ]  # fmt: skip


def _refused(world: EnclaveWorld, client_credentials: Any, *, load: bool) -> tuple[EnclaveRequestError, int]:
    async def run() -> tuple[EnclaveRequestError, int]:
        blob, agent = b"", b""
        if load:
            async with serving(world.boot()) as (client, _):
                created = await client.provision_wallet(WALLET, world.owner_public)
            assert created.sealed_blob is not None
            blob, agent = created.sealed_blob, created.agent_public_key
        boot = world.boot()
        boot.aws_credentials = client_credentials
        async with serving(boot) as (client, _):
            with pytest.raises(EnclaveRequestError) as refused:
                if load:
                    await client.load_wallet(
                        WALLET, owner_public_key=world.owner_public, agent_public_key=agent, sealed_blob=blob
                    )
                else:
                    await client.provision_wallet(WALLET, world.owner_public)
        return refused.value, boot.enclave.wallet_count

    return asyncio.run(run())


@pytest.mark.parametrize("load", [False, True], ids=["provision", "load"])
def test_a_wallet_request_without_credentials_is_refused_before_any_kms_call(world: EnclaveWorld, load: bool) -> None:
    error, wallets = _refused(world, None, load=load)
    assert error.code == "kms_unavailable" and "WAIAAS_ENCLAVE_KMS_CREDENTIALS=host" in error.detail
    assert wallets == 0
    assert [name for name, _ in world.kms.calls] == (["GenerateDataKey"] if load else [])


@pytest.mark.parametrize("load", [False, True], ids=["provision", "load"])
def test_altered_or_unknown_credentials_are_refused_by_kms(world: EnclaveWorld, load: bool) -> None:
    lent = world.host_credentials
    altered = AwsCredentials(lent.access_key_id, lent.secret_access_key[:-1] + "x", lent.session_token)
    error, wallets = _refused(world, lambda: altered, load=load)
    assert (error.code, error.detail, wallets) == ("kms_unavailable", CREDENTIALS_REJECTED_MESSAGE, 0)
    unknown = _credentials()
    error, wallets = _refused(world, lambda: unknown, load=load)
    assert (error.code, error.detail, wallets) == ("kms_unavailable", CREDENTIALS_REJECTED_MESSAGE, 0)


@pytest.mark.parametrize("code", sorted(CREDENTIALS_REJECTED))
def test_every_refusal_of_the_credentials_is_told_apart_from_other_kms_failures(code: str) -> None:
    def failing(error_code: str) -> AttestedKms:
        class Refusing:
            def generate_random(self, **_: Any) -> Any:
                raise ClientError({"Error": {"Code": error_code, "Message": "refused"}}, "GenerateRandom")

        return AttestedKms(Refusing(), _DocumentOnlyNsm())  # type: ignore[arg-type]

    with pytest.raises(KmsCredentialsRejectedError, match=code):
        failing(code).generate_random(8)
    with pytest.raises(KmsAccessDeniedError, match="KMS generate_random failed: access denied"):
        failing("AccessDeniedException").generate_random(8)
    for other in ("ThrottlingException", "KMSInternalException", "NotFoundException"):
        with pytest.raises(KmsError) as generic:
            failing(other).generate_random(8)
        assert type(generic.value) is KmsError


class _DocumentOnlyNsm:
    """Enough of an NSM for a call that fails at KMS: the document is never looked at."""

    def attestation(self, **_: Any) -> bytes:
        return b"document"


@pytest.mark.parametrize("load", [False, True], ids=["provision", "load"])
def test_credentials_of_a_role_the_seal_key_does_not_name_get_access_denied(world: EnclaveWorld, load: bool) -> None:
    other_role = world.kms.issue_credentials("arn:aws:iam::111122223333:role/some-other-role")
    error, wallets = _refused(world, lambda: other_role, load=load)
    assert (error.code, wallets) == ("attestation_refused", 0)


def test_no_credential_reaches_an_answer_or_a_log_line(world: EnclaveWorld, caplog: pytest.LogCaptureFixture) -> None:
    other_role = world.kms.issue_credentials("arn:aws:iam::111122223333:role/some-other-role")
    with caplog.at_level(logging.DEBUG):
        answers = [_refused(world, lambda: other_role, load=False)[0]]
        lent = world.host_credentials
        altered = AwsCredentials(lent.access_key_id, lent.secret_access_key + "x", lent.session_token + "x")
        answers.append(_refused(world, lambda: altered, load=True)[0])
    seen = caplog.text + "".join(f"{a} {a.detail!r}" for a in answers) + json.dumps(world.kms.calls, default=repr)
    for credentials in (other_role, lent, altered):
        for secret in _secrets(credentials):
            assert secret not in seen


def test_the_local_sealer_needs_no_credentials_and_ignores_any(world: EnclaveWorld) -> None:
    sealer = LocalSealer(b"operator secret for the tests!!")
    assert sealer.for_request(None) is sealer and sealer.for_request(_credentials()) is sealer

    async def run() -> None:
        for lent in (None, world.lend_credentials):
            boot = world.boot(sealers=sealer)
            boot.aws_credentials = lent
            async with serving(boot) as (client, _):
                assert (await client.provision_wallet(WALLET, world.owner_public)).sealed_blob is not None

    asyncio.run(run())
    assert world.kms.calls == []


def test_kms_sealers_refuse_a_request_without_credentials_without_making_a_client() -> None:
    made: list[AwsCredentials] = []
    production = boto3_kms_clients("eu-west-1")

    def clients(credentials: AwsCredentials) -> KmsApi:
        made.append(credentials)
        return production(credentials)

    sealers = KmsSealers(clients, NoAttestationNsm(), key_id="k")
    with pytest.raises(KmsCredentialsMissingError, match="the request carries no AWS credentials for KMS"):
        sealers.for_request(None)
    assert made == []
    sealers.for_request(_credentials())
    assert made == [_credentials()]


def test_a_client_that_cannot_be_made_is_a_kms_failure_not_an_enclave_failure(world: EnclaveWorld) -> None:
    def broken(credentials: AwsCredentials) -> Any:
        raise ValueError(f"cannot use {credentials.secret_access_key}")

    async def run() -> None:
        boot = world.boot()
        boot.handler.sealers = KmsSealers(broken, boot.enclave.nsm, key_id=world.seal_key)
        async with serving(boot) as (client, _):
            with pytest.raises(EnclaveRequestError) as refused:
                await client.provision_wallet(WALLET, world.owner_public)
            assert refused.value.code == "kms_unavailable"
            assert world.host_credentials.secret_access_key not in str(refused.value)
            assert (await client.ping()).state == "booting"  # not failed: the next request is served

    asyncio.run(run())


# -- the production client maker --------------------------------------------------------------------------------


def test_boto3_clients_sign_with_the_lent_credentials_and_never_the_environments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENTKEY00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "environment-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "environment-token")
    sent: list[AWSPreparedRequest] = []
    with mock_aws():
        clients = boto3_kms_clients("eu-west-1")
        lent, other = _credentials(), _credentials(access_key_id="ASIAEXAMPLE000000002", session_token="u" * 900)
        for credentials in (lent, other):
            client: Any = clients(credentials)
            client.meta.events.register("before-send.kms", lambda request, **_: sent.append(request))
            assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    assert len(sent) == 2
    for request, credentials in zip(sent, (lent, other), strict=True):
        authorization, token = request.headers["Authorization"], request.headers["X-Amz-Security-Token"]
        assert isinstance(authorization, bytes) and isinstance(token, bytes)  # botocore signs into bytes
        assert f"Credential={credentials.access_key_id}/" in authorization.decode()
        assert token.decode() == credentials.session_token
        assert request.url.startswith("https://kms.eu-west-1.amazonaws.com")


def test_boto3_clients_are_made_for_the_configured_region_whatever_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The endpoint's host is what the image resolves to the in-enclave forwarder (``kms.<region>.amazonaws.com``):
    a client for another region would reach nothing, or another region's KMS. No call is made."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    client: Any = boto3_kms_clients("eu-west-1")(_credentials())
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.endpoint_url == "https://kms.eu-west-1.amazonaws.com"


def test_boto3_clients_have_time_limits_within_the_enclaves_request_limit() -> None:
    with mock_aws():
        client: Any = boto3_kms_clients("eu-west-1")(_credentials())
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (3.0, 8.0)
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}
    # The whole call's bound (two attempts, each cut at the forwarder's connection lifetime): test_kms_time_limit.


# -- the client's side --------------------------------------------------------------------------------------------


def _counting_server() -> tuple[list[int], Any]:
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.close()

    return connections, handle


@pytest.mark.parametrize(
    ("source", "cause"),
    [
        pytest.param(lambda: (_ for _ in ()).throw(RuntimeError("secret-in-message")), "RuntimeError", id="raises"),
        pytest.param(lambda: _credentials(session_token=""), "ProtocolError", id="malformed"),
        pytest.param(lambda: "not credentials", "AttributeError", id="wrong-type"),
    ],
)
def test_a_failing_credentials_source_sends_nothing(source: Any, cause: str) -> None:
    unreadable = re.escape(f"AWS credentials could not be read ({cause})")

    async def run() -> None:
        connections, handle = _counting_server()
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = EnclaveClient(TcpAddress("127.0.0.1", port), timeout=2.0, aws_credentials=source)
        try:
            with pytest.raises(CredentialsUnavailableError, match=unreadable) as failed:
                await client.provision_wallet(WALLET, bytes(32))
            assert "secret-in-message" not in str(failed.value) and failed.value.__cause__ is None
            with pytest.raises(CredentialsUnavailableError, match=unreadable):
                await client.load_wallet(
                    WALLET, owner_public_key=bytes(32), agent_public_key=bytes(32), sealed_blob=b"x"
                )
        finally:
            server.close()
            await server.wait_closed()
        assert connections == []

    asyncio.run(run())


def test_other_requests_never_ask_for_credentials(world: EnclaveWorld) -> None:
    asked: list[int] = []

    def source() -> AwsCredentials:
        asked.append(1)
        return world.host_credentials

    async def run() -> None:
        boot = world.boot()
        boot.aws_credentials = source
        async with serving(boot) as (client, _):
            await client.provision_wallet(WALLET, world.owner_public)
            await client.ping()
            await client.install_policy(WALLET, world.policy(WALLET))
        assert boot.enclave.wallet_count == 1

    asyncio.run(run())
    assert asked == [1]


def test_the_enclave_main_builds_kms_sealers_that_need_credentials() -> None:
    from enclave_app.__main__ import build_sealers
    from enclave_app.dev_nsm import UnsafeDevelopmentNsm
    from enclave_app.settings import Settings
    from enclave_app.transport import UnixAddress

    settings = Settings(
        listen=UnixAddress("/tmp/unused"), nsm="unsafe-development", sealer="kms", kms_key_id="k",
        kms_region="eu-west-1",
    )  # fmt: skip
    sealers = build_sealers(settings, UnsafeDevelopmentNsm(pcrs={0: bytes(48)}))
    assert isinstance(sealers, KmsSealers)
    with pytest.raises(KmsCredentialsMissingError, match="the request carries no AWS credentials for KMS"):
        sealers.for_request(None)


def test_each_wallet_requests_kms_client_is_closed_when_done_even_on_failure(world: EnclaveWorld) -> None:
    """One client per request, so each is closed at once (its TLS connection goes through the forwarder and the
    parent's vsock-proxy) rather than whenever the garbage collector gets to it."""
    other_role = world.kms.issue_credentials("arn:aws:iam::111122223333:role/some-other-role")
    host_role = world.kms.caller_arn

    async def run() -> None:
        async with serving(world.boot()) as (client, _):
            created = await client.provision_wallet(WALLET, world.owner_public)
        assert created.sealed_blob is not None
        for lent in (lambda: other_role, world.lend_credentials):  # refused by KMS, then loaded
            boot = world.boot()
            boot.aws_credentials = lent
            async with serving(boot) as (client, _):
                with contextlib.suppress(EnclaveRequestError):
                    await client.load_wallet(
                        WALLET, owner_public_key=world.owner_public, agent_public_key=created.agent_public_key,
                        sealed_blob=created.sealed_blob,
                    )  # fmt: skip

    asyncio.run(run())
    assert world.kms.closed == [host_role, "arn:aws:iam::111122223333:role/some-other-role", host_role]


def test_an_answer_about_another_key_is_refused(world: EnclaveWorld) -> None:
    """The seal key is named by its full ARN (the settings refuse an alias or a bare id, which KMS would look up in
    the account of whoever lent the credentials); an answer naming another key is refused, on both calls."""
    assert world.seal_key.startswith("arn:aws:kms:")
    other = world.seal_key.rsplit("/", 1)[0] + "/" + "0" * 36

    def other_key(operation: str, response: dict[str, Any]) -> dict[str, Any]:
        return {**response, "KeyId": other}

    world.kms.tamper = other_key
    error, wallets = _refused(world, world.lend_credentials, load=False)
    assert (error.code, wallets) == ("kms_unavailable", 0)

    async def provision() -> tuple[bytes, bytes]:
        async with serving(world.boot()) as (client, _):
            created = await client.provision_wallet(WALLET, world.owner_public)
        assert created.sealed_blob is not None
        return created.sealed_blob, created.agent_public_key

    world.kms.tamper = None
    blob, agent = asyncio.run(provision())
    world.kms.tamper = other_key

    async def load() -> tuple[EnclaveRequestError, int]:
        boot = world.boot()
        async with serving(boot) as (client, _):
            with pytest.raises(EnclaveRequestError) as refused:
                await client.load_wallet(
                    WALLET, owner_public_key=world.owner_public, agent_public_key=agent, sealed_blob=blob
                )
        return refused.value, boot.enclave.wallet_count

    error, wallets = asyncio.run(load())
    assert (error.code, wallets) == ("kms_unavailable", 0)
