"""Interface endpoint policies, evaluated as the synthesized policies would be for requests through each endpoint.

The evaluator (`tests.cdk.policy_walk.allows`) knows only what these policies use (Allow statements for any
principal, Action and Resource with `*` wildcards, StringEquals conditions) and refuses anything else, so a new
construct in a policy must be taught there before it can pass.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.cdk.interface_endpoints import endpoint_policies
from tests.cdk.policy_walk import allows, as_list

OTHER_ACCOUNT = "222222222222"
WITHOUT_POLICY = {"ssmmessages", "ec2messages"}
"""Endpoints whose service's endpoint-policy support is not confirmed (docs/deploy.md, Network)."""


def _allows(policy: dict[str, Any], *, principal_account: str, action: str, resource: str) -> bool:
    return allows(
        policy["Statement"], action=action, resource=resource, context={"aws:PrincipalAccount": principal_account}
    )


def test_every_interface_endpoint_but_the_unconfirmed_ones_has_a_policy_for_this_account(
    templates: dict[str, Any], config: Any
) -> None:
    policies = endpoint_policies(templates, config)
    assert set(policies) == {"kms", "sts", "ssm", "ssmmessages", "ec2messages", "logs", "monitoring", "cloudformation"}
    assert {service for service, policy in policies.items() if policy is None} == WITHOUT_POLICY
    for service, policy in policies.items():
        for statement in policy["Statement"] if policy else []:
            assert statement["Condition"]["StringEquals"]["aws:PrincipalAccount"] == config.account, service
            assert "*" not in as_list(statement["Action"]), service


def _cases(account: str, region: str) -> list[tuple[str, str, str, str, bool]]:
    """(endpoint service, principal account, action, resource, allowed)."""
    key = f"arn:aws:kms:{region}:{account}:key/22222222-2222-4222-8222-222222222222"
    foreign_key = f"arn:aws:kms:{region}:{OTHER_ACCOUNT}:key/33333333-3333-4333-8333-333333333333"
    other_region_key = f"arn:aws:kms:us-east-1:{account}:key/22222222-2222-4222-8222-222222222222"
    stream = f"arn:aws:logs:{region}:{account}:log-group:/waiaas/proxy:log-stream:i-0123456789abcdef0"
    foreign_stream = f"arn:aws:logs:{region}:{OTHER_ACCOUNT}:log-group:drop:log-stream:x"
    instance = f"arn:aws:ec2:{region}:{account}:instance/i-0123456789abcdef0"
    hosts_stack = (
        f"arn:aws:cloudformation:{region}:{account}:stack/WaiaasEnclaveHosts/0f1e2d3c-0000-4000-8000-000000000000"
    )
    other_stack = f"arn:aws:cloudformation:{region}:{account}:stack/WaiaasKeys/0f1e2d3c-0000-4000-8000-000000000000"
    return [
        # KMS: the enclave's attested calls, on this account's keys, by this account's principals; nothing else.
        ("kms", account, "kms:Decrypt", key, True),
        ("kms", account, "kms:GenerateDataKey", key, True),
        ("kms", account, "kms:GenerateRandom", "*", True),
        ("kms", OTHER_ACCOUNT, "kms:Decrypt", key, False),
        ("kms", OTHER_ACCOUNT, "kms:GenerateRandom", "*", False),
        ("kms", account, "kms:Decrypt", foreign_key, False),
        ("kms", account, "kms:GenerateDataKey", foreign_key, False),
        ("kms", account, "kms:Decrypt", other_region_key, False),
        ("kms", account, "kms:Encrypt", foreign_key, False),
        ("kms", account, "kms:Encrypt", key, False),
        ("kms", account, "kms:ReEncryptTo", key, False),
        ("kms", account, "kms:CreateGrant", key, False),
        ("kms", account, "kms:Sign", key, False),
        ("kms", account, "kms:PutKeyPolicy", key, False),
        # Logs: this account's log groups only.
        ("logs", account, "logs:PutLogEvents", stream, True),
        ("logs", account, "logs:PutLogEvents", foreign_stream, False),
        ("logs", OTHER_ACCOUNT, "logs:PutLogEvents", stream, False),
        # STS, SSM, metrics: this account's principals only, and only that service.
        ("sts", account, "sts:GetCallerIdentity", "*", True),
        ("sts", OTHER_ACCOUNT, "sts:GetCallerIdentity", "*", False),
        ("ssm", account, "ssm:UpdateInstanceInformation", instance, True),
        ("ssm", OTHER_ACCOUNT, "ssm:UpdateInstanceInformation", instance, False),
        ("monitoring", account, "cloudwatch:PutMetricData", "*", True),
        ("monitoring", OTHER_ACCOUNT, "cloudwatch:PutMetricData", "*", False),
        ("monitoring", account, "logs:PutLogEvents", stream, False),
        # CloudFormation: a boot signal to the enclave-hosts stack, nothing else (no other stack, no other action).
        ("cloudformation", account, "cloudformation:SignalResource", hosts_stack, True),
        ("cloudformation", OTHER_ACCOUNT, "cloudformation:SignalResource", hosts_stack, False),
        ("cloudformation", account, "cloudformation:SignalResource", other_stack, False),
        ("cloudformation", account, "cloudformation:UpdateStack", hosts_stack, False),
        ("cloudformation", account, "cloudformation:DescribeStacks", hosts_stack, False),
    ]


@pytest.mark.parametrize("case", range(len(_cases("111111111111", "eu-west-1"))))
def test_requests_through_interface_endpoints(templates: dict[str, Any], config: Any, case: int) -> None:
    service, principal_account, action, resource, allowed = _cases(config.account, config.region)[case]
    policy = endpoint_policies(templates, config)[service]
    assert policy is not None, f"{service} endpoint has the default (allow everything) policy"
    assert _allows(policy, principal_account=principal_account, action=action, resource=resource) is allowed


def test_evaluator_refuses_what_it_does_not_know() -> None:
    deny = {"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*"}]}
    with pytest.raises(AssertionError, match="Deny"):
        _allows(deny, principal_account="1", action="kms:Decrypt", resource="*")
    if_exists = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*",
                                "Condition": {"StringEqualsIfExists": {"aws:ResourceAccount": "1"}}}]}  # fmt: skip
    with pytest.raises(AssertionError, match="StringEqualsIfExists"):
        _allows(if_exists, principal_account="1", action="kms:Decrypt", resource="*")
