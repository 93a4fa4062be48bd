"""Alarms on the audit export: metric filters on the hosts' proxy log group (where the export unit's output goes),
evaluated on the lines ``waiaas audit export`` really prints down each of its paths, and their alarms to the alarm
topic. Expectations are written out here (the group, the timer's interval read from the boot script), not imported
from `cdk`.

Before: no metric filter or alarm looked at the export's lines; a FAILED export or exports that had stopped went
unnoticed until someone ran ``waiaas audit verify --exports``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.cdk.boot_script import HOSTS, agent_config, boot_script, unit_file
from tests.cdk.filter_pattern import PatternError, matches_text
from tests.cdk.policy_walk import find_one, resources_of_type
from tests.support.audit_export_runs import Printed, every_path

PROXY_GROUP = "/waiaas/proxy"
PROXY_LOG = "/var/log/waiaas/proxy.log"
EXPORT_UNIT = "/etc/systemd/system/waiaas-audit-export.service"
EXPORT_TIMER = "/etc/systemd/system/waiaas-audit-export.timer"
NAMESPACE = "WAIaaS/AuditExport"
"""Not the hosts' own namespace (`WAIaaS`), which the host role may write (test_metric_namespaces.py)."""
PROXY_LINES = [
    "2025-01-01 12:00:00,000 WARNING parent_proxy.webhooks: webhook e1 attempt 2 failed: HTTP 500",
    "2025-01-01 12:00:00,000 ERROR parent_proxy.app: unexpected error: ValueError",
    "2025-01-01 12:00:00,000 INFO uvicorn.error: Application startup complete.",
]
"""Lines of the proxy's own logging format, which share the log group: they match neither filter."""


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> list[Printed]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return every_path(Path(tmp_path_factory.mktemp("runs")), monkeypatch)


def _filter(templates: dict[str, Any], metric: str) -> dict[str, Any]:
    found: dict[str, Any]
    (found,) = [
        f["Properties"]
        for f in resources_of_type(templates[HOSTS], "AWS::Logs::MetricFilter").values()
        if f["Properties"]["MetricTransformations"][0]["MetricName"] == metric
    ]
    return found


def _alarm(templates: dict[str, Any], metric: str) -> dict[str, Any]:
    found: dict[str, Any]
    (found,) = [
        a["Properties"]
        for a in resources_of_type(templates[HOSTS], "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == metric
    ]
    return found


def _timer_minutes(templates: dict[str, Any]) -> int:
    timer = unit_file(boot_script(templates), EXPORT_TIMER)
    (minutes,) = re.findall(r"^OnUnitActiveSec=([0-9]+)min$", timer, re.MULTILINE)
    return int(minutes)


@pytest.mark.parametrize("metric", ["AuditExportFailed", "AuditExportSucceeded"])
def test_the_filters_count_lines_of_the_group_the_export_unit_writes_to(templates: dict[str, Any], metric: str) -> None:
    script = boot_script(templates)
    unit = unit_file(script, EXPORT_UNIT)
    for stream in ("StandardOutput", "StandardError"):  # OK lines go to stdout, FAILED and ERROR to stderr
        assert re.findall(rf"^{stream}=(\S+)$", unit, re.MULTILINE) == [f"append:{PROXY_LOG}"]
    _, agent = agent_config(script)
    shipped = {e["file_path"]: e["log_group_name"] for e in agent["logs"]["logs_collected"]["files"]["collect_list"]}
    assert shipped[PROXY_LOG] == PROXY_GROUP
    group_id, _ = find_one(templates[HOSTS], "AWS::Logs::LogGroup", LogGroupName=PROXY_GROUP)
    metric_filter = _filter(templates, metric)
    assert metric_filter["LogGroupName"] == {"Ref": group_id}
    assert metric_filter["MetricTransformations"] == [
        {"MetricName": metric, "MetricNamespace": NAMESPACE, "MetricValue": "1"}
    ]


def test_the_failed_filter_matches_each_failed_line_and_no_other(
    templates: dict[str, Any], printed: list[Printed]
) -> None:
    pattern = _filter(templates, "AuditExportFailed")["FilterPattern"]
    failed = [run for run in printed if run.code == 1]
    assert {run.case for run in failed} == {"log cut short", "history rewritten",
                                            "another object under the export's name"}  # fmt: skip
    for run in printed:
        for line in run.out + run.err:
            assert matches_text(pattern, line) is (run.code == 1), (run.case, line)
    assert not any(matches_text(pattern, line) for line in PROXY_LINES)


def test_the_ok_filter_matches_the_ok_line_of_each_run_that_succeeds_and_no_other(
    templates: dict[str, Any], printed: list[Printed]
) -> None:
    pattern = _filter(templates, "AuditExportSucceeded")["FilterPattern"]
    assert {run.code for run in printed} == {0, 1, 2}
    for run in printed:
        assert [matches_text(pattern, line) for line in run.out] == [run.code == 0] * len(run.out), run
        assert not any(matches_text(pattern, line) for line in run.err), run  # no FAILED, ERROR or WARNING line
    assert sum(len(run.out) for run in printed if run.code == 0) == 5
    assert not any(matches_text(pattern, line) for line in PROXY_LINES)


def test_the_pattern_evaluator_refuses_what_it_does_not_know() -> None:
    for pattern in ('"a" "b"', "audit export", '{ $.x = "a" }', '"a\\"b"', '""'):
        with pytest.raises(PatternError):
            matches_text(pattern, "a")


def test_a_failed_export_alarms_at_once(templates: dict[str, Any]) -> None:
    alarm = _alarm(templates, "AuditExportFailed")
    assert alarm["Namespace"] == NAMESPACE and alarm["Statistic"] == "Sum"
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1
    assert alarm["EvaluationPeriods"] == 1 and alarm["Period"] <= 300
    assert alarm["TreatMissingData"] == "notBreaching"
    assert "waiaas audit verify --exports" in alarm["AlarmDescription"]
    # To the alarm topic, as the enclave-health alarms of the same stack.
    assert alarm["AlarmActions"] == _alarm(templates, "EnclaveHealthy")["AlarmActions"] != []


def test_an_hour_without_a_successful_export_alarms(templates: dict[str, Any]) -> None:
    alarm = _alarm(templates, "AuditExportSucceeded")
    minutes = _timer_minutes(templates)
    assert minutes == 15
    assert alarm["Namespace"] == NAMESPACE and alarm["Statistic"] == "Sum"
    assert alarm["ComparisonOperator"] == "LessThanThreshold" and alarm["Threshold"] == 1
    # Each period is one timer interval; every one of four in a row without an OK line: an hour.
    assert alarm["Period"] == minutes * 60
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 4
    assert alarm["Period"] * alarm["EvaluationPeriods"] == 3600
    assert alarm["TreatMissingData"] == "breaching"  # no line at all (hosts down, agent stopped) is no export
    topic = _alarm(templates, "EnclaveHealthy")["AlarmActions"]
    assert alarm["AlarmActions"] == alarm["OKActions"] == topic != []
