"""The monitoring stack's metric filters, evaluated against CloudTrail records shaped like AWS's documented examples.

The patterns come from the synthesized template; the key ARNs they import from the key stacks are replaced by
made-up ARNs of the key each export points at (found through the key's alias), so the test knows which is which.
"""

from __future__ import annotations

from typing import Any

import pytest

from cdk import naming
from tests.cdk.filter_pattern import PatternError, matches
from tests.cdk.policy_walk import resources_of_type

MONITORING = "WaiaasMonitoring"
ACCOUNT, REGION = "111111111111", "eu-west-1"
KEY_ARNS = {
    naming.OWNER_KEY_ALIAS: f"arn:aws:kms:{REGION}:{ACCOUNT}:key/11111111-1111-4111-8111-111111111111",
    naming.SEAL_KEY_ALIAS: f"arn:aws:kms:{REGION}:{ACCOUNT}:key/22222222-2222-4222-8222-222222222222",
}
OWNER, SEAL = KEY_ARNS[naming.OWNER_KEY_ALIAS], KEY_ARNS[naming.SEAL_KEY_ALIAS]
OTHER_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/99999999-9999-4999-8999-999999999999"
MAX_PATTERN_CHARS = 1024
"""CloudWatch Logs limit on a metric filter's pattern."""


def _export_targets(templates: dict[str, Any]) -> dict[str, str]:
    """Export name -> made-up ARN of the KMS key it exports (identified by the alias that targets that key)."""
    targets = {}
    for template in templates.values():
        aliases = {
            a["Properties"]["TargetKeyId"]["Ref"]: a["Properties"]["AliasName"]
            for a in resources_of_type(template, "AWS::KMS::Alias").values()
        }
        for output in template.get("Outputs", {}).values():
            if "Export" in output and "Fn::GetAtt" in output["Value"]:
                key_id, attribute = output["Value"]["Fn::GetAtt"]
                if attribute == "Arn" and key_id in aliases:
                    targets[output["Export"]["Name"]] = KEY_ARNS[aliases[key_id]]
    return targets


def _render(value: Any, exports: dict[str, str]) -> str:
    if isinstance(value, str):
        return value
    separator: str
    separator, parts = value["Fn::Join"]
    return separator.join(part if isinstance(part, str) else exports[part["Fn::ImportValue"]] for part in parts)


@pytest.fixture(scope="module")
def patterns(templates: dict[str, Any]) -> dict[str, str]:
    exports = _export_targets(templates)
    return {
        f["Properties"]["MetricTransformations"][0]["MetricName"]: _render(f["Properties"]["FilterPattern"], exports)
        for f in resources_of_type(templates[MONITORING], "AWS::Logs::MetricFilter").values()
    }


def _kms_event(name: str, *resource_arns: str, **fields: Any) -> dict[str, Any]:
    event = {
        "eventVersion": "1.08",
        "eventSource": "kms.amazonaws.com",
        "eventName": name,
        "awsRegion": REGION,
        "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/mallory", "userName": "mallory"},
        "resources": [{"accountId": ACCOUNT, "type": "AWS::KMS::Key", "ARN": arn} for arn in resource_arns],
    }
    event.update(fields)
    return event


def _alias_event(name: str, alias: str, key_arn: str) -> dict[str, Any]:
    # As documented for UpdateAlias / DeleteAlias: resources[0] is the ALIAS, then the key; the name is a parameter.
    parameters = {"aliasName": alias} | ({"targetKeyId": key_arn} if name != "DeleteAlias" else {})
    return _kms_event(
        name, f"arn:aws:kms:{REGION}:{ACCOUNT}:{alias}", key_arn, requestParameters=parameters, readOnly=False
    )


def _iam_event(name: str, role_name: str, **fields: Any) -> dict[str, Any]:
    # IAM records carry the role in requestParameters.roleName (and, for IAM, no resources array).
    event = {
        "eventVersion": "1.08",
        "eventSource": "iam.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "userIdentity": {"type": "AssumedRole", "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/cfn-exec/session"},
        "requestParameters": {"roleName": role_name},
    }
    event.update(fields)
    return event


HOST_SESSION = {
    "type": "AssumedRole",
    "sessionContext": {"sessionIssuer": {"type": "Role", "userName": naming.ENCLAVE_HOST_ROLE}},
}

CASES = [
    # (event description, event, the alarms that must fire; every other alarm must stay silent)
    ("PutKeyPolicy on the seal key", _kms_event("PutKeyPolicy", SEAL), {"KeyPolicyChanged"}),
    ("PutKeyPolicy on the owner key", _kms_event("PutKeyPolicy", OWNER), {"KeyPolicyChanged"}),
    ("ScheduleKeyDeletion of the owner key", _kms_event("ScheduleKeyDeletion", OWNER), {"KeyStateOrAliasChanged"}),
    ("CreateGrant on the owner key", _kms_event("CreateGrant", OWNER), {"KeyStateOrAliasChanged"}),
    (
        "UpdateAssumeRolePolicy of the owner-signer role",
        _iam_event("UpdateAssumeRolePolicy", naming.OWNER_SIGNER_ROLE),
        {"WaiaasRoleChanged"},
    ),
    (
        "PutRolePolicy on the owner-key-admin role",
        _iam_event("PutRolePolicy", naming.OWNER_KEY_ADMIN_ROLE),
        {"WaiaasRoleChanged"},
    ),
    (
        "AttachRolePolicy to the host role",
        _iam_event("AttachRolePolicy", naming.ENCLAVE_HOST_ROLE),
        {"WaiaasRoleChanged"},
    ),
    ("DeleteRole of the owner entry role", _iam_event("DeleteRole", naming.OWNER_ENTRY_ROLE), {"WaiaasRoleChanged"}),
    ("UpdateAssumeRolePolicy of an unrelated role", _iam_event("UpdateAssumeRolePolicy", "someone-else"), set()),
    ("GetRole of the owner-signer role (read only)", _iam_event("GetRole", naming.OWNER_SIGNER_ROLE), set()),
    (
        "UpdateAlias re-points the seal alias to another key",
        _alias_event("UpdateAlias", naming.SEAL_KEY_ALIAS, OTHER_KEY),
        {"KeyStateOrAliasChanged"},
    ),
    (
        "UpdateAlias re-points the owner alias to another key",
        _alias_event("UpdateAlias", naming.OWNER_KEY_ALIAS, OTHER_KEY),
        {"KeyStateOrAliasChanged"},
    ),
    (
        "DeleteAlias of the owner alias",
        _alias_event("DeleteAlias", naming.OWNER_KEY_ALIAS, OWNER),
        {"KeyStateOrAliasChanged"},
    ),
    (
        "DeleteAlias of the seal alias",
        _alias_event("DeleteAlias", naming.SEAL_KEY_ALIAS, SEAL),
        {"KeyStateOrAliasChanged"},
    ),
    (
        "CreateAlias re-creating the seal alias on another key",
        _alias_event("CreateAlias", naming.SEAL_KEY_ALIAS, OTHER_KEY),
        {"KeyStateOrAliasChanged"},
    ),
    ("Sign with the owner key", _kms_event("Sign", OWNER), {"OwnerKeyUsed"}),
    (
        "Decrypt of the seal key refused",
        _kms_event("Decrypt", SEAL, errorCode="AccessDenied", errorMessage="denied"),
        {"RefusedAttestedUnwrap"},
    ),
    (
        "GenerateRandom by the host role refused (no key in resources)",
        _kms_event("GenerateRandom", errorCode="AccessDenied", userIdentity=HOST_SESSION),
        {"RefusedAttestedUnwrap"},
    ),
    # Unrelated events: nothing fires.
    ("UpdateAlias of an unrelated alias", _alias_event("UpdateAlias", "alias/someone-else", OTHER_KEY), set()),
    ("PutKeyPolicy on an unrelated key", _kms_event("PutKeyPolicy", OTHER_KEY), set()),
    ("Sign with an unrelated key", _kms_event("Sign", OTHER_KEY), set()),
    ("successful Decrypt with the seal key", _kms_event("Decrypt", SEAL), set()),
    ("DescribeKey of the owner key", _kms_event("DescribeKey", OWNER), set()),
    (
        "an S3 write",
        {"eventSource": "s3.amazonaws.com", "eventName": "PutObject", "resources": [{"ARN": "arn:aws:s3:::b/k"}]},
        set(),
    ),
]


@pytest.mark.parametrize(("event", "fires"), [(e, f) for _, e, f in CASES], ids=[c[0] for c in CASES])
def test_each_alarm_fires_on_exactly_its_events(
    patterns: dict[str, str], event: dict[str, Any], fires: set[str]
) -> None:
    assert set(patterns) == {
        "OwnerKeyUsed",
        "RefusedAttestedUnwrap",
        "KeyPolicyChanged",
        "KeyStateOrAliasChanged",
        "WaiaasRoleChanged",
    }
    fired = {name for name, pattern in patterns.items() if matches(pattern, event)}
    assert fired == fires


def test_patterns_fit_cloudwatch_limit(patterns: dict[str, str]) -> None:
    for name, pattern in patterns.items():
        assert len(pattern) <= MAX_PATTERN_CHARS, name


# -- the evaluator itself: exact on its subset, refuses the rest ----------------------------------------------------


def test_evaluator_semantics() -> None:
    event = {"a": "x", "list": [{"ARN": "k1"}, {"ARN": "k2"}], "n": 5, "code": "AccessDeniedException"}
    assert matches('{ $.a = "x" }', event)
    assert not matches('{ $.a = "X" }', event)
    assert matches('{ $.list[1].ARN = "k2" }', event)
    assert not matches('{ $.list[0].ARN = "k2" }', event)
    assert not matches('{ $.list[2].ARN = "k2" }', event)  # past the end
    assert not matches('{ $.missing = "x" }', event)
    assert not matches('{ $.n = "5" }', event)  # not a string
    assert matches('{ $.code = "AccessDenied*" }', event)
    assert not matches('{ $.code = "Denied*" }', event)
    assert matches('{ ($.a = "x") && (($.a = "y") || ($.n = "5") || ($.list[0].ARN = "k1")) }', event)
    assert not matches('{ ($.a = "x") && (($.a = "y") || ($.n = "5")) }', event)


@pytest.mark.parametrize(
    "pattern",
    [
        '$.a = "x"',  # not a JSON pattern
        '{ $.a = "x" && $.b = "y" || $.c = "z" }',  # mixed without parentheses
        '{ $.a != "x" }',
        "{ $.a = 5 }",
        '{ $.a = "x*y" }',
        '{ ($.a = "x" }',
        '{ $.a = "x" $.b = "y" }',
        '{ $.a = "x\\"" }',
        "{ $.a IS NULL }",
    ],
)
def test_evaluator_refuses_syntax_outside_its_subset(pattern: str) -> None:
    with pytest.raises(PatternError, match=r"."):
        matches(pattern, {"a": "x", "b": "y", "c": "z"})
