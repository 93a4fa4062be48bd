"""IAM: the owner's assume-role chain, the host role, the operator role."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match

from cdk import naming
from tests.cdk.policy_walk import as_list, find_one, resources_of_type

IDENTITY = "WaiaasIdentity"


def _role(templates: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    return find_one(templates[IDENTITY], "AWS::IAM::Role", RoleName=name)


def _policies_of(templates: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    return [
        p["Properties"]["PolicyDocument"]
        for p in resources_of_type(templates[IDENTITY], "AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
    ]


def test_entry_role_requires_configured_owners_mfa_and_source_identity(template_of: Any, config: Any) -> None:
    template_of(IDENTITY).has_resource_properties(
        "AWS::IAM::Role",
        {
            "RoleName": naming.OWNER_ENTRY_ROLE,
            "MaxSessionDuration": 3600,
            "AssumeRolePolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Action": "sts:AssumeRole",
                            "Effect": "Allow",
                            "Principal": {"AWS": config.owner_principals[0]},
                            "Condition": {
                                "Bool": {"aws:MultiFactorAuthPresent": "true"},
                                "NumericLessThan": {"aws:MultiFactorAuthAge": "3600"},
                                "Null": {"sts:SourceIdentity": "false"},
                            },
                        }
                    ]
                )
            },
        },
    )


def test_entry_role_trusts_only_configured_owners(templates: dict[str, Any], config: Any) -> None:
    _, entry = _role(templates, naming.OWNER_ENTRY_ROLE)
    for statement in entry["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
        assert set(as_list(statement["Principal"]["AWS"])) == set(config.owner_principals)
        assert statement["Condition"]["Bool"] == {"aws:MultiFactorAuthPresent": "true"}


def test_signer_role_is_trusted_only_by_the_entry_role(templates: dict[str, Any]) -> None:
    entry_id, _ = _role(templates, naming.OWNER_ENTRY_ROLE)
    _, signer = _role(templates, naming.OWNER_SIGNER_ROLE)
    assert signer["Properties"]["MaxSessionDuration"] == 3600
    trust = signer["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust
    for statement in trust:
        assert statement["Principal"] == {"AWS": {"Fn::GetAtt": [entry_id, "Arn"]}}
    (assume,) = [s for s in trust if s["Action"] == "sts:AssumeRole"]
    assert assume["Condition"] == {"Null": {"sts:SourceIdentity": "false"}}


def test_signer_role_has_no_identity_policy(templates: dict[str, Any]) -> None:
    signer_id, signer = _role(templates, naming.OWNER_SIGNER_ROLE)
    assert "ManagedPolicyArns" not in signer["Properties"]
    assert "Policies" not in signer["Properties"]
    assert _policies_of(templates, signer_id) == []


def test_break_glass_role_is_trusted_only_by_owners_with_mfa_and_has_no_identity_policy(
    templates: dict[str, Any], config: Any
) -> None:
    """The owner key's policy names this role as the only one that may replace it; IAM gives it nothing else."""
    role_id, role = _role(templates, naming.OWNER_KEY_ADMIN_ROLE)
    assert role["Properties"]["MaxSessionDuration"] == 3600
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert {a for s in trust for a in as_list(s["Action"])} == {"sts:AssumeRole", "sts:SetSourceIdentity"}
    for statement in trust:
        assert set(as_list(statement["Principal"]["AWS"])) == set(config.owner_principals)
        assert statement["Condition"]["Bool"] == {"aws:MultiFactorAuthPresent": "true"}
        assert statement["Condition"]["NumericLessThan"] == {"aws:MultiFactorAuthAge": "3600"}
    (assume,) = [s for s in trust if s["Action"] == "sts:AssumeRole"]
    assert assume["Condition"]["Null"] == {"sts:SourceIdentity": "false"}
    assert "ManagedPolicyArns" not in role["Properties"] and "Policies" not in role["Properties"]
    assert _policies_of(templates, role_id) == []


def test_entry_role_may_only_assume_the_signer(templates: dict[str, Any]) -> None:
    entry_id, _ = _role(templates, naming.OWNER_ENTRY_ROLE)
    signer_id, _ = _role(templates, naming.OWNER_SIGNER_ROLE)
    (policy,) = _policies_of(templates, entry_id)
    (statement,) = policy["Statement"]
    assert set(as_list(statement["Action"])) == {"sts:AssumeRole", "sts:SetSourceIdentity"}
    assert statement["Resource"] == {"Fn::GetAtt": [signer_id, "Arn"]}


def test_host_role_is_for_ec2_and_has_no_key_use_in_iam(templates: dict[str, Any], config: Any) -> None:
    host_id, host = _role(templates, naming.ENCLAVE_HOST_ROLE)
    (trust,) = host["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ec2.amazonaws.com"}
    host_statements = _identity_statements(templates, host_id, host)
    kms = [s for s in host_statements if any(a.startswith("kms:") for a in as_list(s["Action"]))]
    (random,) = kms
    assert as_list(random["Action"]) == ["kms:GenerateRandom"]
    assert random["Condition"] == {
        "StringEqualsIgnoreCase": {
            "kms:RecipientAttestation:ImageSha384": config.enclave.pcr0,
            "kms:RecipientAttestation:PCR8": config.enclave.pcr8,
        }
    }
    for statement in host_statements:
        assert statement["Effect"] == "Allow"
        assert not [a for a in as_list(statement["Action"]) if a.endswith("*")]


def test_host_instance_profile_wraps_the_host_role(template_of: Any, templates: dict[str, Any]) -> None:
    host_id, _ = _role(templates, naming.ENCLAVE_HOST_ROLE)
    template_of(IDENTITY).has_resource_properties(
        "AWS::IAM::InstanceProfile", {"Roles": [{"Ref": host_id}], "InstanceProfileName": naming.ENCLAVE_HOST_ROLE}
    )


READ_ONLY_PREFIXES = ("Describe", "Get", "List", "Filter")


def test_operator_role_is_mfa_gated_and_read_only_besides_sessions(templates: dict[str, Any], config: Any) -> None:
    operator_id, operator = _role(templates, naming.OPERATOR_ROLE)
    (trust,) = operator["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert set(as_list(trust["Principal"]["AWS"])) == set(config.operator_principals)
    assert trust["Condition"]["Bool"] == {"aws:MultiFactorAuthPresent": "true"}
    assert operator["Properties"]["MaxSessionDuration"] == 3600
    assert "ManagedPolicyArns" not in operator["Properties"]
    (policy,) = _policies_of(templates, operator_id)
    session_actions = {"ssm:StartSession", "ssm:TerminateSession", "ssm:ResumeSession"}
    for statement in policy["Statement"]:
        for action in as_list(statement["Action"]):
            verb = action.split(":", 1)[1]
            assert action in session_actions or verb.startswith(READ_ONLY_PREFIXES), action
    (to_hosts,) = [s for s in policy["Statement"] if s.get("Sid") == "SessionsToEnclaveHostsOnly"]
    assert to_hosts["Condition"] == {"StringEquals": {"ssm:resourceTag/waiaas:role": "enclave-host"}}


def test_no_role_has_administrator_or_power_user_policies(templates: dict[str, Any]) -> None:
    for template in templates.values():
        for role in resources_of_type(template, "AWS::IAM::Role").values():
            text = str(role["Properties"].get("ManagedPolicyArns", []))
            assert "AdministratorAccess" not in text and "PowerUserAccess" not in text
            assert "ReadOnlyAccess" not in text


# Actions each role may have on Resource "*" (none of them has a resource type; each is listed with its reason in
# cdk/identity_stack.py). Everything else must name its resources.
STAR_ACTIONS = {
    naming.ENCLAVE_HOST_ROLE: {
        "kms:GenerateRandom",
        "cloudwatch:PutMetricData",
        "ssm:UpdateInstanceInformation",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
    },
    naming.OPERATOR_ROLE: {
        "ssm:DescribeSessions",
        "ssm:GetConnectionStatus",
        "ssm:DescribeInstanceInformation",
        "ec2:DescribeInstances",
        "autoscaling:DescribeAutoScalingGroups",
        "elasticloadbalancing:DescribeTargetHealth",
        "cloudwatch:DescribeAlarms",
        "cloudwatch:GetMetricData",
    },
    naming.OWNER_ENTRY_ROLE: set(),
    naming.OWNER_SIGNER_ROLE: set(),
}


def _identity_statements(templates: dict[str, Any], role_id: str, role: dict[str, Any]) -> list[dict[str, Any]]:
    """Every identity-policy statement of a role: attached AWS::IAM::Policy resources and inline policies."""
    inline = [p["PolicyDocument"] for p in role["Properties"].get("Policies", [])]
    return [s for document in _policies_of(templates, role_id) + inline for s in document["Statement"]]


@pytest.mark.parametrize("role_name", sorted(STAR_ACTIONS))
def test_wildcard_resources_only_for_actions_without_a_resource_type(templates: dict[str, Any], role_name: str) -> None:
    role_id, role = _role(templates, role_name)
    assert "ManagedPolicyArns" not in role["Properties"]  # nothing this test cannot read
    found = set()
    for statement in _identity_statements(templates, role_id, role):
        assert "NotAction" not in statement and "NotResource" not in statement, statement
        if statement["Effect"] == "Allow" and "*" in as_list(statement["Resource"]):
            found |= set(as_list(statement["Action"]))
    assert found <= STAR_ACTIONS[role_name], found - STAR_ACTIONS[role_name]


def test_host_wildcard_statements_keep_their_conditions(templates: dict[str, Any]) -> None:
    role_id, role = _role(templates, naming.ENCLAVE_HOST_ROLE)
    by_action = {
        action: statement
        for statement in _identity_statements(templates, role_id, role)
        for action in as_list(statement["Action"])
    }
    assert by_action["cloudwatch:PutMetricData"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": naming.METRIC_NAMESPACE}
    }
    assert set(by_action["kms:GenerateRandom"]["Condition"]["StringEqualsIgnoreCase"]) == {
        "kms:RecipientAttestation:ImageSha384",
        "kms:RecipientAttestation:PCR8",
    }


SESSION_MANAGER_ACTIONS = {
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
}
"""AWS's documented minimum for an instance reachable with Session Manager (AWSCloud9SSMInstanceProfile holds
exactly these)."""


def test_host_role_has_session_manager_minimum_and_no_managed_policy(templates: dict[str, Any]) -> None:
    role_id, role = _role(templates, naming.ENCLAVE_HOST_ROLE)
    assert "ManagedPolicyArns" not in role["Properties"]  # AmazonSSMManagedInstanceCore has ssm:GetParameter(s) on *
    actions = {a for s in _identity_statements(templates, role_id, role) for a in as_list(s["Action"])}
    systems_manager = {a for a in actions if a.split(":")[0] in ("ssm", "ssmmessages", "ec2messages")}
    assert systems_manager == SESSION_MANAGER_ACTIONS
