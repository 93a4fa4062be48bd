"""Who may replace the owner key's policy: only the owner's break-glass role, with MFA and a source identity.

Evaluated request by request with the project's key-policy evaluator (`tests.fakes.attesting_kms`) on the policies as
synthesized. The threat: `kms:PutKeyPolicy` replaces the whole policy, so whoever may call it can write in a signer;
the key administrators include the CloudFormation execution role, which every deployment runs as.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Template

from cdk import naming
from cdk.keys_stack import OwnerKeyStack
from cdk.owner_key_policy import main, owner_key_policy_json
from cdk.synth import example_config, owner_key_policy, seal_key_policy
from tests.cdk.conftest import PCR0, PCR8
from tests.cdk.policy_walk import as_list, by_sid, resources_of_type
from tests.fakes.attesting_kms import evaluate_key_policy

ACCOUNT = "111111111111"
BREAK_GLASS = f"arn:aws:iam::{ACCOUNT}:role/{naming.OWNER_KEY_ADMIN_ROLE}"
SIGNER = f"arn:aws:iam::{ACCOUNT}:role/{naming.OWNER_SIGNER_ROLE}"
HOST = f"arn:aws:iam::{ACCOUNT}:role/{naming.ENCLAVE_HOST_ROLE}"
OWNER_SESSION = {"aws:MultiFactorAuthPresent": "true", "aws:SourceIdentity": "alice"}
"""What a session assumed with MFA and `--source-identity alice` carries."""


def _cfn_exec_role(config: Any) -> str:
    (role,) = [arn for arn in config.key_admin_principals if "cfn-exec-role" in arn]
    return str(role)


def _may_replace(policy: dict[str, Any], caller: str, session: dict[str, str]) -> bool:
    context = {"aws:PrincipalArn": caller, **session}
    return evaluate_key_policy(policy, action="kms:PutKeyPolicy", caller_arn=caller, context=context)


def test_no_key_administrator_may_replace_the_owner_key_policy(templates: dict[str, Any], config: Any) -> None:
    policy = owner_key_policy(templates)
    assert _cfn_exec_role(config) in config.key_admin_principals
    for admin in config.key_admin_principals:
        # Not even from an MFA session with a source identity: the deny names the one principal that may.
        assert not _may_replace(policy, admin, OWNER_SESSION), admin
        assert not _may_replace(policy, admin, {}), admin
    for other in (SIGNER, HOST, naming.role_arn(config, naming.OWNER_ENTRY_ROLE)):
        assert not _may_replace(policy, other, OWNER_SESSION), other


def test_break_glass_role_may_replace_it_with_mfa_and_source_identity(templates: dict[str, Any]) -> None:
    """The key is not locked out: the lockout check is bypassed at creation, and this is why that is safe."""
    policy = owner_key_policy(templates)
    assert _may_replace(policy, BREAK_GLASS, OWNER_SESSION)
    assert not _may_replace(policy, BREAK_GLASS, {"aws:SourceIdentity": "alice"})  # no MFA information at all
    assert not _may_replace(policy, BREAK_GLASS, {**OWNER_SESSION, "aws:MultiFactorAuthPresent": "false"})
    assert not _may_replace(policy, BREAK_GLASS, {"aws:MultiFactorAuthPresent": "true"})  # no source identity


def test_break_glass_role_cannot_sign(templates: dict[str, Any]) -> None:
    policy = owner_key_policy(templates)
    context = {"aws:PrincipalArn": BREAK_GLASS, "kms:SigningAlgorithm": "ED25519_SHA_512", "kms:MessageType": "RAW"}
    assert not evaluate_key_policy(policy, action="kms:Sign", caller_arn=BREAK_GLASS, context=context | OWNER_SESSION)
    writers = by_sid(policy, "OwnerKeyPolicyWriters")
    assert set(as_list(writers["Action"])) == {"kms:PutKeyPolicy", "kms:GetKeyPolicy", "kms:DescribeKey"}
    assert writers["Principal"] == {"AWS": BREAK_GLASS}


def test_deploy_role_may_re_pin_the_seal_key_but_not_rewrite_the_owner_key(
    templates: dict[str, Any], config: Any
) -> None:
    """Pinning a new image is a seal-key policy change, so the deployment role keeps that power (docs/deploy.md,
    "Who is trusted"); the owner key's policy does not change with images, and the same role cannot replace it."""
    deployer = _cfn_exec_role(config)
    assert _may_replace(seal_key_policy(templates), deployer, {})
    assert not _may_replace(owner_key_policy(templates), deployer, {})


def test_only_the_owner_key_bypasses_the_lockout_check(templates: dict[str, Any]) -> None:
    """KMS refuses to create a key whose policy denies its creator PutKeyPolicy unless the check is bypassed."""
    bypass = {}
    for template in templates.values():
        for key in resources_of_type(template, "AWS::KMS::Key").values():
            bypass[key["Properties"]["Description"].split(":")[0]] = key["Properties"].get(
                "BypassPolicyLockoutSafetyCheck", False
            )
    assert bypass == {"WAIaaS owner key": True, "WAIaaS seal key": False, "WAIaaS notifications": False}


def test_owner_key_has_its_own_stack_that_an_image_rollout_leaves_alone(templates: dict[str, Any]) -> None:
    """New measurements change the seal key's stack and never the owner key's: deploying a new image cannot even
    attempt a change to the owner key (CloudFormation updates only resources whose template changed)."""
    other = "ab" * 48
    rolled_out = example_config(pcr0=other, pcr8=None)
    owner_stack = Template.from_stack(OwnerKeyStack(App(), "WaiaasOwnerKey", config=rolled_out)).to_json()
    assert owner_stack["Resources"] == templates["WaiaasOwnerKey"]["Resources"]
    aliases = {
        stack: {a["Properties"]["AliasName"] for a in resources_of_type(templates[stack], "AWS::KMS::Alias").values()}
        for stack in ("WaiaasKeys", "WaiaasOwnerKey")
    }
    assert aliases == {"WaiaasKeys": {naming.SEAL_KEY_ALIAS}, "WaiaasOwnerKey": {naming.OWNER_KEY_ALIAS}}
    assert PCR0 not in json.dumps(templates["WaiaasOwnerKey"]) and PCR8 not in json.dumps(templates["WaiaasOwnerKey"])


def test_admitted_policy_lets_the_deploy_role_replace_it_until_the_final_policy_is_back(
    templates: dict[str, Any], config: Any
) -> None:
    deployer = _cfn_exec_role(config)
    final = owner_key_policy(templates)
    admitted = owner_key_policy_json(config, admitted_writer=deployer)
    # Step 1: the owner puts the admitted variant (allowed: break-glass with MFA); it lets the deployer write, without
    # MFA or source identity (a CloudFormation session has neither), and nobody else.
    assert _may_replace(final, BREAK_GLASS, OWNER_SESSION)
    assert _may_replace(admitted, deployer, {})
    assert _may_replace(admitted, BREAK_GLASS, OWNER_SESSION)
    assert not _may_replace(admitted, BREAK_GLASS, {})
    for admin in config.key_admin_principals:
        if admin != deployer:
            assert not _may_replace(admitted, admin, OWNER_SESSION)
    # Step 2: the deployment puts the final policy, which closes the door again.
    assert not _may_replace(final, deployer, {})
    # Only the writer statements differ: the sign rules are the same in both.
    writer_sids = {s["Sid"] for s in final["Statement"] if "kms:PutKeyPolicy" in as_list(s["Action"])}
    assert writer_sids == {
        "OwnerKeyPolicyWriters",
        "DenyPolicyChangeByAnyOtherPrincipal",
        "DenyPolicyChangeWithoutMfa",
        "DenyPolicyChangeWithoutSourceIdentity",
    }
    assert [s for s in admitted["Statement"] if s["Sid"] not in writer_sids] == [
        s for s in final["Statement"] if s["Sid"] not in writer_sids
    ]


def test_printed_policy_is_the_synthesized_one(templates: dict[str, Any], config: Any) -> None:
    assert owner_key_policy_json(config) == owner_key_policy(templates)


@pytest.mark.parametrize(
    "writer",
    [
        "arn:aws:iam::222222222222:role/cdk-hnb659fds-cfn-exec-role-222222222222-eu-west-1",
        "arn:aws:iam::111111111111:user/mallory",
        "arn:aws:iam::111111111111:role/",
        "*",
    ],
)
def test_printer_refuses_a_writer_that_is_not_a_role_of_the_account(
    capsys: pytest.CaptureFixture[str], writer: str
) -> None:
    with pytest.raises(SystemExit, match=r"admitted writer must be a role of account 111111111111"):
        main(["--admit", writer])
    assert capsys.readouterr().out == ""


def test_printer_prints_the_admitted_policy(capsys: pytest.CaptureFixture[str], config: Any) -> None:
    deployer = _cfn_exec_role(config)
    main(["--admit", deployer])
    printed = json.loads(capsys.readouterr().out)
    assert _may_replace(printed, deployer, {})
    assert printed == owner_key_policy_json(config, admitted_writer=deployer)


def test_evaluator_reads_bool_and_if_exists_as_iam_does() -> None:
    deny_without_mfa = {
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": BREAK_GLASS}, "Action": "kms:PutKeyPolicy"},
            {
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": "kms:PutKeyPolicy",
                "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}},
            },
        ]
    }
    assert _may_replace(deny_without_mfa, BREAK_GLASS, {"aws:MultiFactorAuthPresent": "true"})
    assert not _may_replace(deny_without_mfa, BREAK_GLASS, {"aws:MultiFactorAuthPresent": "false"})
    assert not _may_replace(deny_without_mfa, BREAK_GLASS, {})  # IfExists: an absent key makes the deny apply
    allow_with_mfa = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": BREAK_GLASS},
                "Action": "kms:PutKeyPolicy",
                "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}},
            }
        ]
    }
    assert _may_replace(allow_with_mfa, BREAK_GLASS, {"aws:MultiFactorAuthPresent": "true"})
    assert not _may_replace(allow_with_mfa, BREAK_GLASS, {})  # plain Bool: an absent key does not match
