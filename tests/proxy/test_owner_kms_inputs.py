"""``waiaas owner --kms-key-id ...``: what is refused before any AWS call (an alias, a bare key id, a malformed ARN,
an MFA code on the command line or missing), KMS answers that name another key, how AWS failures are reported (the
AWS error code, one line, exit 2, nothing sent), and the region taken from the key ARN with the production client
factory (boto3 on moto, no region configured anywhere).

STS and KMS are stand-ins at the client seam (``owner_cli_common.boto3_factory``) except in the region test.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoRegionError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from parent_proxy import owner_cli_common
from parent_proxy.owner_signers import KmsOwnerSigner, OwnerKeyError, RoleChain, assume_role_chain
from policies.cli import main
from selfhost.local_stack import free_port
from tests.support.policies import EXAMPLE_PATH

KEY_ARN = "arn:aws:kms:eu-west-1:111111111111:key/0a1b2c3d-4e5f-6789-abcd-ef0123456789"
OTHER_ARN = "arn:aws:kms:eu-west-1:111111111111:key/99999999-4e5f-6789-abcd-ef0123456789"
ROLES = ["--role-arn", "arn:aws:iam::111111111111:role/waiaas-owner-entry",
         "--role-arn", "arn:aws:iam::111111111111:role/waiaas-owner-signer"]  # fmt: skip
CHAIN = [*ROLES, "--mfa-serial", "arn:aws:iam::111111111111:mfa/alice", "--source-identity", "alice"]


def _client_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} for arn:aws:sts::1:assumed-role/x/y"}}, operation)


class Sts:
    def __init__(self, calls: list[dict[str, Any]], error: Exception | None) -> None:
        self.calls, self.error = calls, error

    def assume_role(self, **params: Any) -> dict[str, Any]:
        self.calls.append(params)
        if self.error is not None:
            raise self.error
        n = len(self.calls)
        return {"Credentials": {"AccessKeyId": f"AK{n}", "SecretAccessKey": f"S{n}", "SessionToken": f"T{n}"}}


class Kms:
    """An Ed25519 key under ``KEY_ARN``; ``answer_as`` is the ``KeyId`` its answers name, ``error`` what it raises."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.answer_as: dict[str, str] = {"GetPublicKey": KEY_ARN, "Sign": KEY_ARN}
        self.errors: dict[str, Exception] = {}
        self.signed: list[bytes] = []

    def get_public_key(self, *, KeyId: str) -> dict[str, Any]:
        if "GetPublicKey" in self.errors:
            raise self.errors["GetPublicKey"]
        der = self.key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return {"KeyId": self.answer_as["GetPublicKey"], "PublicKey": der}

    def sign(self, *, KeyId: str, Message: bytes, MessageType: str, SigningAlgorithm: str) -> dict[str, Any]:
        if "Sign" in self.errors:
            raise self.errors["Sign"]
        self.signed.append(Message)
        named = {"KeyId": self.answer_as["Sign"]} if "Sign" in self.answer_as else {}
        return {**named, "Signature": self.key.sign(Message)}


class Seam:
    """What the CLI reached: the regions of its client factories, each AssumeRole, each client it made."""

    def __init__(self) -> None:
        self.regions: list[str] = []
        self.sts_calls: list[dict[str, Any]] = []
        self.made: list[str] = []
        self.kms = Kms()
        self.sts_error: Exception | None = None
        self.make_error: dict[str, Exception] = {}

    def factory(self, region: str) -> Callable[[str, Any], Any]:
        self.regions.append(region)

        def make(service: str, credentials: Any) -> Any:
            self.made.append(service)
            if service in self.make_error:
                raise self.make_error[service]
            return Sts(self.sts_calls, self.sts_error) if service == "sts" else self.kms

        return make


@pytest.fixture
def seam(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Seam:
    seam = Seam()
    monkeypatch.setattr(owner_cli_common, "boto3_factory", seam.factory)
    monkeypatch.chdir(tmp_path)
    return seam


def mfa_file(directory: Path, content: str = "123456\n") -> str:
    path = directory / "mfa"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    return str(path)


def prompter(prompts: list[str], answer: str) -> Callable[[str], str]:
    """A ``getpass.getpass`` that records each prompt in ``prompts`` and answers ``answer``."""

    def getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return answer

    return getpass


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- the key: its full ARN only ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key_id",
    [
        "alias/waiaas-owner",
        "arn:aws:kms:eu-west-1:111111111111:alias/waiaas-owner",
        "0a1b2c3d-4e5f-6789-abcd-ef0123456789",
        "arn:aws:kms:eu west 1:111111111111:key/0a1b2c3d-4e5f-6789-abcd-ef0123456789",
        "arn:aws:kms::111111111111:key/0a1b2c3d-4e5f-6789-abcd-ef0123456789",
        "arn:aws:kms:eu-west-1:1111:key/0a1b2c3d-4e5f-6789-abcd-ef0123456789",
        f"{KEY_ARN}\n",
    ],
)
def test_an_alias_a_bare_id_or_a_malformed_arn_is_refused_before_any_aws_call(
    key_id: str, seam: Seam, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    monkeypatch.setattr("getpass.getpass", prompter(asked, "123456"))
    for mfa in (["--mfa-code-file", mfa_file(tmp_path)], []):  # from a file; and no code given: nobody is asked
        code, out, err = run_cli(capsys, "owner", "--kms-key-id", key_id, *CHAIN, *mfa, "pubkey")
        assert (code, out) == (2, "")
        assert err.startswith("owner pubkey: the owner key must be given by its full key ARN")
        assert "the OwnerKeyArn output of the WaiaasOwnerKey stack" in err and "not an alias" in err
        assert (seam.regions, seam.made, asked) == ([], [], [])


def test_an_answer_for_another_key_is_refused(seam: Seam, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """KMS names the key it used (always by its ARN); an answer naming another is refused: from GetPublicKey,
    nothing is signed; from Sign, the signature is not used and nothing is sent."""
    owner = ["owner", "--kms-key-id", KEY_ARN, *CHAIN, "--mfa-code-file", mfa_file(tmp_path)]
    code, out, _ = run_cli(capsys, *owner, "pubkey")
    assert (code, out.split()) == (0, [out.split()[0], KEY_ARN])

    seam.kms.answer_as["GetPublicKey"] = OTHER_ARN
    code, out, err = run_cli(capsys, *owner, "sign-policy", str(EXAMPLE_PATH))
    assert (code, out, seam.kms.signed) == (2, "", [])
    assert err == f"owner sign-policy: kms:GetPublicKey answered for key {OTHER_ARN}, not for {KEY_ARN}: refused\n"

    seam.kms.answer_as = {"GetPublicKey": KEY_ARN, "Sign": OTHER_ARN}
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request sent would be exit 1, ConnectError
    code, out, err = run_cli(capsys, *owner, "call", "--url", url, "GET", "/v1/wallets/w1")
    assert (code, out, len(seam.kms.signed)) == (2, "", 1)
    assert err == f"owner call: kms:Sign answered for key {OTHER_ARN}, not for {KEY_ARN}: refused\n"

    del seam.kms.answer_as["Sign"]  # an answer without KeyId
    with pytest.raises(OwnerKeyError, match=r"^kms:Sign answered without naming a key, not for arn:"):
        KmsOwnerSigner(seam.kms, KEY_ARN).sign(b"message")


# -- AWS failures: the error code, one line, exit 2 --------------------------------------------------------------------


HOP_1 = "assume-role hop 1 (arn:aws:iam::111111111111:role/waiaas-owner-entry) failed"
FAILURES: dict[str, tuple[str, Exception, str]] = {
    "sts-refused": ("sts", _client_error("AccessDenied", "AssumeRole"), f"{HOP_1}: AccessDenied"),
    "sts-unreachable": (
        "sts",
        EndpointConnectionError(endpoint_url="https://sts.eu-west-1.amazonaws.com"),
        f"{HOP_1}: EndpointConnectionError",
    ),
    "key-disabled": (
        "GetPublicKey",
        _client_error("DisabledException", "GetPublicKey"),
        f"KMS key {KEY_ARN}: public key unavailable (DisabledException)",
    ),
    "not-a-code": (  # an error code that is no error code is not shown
        "GetPublicKey",
        _client_error("Not a code\nforged line", "GetPublicKey"),
        f"KMS key {KEY_ARN}: public key unavailable (ClientError)",
    ),
    "expired": ("Sign", _client_error("ExpiredTokenException", "Sign"), "kms:Sign failed (ExpiredTokenException)"),
    "throttled": ("Sign", _client_error("ThrottlingException", "Sign"), "kms:Sign failed (ThrottlingException)"),
}


@pytest.mark.parametrize("case", FAILURES)
def test_aws_failures_name_the_aws_error_code(
    case: str, seam: Seam, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where, error, message = FAILURES[case]
    if where == "sts":
        seam.sts_error = error
    else:
        seam.kms.errors[where] = error
    code, out, err = run_cli(capsys, "owner", "--kms-key-id", KEY_ARN, *CHAIN, "--mfa-code-file", mfa_file(tmp_path),
                             "sign-policy", str(EXAMPLE_PATH))  # fmt: skip
    assert (code, out, err) == (2, "", f"owner sign-policy: {message}\n")


@pytest.mark.parametrize("service", ["sts", "kms"])
def test_a_client_botocore_cannot_make_is_one_line_exit_2(
    service: str, seam: Seam, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seam.make_error[service] = NoRegionError()
    code, out, err = run_cli(capsys, "owner", "--kms-key-id", KEY_ARN, *CHAIN, "--mfa-code-file", mfa_file(tmp_path),
                             "pubkey")  # fmt: skip
    assert (code, out) == (2, "")
    expected = {
        "sts": "assume-role hop 1 (arn:aws:iam::111111111111:role/waiaas-owner-entry) failed: NoRegionError",
        "kms": f"KMS client for {KEY_ARN}: NoRegionError",
    }[service]
    assert err == f"owner pubkey: {expected}\n"
    assert seam.regions == ["eu-west-1"]


def test_the_region_is_the_key_arns_with_the_production_factory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No region anywhere (no --region, no AWS_DEFAULT_REGION, no config file): STS (the regional endpoint) and KMS
    are both called in the key ARN's region, and whatever happens next is one line, exit 2: no traceback after the
    MFA code is spent. moto answers (its KMS has no Ed25519 keys, so the key is a P-256 one); its GetPublicKey
    names the key by its bare id where KMS gives the key ARN, which the CLI refuses as an answer for another key."""
    import boto3
    from moto import mock_aws

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    nowhere = str(tmp_path / "none")
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_CONFIG_FILE": nowhere,
                        "AWS_SHARED_CREDENTIALS_FILE": nowhere, "AWS_EC2_METADATA_DISABLED": "true",
                        "MOTO_ACCOUNT_ID": "111111111111"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    made: list[tuple[str, str, str]] = []
    real_client: Callable[..., Any] = boto3.client  # its overloads take no *args

    def client(service: str, *args: Any, **kwargs: Any) -> Any:
        made_client = real_client(service, *args, **kwargs)
        made.append((service, made_client.meta.region_name, made_client.meta.endpoint_url))
        return made_client

    with mock_aws():
        created = real_client("kms", region_name="ap-southeast-2").create_key(
            KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY", Policy=json.dumps({"Statement": []})
        )
        key_arn = created["KeyMetadata"]["Arn"]
        monkeypatch.setattr(boto3, "client", client)
        code, out, err = run_cli(capsys, "owner", "--kms-key-id", key_arn, *CHAIN, "--mfa-code-file",
                                 mfa_file(tmp_path), "pubkey")  # fmt: skip
    key_id = created["KeyMetadata"]["KeyId"]
    assert (code, out) == (2, "")
    assert err == f"owner pubkey: kms:GetPublicKey answered for key {key_id}, not for {key_arn}: refused\n"
    assert made == [
        ("sts", "ap-southeast-2", "https://sts.ap-southeast-2.amazonaws.com"),
        ("sts", "ap-southeast-2", "https://sts.ap-southeast-2.amazonaws.com"),
        ("kms", "ap-southeast-2", "https://kms.ap-southeast-2.amazonaws.com"),
    ]


# -- the MFA code: never on the command line ---------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_mfa_code_on_the_command_line_is_refused_and_the_prompt_or_a_file_gives_it(
    seam: Seam, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = ["owner", "--kms-key-id", KEY_ARN, *CHAIN]
    code, out, err = run_cli(capsys, *owner, "--mfa-code", "493817", "pubkey")
    assert (code, out, seam.made) == (2, "", [])
    assert err.startswith("owner pubkey: --mfa-code is not taken: a command-line argument can be read by other")
    assert "493817" not in err and "--mfa-code-file" in err

    code, out, err = run_cli(capsys, *owner, "--region", "eu-west-1", "pubkey")
    assert (code, out, seam.made) == (2, "", [])
    assert err == "owner pubkey: --region is not taken: the region is the one in the --kms-key-id key ARN\n"

    monkeypatch.setattr("sys.stdin", io.StringIO())  # not a terminal, and no file
    code, out, err = run_cli(capsys, *owner, "pubkey")
    assert (code, out, seam.made) == (2, "", [])
    assert err == "owner pubkey: give --mfa-code-file (stdin is not a terminal to ask for the MFA code on)\n"

    prompts: list[str] = []
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", prompter(prompts, " 654321 "))
    code, out, err = run_cli(capsys, *owner, "pubkey")
    assert (code, err) == (0, "") and out.split()[1] == KEY_ARN
    assert prompts == ["MFA code for arn:aws:iam::111111111111:mfa/alice: "]
    assert seam.sts_calls[-2]["TokenCode"] == "654321" and "TokenCode" not in seam.sts_calls[-1]

    six_digits = "the MFA code must be 6 digits"
    for content, message in (
        ("12345\n", six_digits),
        ("١٢٣٤٥٦\n", six_digits),
        ("\n123456\n", "the first line is empty"),
    ):
        (tmp_path / "mfa").unlink(missing_ok=True)
        calls = len(seam.sts_calls)
        code, out, err = run_cli(capsys, *owner, "--mfa-code-file", mfa_file(tmp_path, content), "pubkey")
        assert (code, out, len(seam.sts_calls)) == (2, "", calls)
        assert message in err


def test_mfa_code_file_goes_with_kms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "owner", "--keypair", str(tmp_path / "k"), "--mfa-code-file",
                             mfa_file(tmp_path), "pubkey")  # fmt: skip
    assert (code, out, err) == (2, "", "owner pubkey: --mfa-code-file goes with --kms-key-id\n")


def test_the_role_chain_reports_the_sts_error_code_of_the_failed_hop() -> None:
    calls: list[dict[str, Any]] = []
    errors = iter([None, _client_error("AccessDenied", "AssumeRole")])
    roles = ["arn:aws:iam::111111111111:role/a", "arn:aws:iam::111111111111:role/b"]
    with pytest.raises(OwnerKeyError, match=r"^assume-role hop 2 \(arn:aws:iam::111111111111:role/b\) failed: "
                                            r"AccessDenied$"):  # fmt: skip
        assume_role_chain(lambda service, credentials: Sts(calls, next(errors)),
                          RoleChain(roles, "arn:aws:iam::111111111111:mfa/a", "123456", "alice"))  # fmt: skip
    assert len(calls) == 2
