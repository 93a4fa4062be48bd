"""Alarms on the audit export's lines in the proxy's log group: `waiaas-audit-export.service` writes its output to
the proxy's log file (`cdk.user_data`), which the CloudWatch agent ships to ``/waiaas/proxy`` (`cdk.host_logs`).

- `AuditExportFailed`: a line ``audit export: FAILED: ...`` (the command's exit 1) on any host: the log no longer
  holds the last export's head record (the history was rewritten or cut short since that export), the new records
  do not chain on, or the bucket holds an object under an export's name that is not that export or that the log
  contradicts (a key planted under ``audit/``, or an export of a history rewritten since: reported on every run that
  reads it, after the run's OK line when it still exported the new records past it; that is every run, except for
  keys below the last export among more overlapping keys than a run reads, which runs read in turn). Each is what
  ``waiaas audit verify --exports`` exists to catch; fires on the first line. Honest overlapping exports (two hosts
  that exported at once) never print it, however many: past what a run reads they are a ``WARNING`` line, which no
  filter counts.
- `AuditExportStale`: no line ``audit export: OK: ...`` from any host in `STALE_PERIODS` timer intervals in a row
  (an hour): every host's export fails (exit 2, ``ERROR``: the state table or the bucket unreachable or refusing;
  or exit 1), the hosts are down, or the timer stopped. A run with nothing new prints an OK line too, so a quiet
  log does not alarm; missing data is breaching. It tells that the records after the last export (which a parent
  can still rewrite unseen) have been piling up for an hour.

Both patterns are CloudWatch Logs quoted-term patterns: a log event (one line of the file) matches when it contains
the phrase, case-sensitively. The phrases are the command's markers (`parent_proxy.audit_export_cli.FAILED_MARKER`
and `OK_MARKER`, written out here: `cdk` imports no runtime code), and tests/cdk/test_audit_export_alarms.py
evaluates the synthesized filters on the lines the command prints on each of its paths.

The counts go to their own namespace (`naming.AUDIT_EXPORT_METRIC_NAMESPACE`), which the host role may not
`PutMetricData` into: only the filters write them. What a taken-over host can still do is write lines into the proxy
log group (the CloudWatch agent's `logs:PutLogEvents` on ``/waiaas/proxy``), OK lines among them: `AuditExportStale`
catches exports that fail or stop on honest hosts, it is no proof against a hostile one (docs/deploy.md).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from cdk import naming
from cdk.user_data import AUDIT_EXPORT_MINUTES

FAILED_PHRASE = "audit export: FAILED:"
OK_PHRASE = "audit export: OK:"
FAILED_METRIC = "AuditExportFailed"
OK_METRIC = "AuditExportSucceeded"
FAILED_PERIOD = Duration.minutes(5)
STALE_PERIODS = 4
"""Timer intervals without an OK line before `AuditExportStale` fires: with the timer's 15 minutes, an hour. Each
interval is a little longer than the timer's (its random delay, the run itself), so an hour of healthy runs holds at
least three OK lines, and no single slow run alarms."""


def phrase_pattern(phrase: str) -> str:
    """The quoted-term filter pattern of ``phrase`` (which holds no double quote or backslash)."""
    if '"' in phrase or "\\" in phrase:
        raise ValueError("a quoted term cannot hold a double quote or a backslash")
    return f'"{phrase}"'


class AuditExportAlarms(Construct):
    """Metric filters on the export's FAILED and OK lines in ``log_group``, and their alarms to ``notifications``."""

    def __init__(
        self, scope: Construct, construct_id: str, *, log_group: logs.ILogGroup, notifications: sns.ITopic
    ) -> None:
        super().__init__(scope, construct_id)
        action = cw_actions.SnsAction(notifications)
        failed = self._count(log_group, "Failed", FAILED_PHRASE, FAILED_METRIC)
        alarm = cloudwatch.Alarm(
            self,
            "Failed",
            alarm_description="An audit export FAILED on a WAIaaS host: the audit log contradicts the last export "
            "(rewritten or cut short since) or an object under an export's name is not that export; run waiaas audit "
            "verify --exports (docs/deploy.md, Audit exports)",
            metric=failed.metric(statistic="Sum", period=FAILED_PERIOD),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(action)
        succeeded = self._count(log_group, "Succeeded", OK_PHRASE, OK_METRIC)
        stale = cloudwatch.Alarm(
            self,
            "Stale",
            alarm_description=f"No WAIaaS host exported the audit log for {STALE_PERIODS * AUDIT_EXPORT_MINUTES} "
            "minutes: the records since the last export are not under object lock (docs/deploy.md, Audit exports)",
            metric=succeeded.metric(statistic="Sum", period=Duration.minutes(AUDIT_EXPORT_MINUTES)),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=STALE_PERIODS,
            datapoints_to_alarm=STALE_PERIODS,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )
        stale.add_alarm_action(action)
        stale.add_ok_action(action)

    def _count(self, log_group: logs.ILogGroup, construct_id: str, phrase: str, metric: str) -> logs.MetricFilter:
        return logs.MetricFilter(
            self,
            f"{construct_id}Lines",
            log_group=log_group,
            filter_pattern=logs.FilterPattern.literal(phrase_pattern(phrase)),
            metric_namespace=naming.AUDIT_EXPORT_METRIC_NAMESPACE,
            metric_name=metric,
            metric_value="1",
        )
