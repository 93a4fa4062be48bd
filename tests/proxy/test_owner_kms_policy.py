"""``waiaas owner --kms-key-id ...`` end to end through the owner key policy the CDK app synthesizes.

One source of truth: the key policy is read from the synthesized ``WaiaasOwnerKey`` template, never written here.
STS is moto's (`tests.fakes.sts_sessions`: the real role ARN of each session and the source identity the first hop
set, carried through the chain), KMS the test KMS (`tests.fakes.attesting_kms`), which evaluates ``kms:Sign`` and
``kms:GetPublicKey`` against that policy as the session that calls (``aws:PrincipalArn``, ``aws:SourceIdentity``).
The key lives in the deployment's account and region (``cdk.json``), so its ARN is one the stack would output.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App
from solders.pubkey import Pubkey

from cdk import naming
from cdk.keys_stack import OwnerKeyStack
from cdk.synth import example_config, owner_key_policy
from parent_proxy import owner_cli_common
from parent_proxy.owner_signers import KmsOwnerSigner, OwnerKeyError
from policies.cli import main
from policies.signing import load_signed_policy
from selfhost.local_stack import free_port
from tests.cdk.conftest import PCR0, PCR8
from tests.fakes.attesting_kms import AttestingTestKms
from tests.fakes.sts_sessions import StsSessions
from tests.support.policies import EXAMPLE_PATH

CONFIG = example_config(pcr0=PCR0, pcr8=PCR8)
ENTRY = naming.role_arn(CONFIG, naming.OWNER_ENTRY_ROLE)
SIGNER = naming.role_arn(CONFIG, naming.OWNER_SIGNER_ROLE)
HOST = naming.role_arn(CONFIG, naming.ENCLAVE_HOST_ROLE)
MFA_SERIAL = f"arn:aws:iam::{CONFIG.account}:mfa/alice"


@pytest.fixture(scope="module")
def synthesized_policy() -> dict[str, Any]:
    app = App()
    OwnerKeyStack(app, "WaiaasOwnerKey", config=CONFIG)
    return owner_key_policy({stack.stack_name: dict(stack.template) for stack in app.synth().stacks})


@dataclass
class Deployment:
    kms: AttestingTestKms
    sts: StsSessions
    key_arn: str
    regions: list[str]
    """The region of each client factory the CLI made (`owner_cli_common.boto3_factory`)."""
    mfa_file: Path

    def owner(self, *roles: str, source_identity: str = "alice") -> list[str]:
        chain = [option for role in roles for option in ("--role-arn", role)]
        return ["owner", "--kms-key-id", self.key_arn, *chain, "--mfa-serial", MFA_SERIAL,
                "--mfa-code-file", str(self.mfa_file), "--source-identity", source_identity]  # fmt: skip


@pytest.fixture
def deployment(
    synthesized_policy: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Deployment]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": CONFIG.region, "MOTO_ACCOUNT_ID": CONFIG.account}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    from moto import mock_aws

    mfa_file = tmp_path / "mfa-code"
    fd = os.open(mfa_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("123456\n")
    with mock_aws():
        # The caller the test KMS starts with is never used: every client the CLI gets is a session's.
        kms = AttestingTestKms(root_certificate_pem=b"", clock=lambda: datetime.now(UTC), caller_arn="nobody",
                               region=CONFIG.region)  # fmt: skip
        created = kms.create_key(Policy=json.dumps(synthesized_policy), KeySpec="ECC_NIST_EDWARDS25519",
                                 KeyUsage="SIGN_VERIFY", BypassPolicyLockoutSafetyCheck=True)  # fmt: skip
        sts = StsSessions(region=CONFIG.region)
        world = Deployment(kms, sts, created["KeyMetadata"]["Arn"], [], mfa_file)

        def factory(region: str) -> Any:
            world.regions.append(region)
            return lambda service, credentials: (
                sts.client(credentials) if service == "sts" else kms.client_for_session(sts.session(credentials))
            )

        monkeypatch.setattr(owner_cli_common, "boto3_factory", factory)
        yield world


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_owner_signs_through_the_synthesized_owner_key_policy(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = deployment.owner(ENTRY, SIGNER)
    assert deployment.key_arn.startswith(f"arn:aws:kms:{CONFIG.region}:{CONFIG.account}:key/")
    code, out, err = run_cli(capsys, *owner, "pubkey")
    assert (code, err) == (0, "")
    public_key, key_arn = out.split()
    assert out == f"{public_key} {deployment.key_arn}\n" and key_arn == deployment.key_arn
    assert deployment.regions == [CONFIG.region]  # the region is the key ARN's
    # MFA and the source identity on the first hop only; the second session has it from the first.
    assert [(c["RoleArn"], c.get("SourceIdentity"), c.get("TokenCode")) for c in deployment.sts.calls] == [
        (ENTRY, "alice", "123456"),
        (SIGNER, None, None),
    ]

    code, out, err = run_cli(capsys, *owner, "--owner-public-key", public_key, "sign-policy", str(EXAMPLE_PATH))
    assert (code, err) == (0, "")
    assert load_signed_policy(out, owner=Pubkey.from_string(public_key), wallet_id="demo-wallet").sequence == 1


def test_the_entry_role_reads_the_public_key_but_cannot_sign(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = deployment.owner(ENTRY)
    code, out, _ = run_cli(capsys, *owner, "pubkey")
    assert code == 0 and out.split()[1] == deployment.key_arn
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request sent would be exit 1, ConnectError
    for command in (["sign-policy", str(EXAMPLE_PATH)], ["call", "--url", url, "GET", "/v1/wallets/w1"]):
        code, out, err = run_cli(capsys, *owner, *command)
        assert (code, out) == (2, "")
        assert err == f"owner {command[0]}: kms:Sign failed (AccessDeniedException)\n"


def test_another_role_cannot_even_read_the_owner_public_key(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, *deployment.owner(HOST), "pubkey")
    assert (code, out) == (2, "")
    assert err == f"owner pubkey: KMS key {deployment.key_arn}: public key unavailable (AccessDeniedException)\n"


def test_a_signer_session_without_a_source_identity_is_refused_kms_sign(deployment: Deployment) -> None:
    """The CLI always sends one; a session made without it (here straight through STS) may read the public key, as
    the policy allows, but ``DenySignWithoutSourceIdentity`` refuses its signature. With one, the same role signs."""
    sts, kms = deployment.sts, deployment.kms
    without = sts.client(None).assume_role(RoleArn=SIGNER, RoleSessionName="direct")["Credentials"]
    signer = KmsOwnerSigner(kms.client_for_session(sts.session(without)), deployment.key_arn)
    with pytest.raises(OwnerKeyError, match=r"^kms:Sign failed \(AccessDeniedException\)$"):
        signer.sign(b"message")
    with_identity = sts.client(None).assume_role(RoleArn=SIGNER, RoleSessionName="direct", SourceIdentity="alice")
    signed = KmsOwnerSigner(kms.client_for_session(sts.session(with_identity["Credentials"])), deployment.key_arn)
    assert len(signed.sign(b"message")) == 64


def test_credentials_sts_never_issued_are_refused(deployment: Deployment) -> None:
    sts, kms = deployment.sts, deployment.kms
    issued = sts.client(None).assume_role(RoleArn=SIGNER, RoleSessionName="direct", SourceIdentity="alice")
    altered = {**issued["Credentials"], "SessionToken": issued["Credentials"]["SessionToken"] + "x"}
    with pytest.raises(OwnerKeyError, match=r"public key unavailable \(UnrecognizedClientException\)$"):
        KmsOwnerSigner(kms.client_for_session(sts.session(altered)), deployment.key_arn)
