"""Host logs: which files on an enclave host reach which CloudWatch Logs group, and what that takes.

    waiaas-proxy.service    stdout + stderr --> /var/log/waiaas/proxy.log    --agent--> /waiaas/proxy
    waiaas-audit-export     stdout + stderr --> /var/log/waiaas/proxy.log    (alarms on its lines: audit_export_alarms)
    waiaas-enclave.service  stdout + stderr --> /var/log/waiaas/enclave.log  --agent--> /waiaas/enclave
    (the image check's refusals, `nitro-cli run-enclave`/`terminate-enclave` output; a production enclave has no
    console, so this is all the enclave side leaves on the host)

- systemd opens the files (as root, before it drops to the service's user), so the proxy user needs no write access
  to /var/log; the files are root-owned, readable by the agent's group only.
- The Amazon CloudWatch agent (package `amazon-cloudwatch-agent` from the Amazon Linux 2023 repositories) runs as
  the `cwagent` user its package creates, ships exactly these files, one stream per instance id, over the VPC's
  CloudWatch Logs endpoint. It neither creates groups nor sets retention: the hosts stack owns both.
- logrotate, hourly, truncates in place (`copytruncate`: the services hold their files open) past `ROTATE_SIZE`,
  keeping `ROTATE_KEEP` compressed copies, which the agent does not read.

What the files hold: the proxy logs event ids, wallet ids, exception types and its own error messages, never
request bodies, tokens or keys (uvicorn's access log is off); nothing here adds to that.
"""

from __future__ import annotations

import json

from cdk import naming
from cdk.config import DeploymentConfig

LOG_DIR = "/var/log/waiaas"
SERVICE_LOGS = ("proxy", "enclave")
"""One log file and one log group per service, by the same name."""
LOG_FILES = {service: f"{LOG_DIR}/{service}.log" for service in SERVICE_LOGS}
LOG_GROUPS = {service: f"{naming.LOG_GROUP_PREFIX}{service}" for service in SERVICE_LOGS}

AGENT_USER = "cwagent"
"""Created by the agent's package; the agent runs as this user (`run_as_user`), not as root."""
AGENT_HOME = "/opt/aws/amazon-cloudwatch-agent"
AGENT_CTL = f"{AGENT_HOME}/bin/amazon-cloudwatch-agent-ctl"
AGENT_CONFIG_PATH = f"{AGENT_HOME}/etc/waiaas-logs.json"
AGENT_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams")
"""What AWS documents the agent needing to write to existing log groups; creating groups and retention are not."""

LOGROTATE_CONFIG_PATH = "/etc/waiaas/logrotate.conf"
ROTATE_SIZE = "50M"
ROTATE_KEEP = 5
"""Per file at most ~50 MiB live plus 5 compressed copies, checked hourly: a bound on a 30 GiB root volume."""


def agent_resource(config: DeploymentConfig, service: str) -> str:
    """The service's group as IAM names it for the agent's actions: `log-group:NAME:*`, which covers its streams."""
    return f"{naming.log_group_arn(config, LOG_GROUPS[service])}:*"


def agent_config() -> str:
    """The agent's JSON configuration: these files, these groups, a stream per instance, and nothing else."""
    collect = [
        {"file_path": LOG_FILES[s], "log_group_name": LOG_GROUPS[s], "log_stream_name": "{instance_id}"}
        for s in SERVICE_LOGS
    ]
    config = {"agent": {"run_as_user": AGENT_USER}, "logs": {"logs_collected": {"files": {"collect_list": collect}}}}
    return json.dumps(config, indent=2)


def logrotate_config() -> str:
    files = " ".join(LOG_FILES[s] for s in SERVICE_LOGS)
    return f"""{files} {{
size {ROTATE_SIZE}
rotate {ROTATE_KEEP}
copytruncate
compress
missingok
notifempty
}}"""
