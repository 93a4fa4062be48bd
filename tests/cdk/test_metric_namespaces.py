"""Which CloudWatch metrics the hosts can write, and which alarms could therefore be steered by a taken-over host.

The host role may `PutMetricData` (for its enclave heartbeat) under a namespace condition. Every metric a metric
filter counts (the key-use alarms from CloudTrail, the audit-export alarms from the proxy log group) must be outside
what that condition admits: a host could otherwise publish `AuditExportSucceeded` itself and keep `AuditExportStale`
quiet, or publish large negative values and keep a `Sum >= 1` alarm such as `RefusedAttestedUnwrap` quiet. The
namespaces are read from the templates and evaluated against the synthesized role policy, not listed here.
"""

from __future__ import annotations

import re
from typing import Any

from cdk import naming
from tests.cdk.boot_script import boot_script
from tests.cdk.policy_walk import allows, resources_of_type, role_statements

IDENTITY = "WaiaasIdentity"


def _host_statements(templates: dict[str, Any]) -> list[dict[str, Any]]:
    return role_statements(templates[IDENTITY], naming.ENCLAVE_HOST_ROLE)


def _host_may_write(templates: dict[str, Any], config: Any, namespace: str) -> bool:
    context = {"cloudwatch:namespace": namespace, "aws:PrincipalAccount": config.account}
    return allows(_host_statements(templates), action="cloudwatch:PutMetricData", resource="*", context=context)


def _filter_namespaces(templates: dict[str, Any]) -> dict[str, str]:
    """Metric name -> namespace of every metric filter of the app."""
    return {
        t["MetricName"]: t["MetricNamespace"]
        for template in templates.values()
        for f in resources_of_type(template, "AWS::Logs::MetricFilter").values()
        for t in f["Properties"]["MetricTransformations"]
    }


def test_the_heartbeat_namespace_is_one_the_host_may_write(templates: dict[str, Any], config: Any) -> None:
    """The guard on the test below: the evaluation does admit what the boot script publishes."""
    script = boot_script(templates).replace("\\\n", "")
    (namespace,) = re.findall(r"aws cloudwatch put-metric-data --namespace (\S+)", script)
    assert _host_may_write(templates, config, namespace)


def test_no_metric_filter_counts_into_a_namespace_the_host_may_write(templates: dict[str, Any], config: Any) -> None:
    namespaces = _filter_namespaces(templates)
    assert {"AuditExportSucceeded", "AuditExportFailed", "RefusedAttestedUnwrap", "OwnerKeyUsed"} <= set(namespaces)
    writable = {metric: ns for metric, ns in namespaces.items() if _host_may_write(templates, config, ns)}
    assert writable == {}


def test_only_the_heartbeat_alarm_reads_a_metric_the_hosts_write(templates: dict[str, Any], config: Any) -> None:
    """Alarms on host-written metrics can only be as honest as the hosts: the heartbeat is the one such alarm, by
    design (a host reports its own enclave)."""
    on_host_metrics = [
        a["Properties"]["MetricName"]
        for template in templates.values()
        for a in resources_of_type(template, "AWS::CloudWatch::Alarm").values()
        if "Namespace" in a["Properties"] and _host_may_write(templates, config, a["Properties"]["Namespace"])
    ]
    assert on_host_metrics == [naming.ENCLAVE_HEALTH_METRIC]
