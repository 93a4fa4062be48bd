"""The alarm topic's policy, evaluated for every publisher the synthesized app points at the topic.

An `AWS::SNS::TopicPolicy` replaces SNS's default policy, so whoever publishes must be named in it: CloudWatch (a
service principal, which no identity policy of the account covers) for every alarm action, and Auto Scaling's
service-linked role for the group's notifications. The publishers are found in the templates (alarm actions,
notification configurations), not listed here, so a new alarm or a new stack pointing at the topic is covered.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any

import pytest

from tests.cdk.policy_walk import as_list, resources_of_type

MONITORING = "WaiaasMonitoring"
AUTOSCALING_ROLE = "arn:aws:iam::{account}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
OTHER_ACCOUNT = "222222222222"


def _topic(templates: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(logical id, policy document) of the one topic and its one policy."""
    monitoring = templates[MONITORING]
    (topic_id,) = resources_of_type(monitoring, "AWS::SNS::Topic")
    (policy,) = resources_of_type(monitoring, "AWS::SNS::TopicPolicy").values()
    assert policy["Properties"]["Topics"] == [{"Ref": topic_id}]
    document: dict[str, Any] = policy["Properties"]["PolicyDocument"]
    return topic_id, document


def _is_topic(templates: dict[str, Any], reference: Any, topic_id: str) -> bool:
    """Whether a template value names the topic: a Ref in its own stack, or an import of its export."""
    if reference == {"Ref": topic_id}:
        return True
    if isinstance(reference, dict) and set(reference) == {"Fn::ImportValue"}:
        outputs = templates[MONITORING].get("Outputs", {}).values()
        exported = {o["Export"]["Name"]: o["Value"] for o in outputs if "Export" in o}
        return exported.get(reference["Fn::ImportValue"]) == {"Ref": topic_id}
    return False


def _publishers(templates: dict[str, Any], topic_id: str) -> tuple[list[str], list[str]]:
    """(alarms, auto scaling groups) whose actions or notifications go to the topic, as stack/logical id."""
    alarms, groups = [], []
    for stack, template in templates.items():
        for alarm_id, alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").items():
            props = alarm["Properties"]
            targets = [*props.get("AlarmActions", []), *props.get("OKActions", [])]
            targets += props.get("InsufficientDataActions", [])
            if any(_is_topic(templates, t, topic_id) for t in targets):
                alarms.append(f"{stack}/{alarm_id}")
        for group_id, group in resources_of_type(template, "AWS::AutoScaling::AutoScalingGroup").items():
            configs = group["Properties"].get("NotificationConfigurations", [])
            if any(_is_topic(templates, c["TopicARN"], topic_id) for c in configs):
                groups.append(f"{stack}/{group_id}")
    return alarms, groups


def _matches(operator: str, expected: object, actual: str | None) -> bool:
    if actual is None:
        return False
    if operator == "StringEquals":
        return actual in as_list(expected)
    if operator == "ArnLike":
        return any(fnmatchcase(actual, pattern) for pattern in as_list(expected))
    if operator == "Bool":
        return actual == expected
    raise AssertionError(f"teach this evaluator the condition operator {operator}")


def _decide(document: dict[str, Any], *, principal: dict[str, str], action: str, context: dict[str, str]) -> str:
    """`allow`, `deny` or `none` (no statement applies: SNS refuses) for one request against the topic. Knows the
    constructs the policy uses (Allow and Deny, `*`, Service and AWS principals, StringEquals, ArnLike, Bool) and
    refuses anything else, so a new construct must be taught here before it can pass."""
    decision = "none"
    for statement in document["Statement"]:
        assert set(statement) <= {"Sid", "Effect", "Principal", "Action", "Resource", "Condition"}, statement
        named = statement["Principal"]
        if named != "*":
            assert set(named) <= {"Service", "AWS"}, named
            if not any(value in as_list(named.get(kind, [])) for kind, value in principal.items()):
                continue
        if not any(fnmatchcase(action.lower(), a.lower()) for a in as_list(statement["Action"])):
            continue
        conditions = statement.get("Condition", {})
        if not all(_matches(op, v, context.get(k)) for op, keys in conditions.items() for k, v in keys.items()):
            continue
        if statement["Effect"] == "Deny":
            return "deny"
        decision = "allow"
    return decision


def _alarm_arn(config: Any, name: str, *, account: str | None = None) -> str:
    return f"arn:aws:cloudwatch:{config.region}:{account or config.account}:alarm:{name}"


def test_every_alarm_and_group_of_the_app_publishes_to_the_topic(templates: dict[str, Any]) -> None:
    """The publishers the other tests evaluate: the alarms of both stacks and the group (a guard on the walk)."""
    topic_id, _ = _topic(templates)
    alarms, groups = _publishers(templates, topic_id)
    assert {a.split("/")[0] for a in alarms} == {MONITORING, "WaiaasEnclaveHosts"}
    assert len(alarms) >= 9 and len(groups) == 1


def test_cloudwatch_may_publish_for_every_alarm_of_the_app(templates: dict[str, Any], config: Any) -> None:
    topic_id, document = _topic(templates)
    alarms, _ = _publishers(templates, topic_id)
    for alarm in alarms:
        context = {
            "aws:SourceAccount": config.account,
            "aws:SourceArn": _alarm_arn(config, alarm.replace("/", "-")),  # alarm names are generated per stack
            "aws:SecureTransport": "true",
        }
        assert (
            _decide(document, principal={"Service": "cloudwatch.amazonaws.com"}, action="SNS:Publish", context=context)
            == "allow"
        ), alarm


def test_auto_scaling_may_publish_the_groups_notifications(templates: dict[str, Any], config: Any) -> None:
    _, document = _topic(templates)
    role = AUTOSCALING_ROLE.format(account=config.account)
    context = {"aws:SecureTransport": "true"}
    assert _decide(document, principal={"AWS": role}, action="sns:Publish", context=context) == "allow"


def _refused(config: Any) -> dict[str, tuple[dict[str, str], dict[str, str], str]]:
    """(principal, request context, decision) of publishes the policy must not let through."""
    cloudwatch = {"Service": "cloudwatch.amazonaws.com"}
    own = {"aws:SourceAccount": config.account, "aws:SourceArn": _alarm_arn(config, "x"), "aws:SecureTransport": "true"}
    return {
        # CloudWatch acting for another account's alarm (the confused deputy), or for an alarm in another Region.
        "other-account-alarm": (
            cloudwatch,
            {
                **own,
                "aws:SourceAccount": OTHER_ACCOUNT,
                "aws:SourceArn": _alarm_arn(config, "x", account=OTHER_ACCOUNT),
            },
            "none",
        ),
        "other-region-alarm": (
            cloudwatch,
            {**own, "aws:SourceArn": f"arn:aws:cloudwatch:us-east-1:{config.account}:alarm:x"},
            "none",
        ),
        "no-source": (cloudwatch, {"aws:SecureTransport": "true"}, "none"),
        # Without TLS even the alarms are refused.
        "plain-http": (cloudwatch, {**own, "aws:SecureTransport": "false"}, "deny"),
        # Any other service principal or role of the account: not by this policy.
        "other-service": ({"Service": "events.amazonaws.com"}, own, "none"),
        "host-role": ({"AWS": f"arn:aws:iam::{config.account}:role/waiaas-enclave-host"}, own, "none"),
    }


REFUSED = ["other-account-alarm", "other-region-alarm", "no-source", "plain-http", "other-service", "host-role"]


@pytest.mark.parametrize("case", REFUSED)
def test_nothing_else_is_let_publish(templates: dict[str, Any], config: Any, case: str) -> None:
    _, document = _topic(templates)
    principal, context, expected = _refused(config)[case]
    assert _decide(document, principal=principal, action="sns:Publish", context=context) == expected


def test_the_policy_keeps_the_tls_deny_for_everyone(templates: dict[str, Any]) -> None:
    _, document = _topic(templates)
    denies = [s for s in document["Statement"] if s["Effect"] == "Deny"]
    assert denies and all(s["Principal"] == "*" for s in denies), json.dumps(denies)
    assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies)
