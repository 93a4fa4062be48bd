"""KMS keys: key specs, retention, and the key policies' security properties."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Match, Template

from cdk import key_policies, naming
from cdk.keys_stack import KeysStack
from cdk.synth import example_config, owner_key_policy, seal_key_policy
from tests.cdk.conftest import PCR0, PCR8
from tests.cdk.policy_walk import as_list, by_sid, resources_of_type, statements

ACCOUNT = "111111111111"
SIGNER = f"arn:aws:iam::{ACCOUNT}:role/{naming.OWNER_SIGNER_ROLE}"
HOST = f"arn:aws:iam::{ACCOUNT}:role/{naming.ENCLAVE_HOST_ROLE}"


def test_owner_key_is_ed25519_sign_verify(template_of: Any) -> None:
    template_of("WaiaasOwnerKey").has_resource_properties(
        "AWS::KMS::Key", {"KeySpec": "ECC_NIST_EDWARDS25519", "KeyUsage": "SIGN_VERIFY"}
    )


def test_seal_key_is_symmetric_with_rotation(template_of: Any) -> None:
    template_of("WaiaasKeys").has_resource_properties(
        "AWS::KMS::Key",
        {"KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "ENCRYPT_DECRYPT", "EnableKeyRotation": True},
    )


def test_every_kms_key_is_retained(templates: dict[str, Any]) -> None:
    keys = [r for t in templates.values() for r in resources_of_type(t, "AWS::KMS::Key").values()]
    assert keys
    for key in keys:
        assert key["DeletionPolicy"] == "Retain"
        assert key["UpdateReplacePolicy"] == "Retain"
        assert key["Properties"]["PendingWindowInDays"] == 30


def test_no_statement_anywhere_allows_a_kms_wildcard(templates: dict[str, Any]) -> None:
    found = list(statements(templates))
    assert len(found) > 20
    for statement in found:
        if statement["Effect"] != "Allow":
            continue
        actions = as_list(statement.get("Action", []))
        assert "*" not in actions
        assert not [a for a in actions if a.lower().startswith("kms:") and "*" in a], statement
        assert "NotAction" not in statement


def test_no_key_policy_names_the_account_root(templates: dict[str, Any]) -> None:
    for template in templates.values():
        for key in resources_of_type(template, "AWS::KMS::Key").values():
            assert ":root" not in json.dumps(key["Properties"]["KeyPolicy"])


def test_admin_statements_exclude_use(templates: dict[str, Any], config: Any) -> None:
    for template in templates.values():
        for key in resources_of_type(template, "AWS::KMS::Key").values():
            admin = by_sid(key["Properties"]["KeyPolicy"], "KeyAdministrationWithoutUse")
            assert sorted(as_list(admin["Principal"]["AWS"])) == sorted(config.key_admin_principals)
            actions = set(as_list(admin["Action"]))
            assert not actions & key_policies.USE_ACTIONS
            assert not [a for a in actions if "*" in a]
            assert "kms:ScheduleKeyDeletion" in actions
            # The administrators are named nowhere else in the key policy.
            others = [s for s in key["Properties"]["KeyPolicy"]["Statement"] if s is not admin]
            for admin_arn in config.key_admin_principals:
                assert admin_arn not in json.dumps(others)


def _allows(policy: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in policy["Statement"] if s["Effect"] == "Allow" and action in as_list(s["Action"])]


def test_only_the_owner_signer_may_sign_pure_ed25519(templates: dict[str, Any]) -> None:
    policy = owner_key_policy(templates)
    (allow,) = _allows(policy, "kms:Sign")
    assert allow["Principal"] == {"AWS": SIGNER}
    assert allow["Condition"] == {"StringEquals": {"kms:SigningAlgorithm": "ED25519_SHA_512", "kms:MessageType": "RAW"}}


def test_owner_key_denies_sign_outside_its_conditions(templates: dict[str, Any]) -> None:
    policy = owner_key_policy(templates)
    denies = {
        json.dumps(s["Condition"], sort_keys=True)
        for s in policy["Statement"]
        if s["Effect"] == "Deny" and s["Action"] == "kms:Sign" and s["Principal"] == {"AWS": "*"}
    }
    assert denies == {
        json.dumps({"ArnNotEquals": {"aws:PrincipalArn": SIGNER}}, sort_keys=True),
        json.dumps({"StringNotEquals": {"kms:SigningAlgorithm": "ED25519_SHA_512"}}, sort_keys=True),
        json.dumps({"StringNotEquals": {"kms:MessageType": "RAW"}}, sort_keys=True),
        json.dumps({"Null": {"aws:SourceIdentity": "true"}}, sort_keys=True),
    }


def test_seal_key_allows_only_the_host_role_with_pinned_attestation(templates: dict[str, Any]) -> None:
    policy = seal_key_policy(templates)
    use = [s for s in policy["Statement"] if s["Effect"] == "Allow" and s["Sid"] != "KeyAdministrationWithoutUse"]
    assert len(use) == 1
    (allow,) = use
    assert allow["Principal"] == {"AWS": HOST}
    assert sorted(as_list(allow["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateRandom"]
    assert allow["Condition"] == {
        "StringEqualsIgnoreCase": {
            "kms:RecipientAttestation:ImageSha384": PCR0,
            "kms:RecipientAttestation:PCR8": PCR8,
        }
    }


@pytest.mark.parametrize(
    ("sid", "key", "value"),
    [
        ("DenyUnwrapWithoutPinnedImage", "kms:RecipientAttestation:ImageSha384", PCR0),
        ("DenyUnwrapWithoutPinnedSigner", "kms:RecipientAttestation:PCR8", PCR8),
    ],
)
def test_seal_key_denies_decrypt_without_each_measurement(
    templates: dict[str, Any], sid: str, key: str, value: str
) -> None:
    deny = by_sid(seal_key_policy(templates), sid)
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == {"AWS": "*"}
    assert {"kms:Decrypt", "kms:GenerateDataKey"} <= set(as_list(deny["Action"]))
    # One key per deny: negated keys in one block would be ANDed and let a half-matching request through.
    assert deny["Condition"] == {"StringNotEqualsIgnoreCase": {key: value}}


def test_seal_key_denies_reencrypt_and_grants(templates: dict[str, Any]) -> None:
    policy = seal_key_policy(templates)
    reencrypt = by_sid(policy, "DenyReEncrypt")
    assert reencrypt["Effect"] == "Deny" and "Condition" not in reencrypt
    assert set(as_list(reencrypt["Action"])) == {"kms:ReEncryptFrom", "kms:ReEncryptTo"}
    grants = by_sid(policy, "DenyGrants")
    assert grants["Effect"] == "Deny" and grants["Action"] == "kms:CreateGrant"


def test_seal_key_policy_is_plain_json_for_the_test_kms(templates: dict[str, Any]) -> None:
    policy = seal_key_policy(templates)
    text = json.dumps(policy)
    assert "Fn::" not in text and '"Ref"' not in text
    assert policy["Version"] == "2012-10-17"


def _keys_only_template(pcr8: str | None) -> Template:
    app = App()
    stack = KeysStack(app, "Keys", config=example_config(pcr0=PCR0, pcr8=pcr8))
    return Template.from_stack(stack)


def test_unsigned_image_pins_pcr0_only() -> None:
    template = _keys_only_template(pcr8=None)
    template.has_resource_properties(
        "AWS::KMS::Key",
        {
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Sid": "EnclaveUsesKeyWithPinnedAttestation",
                                "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": PCR0}},
                            }
                        ),
                        Match.object_like(
                            {
                                "Sid": "DenyUnwrapWithoutPinnedImage",
                                "Effect": "Deny",
                                "Condition": {
                                    "StringNotEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": PCR0}
                                },
                            }
                        ),
                    ]
                )
            }
        },
    )
    assert "PCR8" not in json.dumps(template.to_json())


@pytest.mark.parametrize("stack", ["WaiaasKeys", "WaiaasOwnerKey"])
def test_keys_stacks_are_termination_protected(cdk_outdir: Any, templates: dict[str, Any], stack: str) -> None:
    manifest = json.loads((cdk_outdir / "manifest.json").read_text())
    assert manifest["artifacts"][stack]["properties"]["terminationProtection"] is True


def test_the_owner_key_stack_outputs_the_owner_key_arn(templates: dict[str, Any]) -> None:
    """The owner CLI takes the owner key by its full ARN only (never the alias a key administrator can re-point), and
    docs/deploy.md has the owner read it from this output."""
    template = templates["WaiaasOwnerKey"]
    (owner_key,) = [
        logical_id
        for logical_id, key in resources_of_type(template, "AWS::KMS::Key").items()
        if key["Properties"]["KeySpec"] == "ECC_NIST_EDWARDS25519"
    ]
    assert template["Outputs"]["OwnerKeyArn"]["Value"] == {"Fn::GetAtt": [owner_key, "Arn"]}
