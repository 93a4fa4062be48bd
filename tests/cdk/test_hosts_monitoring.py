"""Enclave hosts (launch template, boot script, load balancer) and monitoring (alarms, topic, trail)."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Match

from cdk import naming, user_data
from enclave_app.constants import KMS_VSOCK_PROXY_PORT, PROXY_HTTP_PORT
from tests.cdk.boot_script import HOSTS, SIGNAL, boot_script, launch_data
from tests.cdk.conftest import PCR0, PCR8
from tests.cdk.policy_walk import resources_of_type

MONITORING = "WaiaasMonitoring"
NOT_FOUND = {"error": {"code": "not_found", "message": "not found"}}
"""The proxy's answer to a path it does not have (tests/proxy/test_metrics_access.py checks it)."""


def test_launch_template_enclaves_imdsv2_encrypted_no_ssh(template_of: Any, templates: dict[str, Any]) -> None:
    template_of(HOSTS).has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {
            "LaunchTemplateData": Match.object_like(
                {
                    "EnclaveOptions": {"Enabled": True},
                    "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
                    "BlockDeviceMappings": [Match.object_like({"Ebs": Match.object_like({"Encrypted": True})})],
                    "InstanceType": "m6i.xlarge",
                }
            )
        },
    )
    data = launch_data(templates)
    assert "KeyName" not in data
    assert "NetworkInterfaces" not in data  # no public address association
    for mapping in data["BlockDeviceMappings"]:
        assert mapping["Ebs"]["Encrypted"] is True


def test_boot_script_configures_allocator_from_context(templates: dict[str, Any], config: Any) -> None:
    script = boot_script(templates)
    assert f"memory_mib: {config.enclave_memory_mib}\ncpu_count: {config.enclave_cpu_count}\n" in script
    assert "dnf install -y aws-nitro-enclaves-cli" in script
    assert "systemctl enable --now nitro-enclaves-allocator.service" in script


def test_boot_script_vsock_proxy_allows_kms_only(templates: dict[str, Any]) -> None:
    script = boot_script(templates)
    allowlist = re.search(r"allowlist:\n((?:- .*\n)+)", script)
    assert allowlist is not None
    assert allowlist.group(1) == "- {address: kms.eu-west-1.amazonaws.com, port: 443}\n"
    assert f"vsock-proxy {KMS_VSOCK_PROXY_PORT} kms.eu-west-1.amazonaws.com 443" in script
    assert "systemctl disable --now nitro-enclaves-vsock-proxy.service" in script


def test_boot_script_checks_measurements_before_running_the_enclave(templates: dict[str, Any]) -> None:
    script = boot_script(templates)
    assert f"!= {PCR0} ]; then" in script
    assert f"!= {PCR8} ]; then" in script
    assert "ExecStartPre=/opt/waiaas/check-eif.sh" in script
    check = script.index("nitro-cli describe-eif")
    run = script.index("nitro-cli run-enclave")
    assert check < run
    assert "--debug-mode" not in script and "--attach-console" not in script
    assert "ExecStart=/opt/waiaas/venv/bin/python -m parent_proxy" in script
    assert "Restart=on-failure" in script


def test_unsigned_image_boot_script_has_no_pcr8_check() -> None:
    from cdk.synth import example_config

    script = user_data.render(example_config(pcr0=PCR0, pcr8=None), signal=SIGNAL)
    assert "PCR0" in script and "PCR8" not in script


def test_hosts_run_in_isolated_subnets_with_elb_health_checks(template_of: Any, config: Any) -> None:
    template_of(HOSTS).has_resource_properties(
        "AWS::AutoScaling::AutoScalingGroup",
        {
            "MinSize": str(config.host_count),
            "HealthCheckType": "ELB",
            "NotificationConfigurations": [Match.object_like({"TopicARN": Match.any_value()})],
            "Tags": Match.array_with([{"Key": "waiaas:role", "PropagateAtLaunch": True, "Value": "enclave-host"}]),
        },
    )


def test_load_balancer_is_internal_tls_only(template_of: Any, config: Any) -> None:
    template = template_of(HOSTS)
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {
            "Scheme": "internal",
            "LoadBalancerAttributes": Match.array_with(
                [
                    {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"},
                    {"Key": "access_logs.s3.enabled", "Value": "true"},
                ]
            ),
        },
    )
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {
            "Protocol": "HTTPS",
            "Port": 443,
            "SslPolicy": Match.string_like_regexp("TLS13"),
            "Certificates": [{"CertificateArn": config.certificate_arn}],
        },
    )
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup", {"Port": PROXY_HTTP_PORT, "HealthCheckPath": "/healthz"}
    )


def test_load_balancer_answers_404_for_metrics_itself(templates: dict[str, Any], template_of: Any) -> None:
    """``/metrics`` (every wallet's decision and approval counters) is not forwarded to the proxies: one listener
    rule, evaluated before the default forward, answers the proxy's own 404 body for it. Before: no rule, so any
    client the load balancer admits read the counters of all tenants."""
    (listener_id,) = resources_of_type(templates[HOSTS], "AWS::ElasticLoadBalancingV2::Listener")
    template_of(HOSTS).has_resource_properties(
        "AWS::ElasticLoadBalancingV2::ListenerRule",
        {
            "ListenerArn": {"Ref": listener_id},
            "Priority": 1,
            "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/metrics", "/metrics/*"]}}],
            "Actions": [
                {
                    "Type": "fixed-response",
                    "FixedResponseConfig": {
                        "StatusCode": "404",
                        "ContentType": "application/json",
                        "MessageBody": json.dumps(NOT_FOUND, separators=(",", ":")),
                    },
                }
            ],
        },
    )
    (rule,) = resources_of_type(templates[HOSTS], "AWS::ElasticLoadBalancingV2::ListenerRule").values()
    assert rule["Properties"]["Actions"][0]["Type"] == "fixed-response"  # the only rule; no forward of /metrics


def test_ingress_only_from_allowed_client_networks(templates: dict[str, Any], config: Any) -> None:
    cidrs = []
    for template in templates.values():
        for group in resources_of_type(template, "AWS::EC2::SecurityGroup").values():
            for rule in group["Properties"].get("SecurityGroupIngress", []):
                cidrs.append(rule.get("CidrIp"))
                assert "CidrIpv6" not in rule
        for rule in resources_of_type(template, "AWS::EC2::SecurityGroupIngress").values():
            # The hosts admit the load balancer's security group, never an address range.
            assert "SourceSecurityGroupId" in rule["Properties"]
            assert rule["Properties"]["FromPort"] == PROXY_HTTP_PORT
    assert "0.0.0.0/0" not in cidrs
    assert set(cidrs) == {*config.allowed_client_cidrs, config.vpc_cidr}


def test_hosts_let_out_https_only(templates: dict[str, Any]) -> None:
    """The hosts' only way out is HTTPS (endpoints, RPC, webhooks); before, their group let everything out."""
    groups = resources_of_type(templates[HOSTS], "AWS::EC2::SecurityGroup")
    (host_group,) = [g for g in groups.values() if "enclave hosts" in g["Properties"]["GroupDescription"]]
    assert host_group["Properties"]["SecurityGroupEgress"] == [
        {"CidrIp": "0.0.0.0/0", "Description": "HTTPS out", "FromPort": 443, "IpProtocol": "tcp", "ToPort": 443}
    ]
    for template in templates.values():
        for rule in resources_of_type(template, "AWS::EC2::SecurityGroupEgress").values():
            assert "DestinationSecurityGroupId" in rule["Properties"], rule  # group to group only


def _alarm_on(templates: dict[str, Any], stack: str, metric_name: str) -> dict[str, Any]:
    alarms: list[dict[str, Any]] = [
        a["Properties"]
        for a in resources_of_type(templates[stack], "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == metric_name
    ]
    assert len(alarms) == 1, metric_name
    return alarms[0]


def test_alarm_on_owner_key_use(templates: dict[str, Any], template_of: Any) -> None:
    alarm = _alarm_on(templates, MONITORING, "OwnerKeyUsed")
    assert alarm["Threshold"] == 1 and alarm["AlarmActions"]
    (metric_filter,) = [
        f["Properties"]
        for f in resources_of_type(templates[MONITORING], "AWS::Logs::MetricFilter").values()
        if f["Properties"]["MetricTransformations"][0]["MetricName"] == "OwnerKeyUsed"
    ]
    pattern = str(metric_filter["FilterPattern"])
    assert '$.eventName = "Sign"' in pattern and "OwnerKey" in pattern  # the owner key's exported ARN


def test_alarm_on_refused_attested_unwrap(templates: dict[str, Any]) -> None:
    alarm = _alarm_on(templates, MONITORING, "RefusedAttestedUnwrap")
    assert alarm["Threshold"] == 1 and alarm["AlarmActions"]
    (metric_filter,) = [
        f["Properties"]
        for f in resources_of_type(templates[MONITORING], "AWS::Logs::MetricFilter").values()
        if f["Properties"]["MetricTransformations"][0]["MetricName"] == "RefusedAttestedUnwrap"
    ]
    pattern = str(metric_filter["FilterPattern"])
    assert '$.errorCode = "AccessDenied*"' in pattern and '$.eventName = "Decrypt"' in pattern
    assert naming.ENCLAVE_HOST_ROLE in pattern


@pytest.mark.parametrize(
    ("metric", "high_severity"),
    [("KeyPolicyChanged", True), ("WaiaasRoleChanged", True), ("KeyStateOrAliasChanged", False)],
)
def test_alarms_on_key_and_role_changes(templates: dict[str, Any], metric: str, high_severity: bool) -> None:
    """A replaced key policy (or a rewritten WAIaaS role) is its own alarm, marked for one-by-one investigation."""
    alarm = _alarm_on(templates, MONITORING, metric)
    assert alarm["AlarmActions"] and alarm["Threshold"] == 1
    assert alarm["AlarmDescription"].startswith("HIGH SEVERITY: ") is high_severity


def test_alarms_on_enclave_health(templates: dict[str, Any], config: Any) -> None:
    heartbeat = _alarm_on(templates, HOSTS, naming.ENCLAVE_HEALTH_METRIC)
    assert heartbeat["Namespace"] == naming.METRIC_NAMESPACE
    assert heartbeat["TreatMissingData"] == "breaching"
    assert heartbeat["ComparisonOperator"] == "LessThanThreshold" and heartbeat["AlarmActions"]
    healthy = _alarm_on(templates, HOSTS, "HealthyHostCount")
    assert healthy["Threshold"] == config.host_count and healthy["AlarmActions"]


def test_trail_logs_management_events_with_validation(template_of: Any, config: Any) -> None:
    template_of(MONITORING).has_resource_properties(
        "AWS::CloudTrail::Trail",
        {
            "TrailName": naming.TRAIL,
            "S3BucketName": naming.logs_bucket_name(config),
            "EnableLogFileValidation": True,
            "IsLogging": True,
            # IAM (a global service) reaches only trails that include us-east-1: a single-Region trail elsewhere
            # would never record a change to the owner roles' trust policies.
            "IsMultiRegionTrail": True,
            "IncludeGlobalServiceEvents": True,
            "CloudWatchLogsLogGroupArn": Match.any_value(),
        },
    )


def test_alarm_topic_is_encrypted_and_tls_only(template_of: Any) -> None:
    template = template_of(MONITORING)
    template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            }
        },
    )


def test_boot_script_is_base64_encodable(templates: dict[str, Any]) -> None:
    # CloudFormation caps user data at 16 KiB once base64-encoded.
    assert len(base64.b64encode(boot_script(templates).encode())) < 16 * 1024
