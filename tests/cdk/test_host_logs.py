"""Host logs reach CloudWatch Logs: the services write to files, the boot script configures and starts the CloudWatch
agent on exactly those files into exactly the hosts' two log groups, and the host role lets the agent do that and
nothing else in CloudWatch Logs. Expectations are written out here, not imported from `cdk`, so a change on
either side shows up.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.cdk.boot_script import HOSTS, agent_config, agent_requests, boot_script, heredoc, unit_file
from tests.cdk.policy_walk import allows, as_list, by_sid, resources_of_type, statements

IDENTITY = "WaiaasIdentity"
HOST_ROLE = "waiaas-enclave-host"
SHIPPED = {"/var/log/waiaas/proxy.log": "/waiaas/proxy", "/var/log/waiaas/enclave.log": "/waiaas/enclave"}
"""Every file the agent ships, and the group each goes to: nothing else on the host leaves it through the agent."""
UNIT_LOGS = {
    "/etc/systemd/system/waiaas-proxy.service": "/var/log/waiaas/proxy.log",
    "/etc/systemd/system/waiaas-enclave.service": "/var/log/waiaas/enclave.log",
}
AGENT_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"}
AGENT_CTL = "/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl"
INSTANCE = "i-0123456789abcdef0"


@pytest.fixture(scope="module")
def script(templates: dict[str, Any]) -> str:
    return boot_script(templates)


def _host_policy(templates: dict[str, Any]) -> dict[str, Any]:
    """The host role's inline policy holding its logs permissions (found by the role it is attached to)."""
    roles = resources_of_type(templates[IDENTITY], "AWS::IAM::Role")
    (host_role,) = [lid for lid, role in roles.items() if role["Properties"].get("RoleName") == HOST_ROLE]
    found = [
        policy["Properties"]["PolicyDocument"]
        for policy in resources_of_type(templates[IDENTITY], "AWS::IAM::Policy").values()
        if {"Ref": host_role} in policy["Properties"]["Roles"]
        and any(a.startswith("logs:") for s in statements(policy) for a in as_list(s["Action"]))
    ]
    assert len(found) == 1, found
    document: dict[str, Any] = found[0]
    return document


def test_agent_config_ships_exactly_the_service_logs_into_the_host_log_groups(
    templates: dict[str, Any], script: str
) -> None:
    _, config = agent_config(script)
    assert set(config) <= {"agent", "logs"}, "no metrics or traces section: the agent ships these logs only"
    assert set(config["logs"]) == {"logs_collected"}
    assert set(config["logs"]["logs_collected"]) == {"files"}
    entries = config["logs"]["logs_collected"]["files"]["collect_list"]
    assert {entry["file_path"]: entry["log_group_name"] for entry in entries} == SHIPPED
    assert len(entries) == len(SHIPPED)
    for entry in entries:
        # One stream per instance; no retention or group creation by the agent (the stack owns the groups).
        assert entry == {**entry, "log_stream_name": "{instance_id}"}
        assert set(entry) == {"file_path", "log_group_name", "log_stream_name"}, entry
    groups = {
        g["Properties"]["LogGroupName"] for g in resources_of_type(templates[HOSTS], "AWS::Logs::LogGroup").values()
    }
    assert groups == set(SHIPPED.values()), "the agent writes to the groups the hosts stack creates, and to no other"


def test_services_write_their_output_to_the_shipped_files(script: str) -> None:
    for unit_path, log_file in UNIT_LOGS.items():
        unit = unit_file(script, unit_path)
        assert re.findall(r"^StandardOutput=(.*)$", unit, re.MULTILINE) == [f"append:{log_file}"], unit_path
        assert re.findall(r"^StandardError=(.*)$", unit, re.MULTILINE) == [f"append:{log_file}"], unit_path
    assert set(UNIT_LOGS.values()) == set(SHIPPED)


def test_log_files_are_private_and_size_bounded(script: str) -> None:
    # Created before any unit starts: root-owned, readable by the agent's group only, never by the proxy user.
    for log_file in SHIPPED:
        assert re.search(rf"^install -m 0640 -o root -g cwagent /dev/null {re.escape(log_file)}$", script, re.M)
    assert re.search(r"^install -d -m 0750 -o root -g cwagent /var/log/waiaas$", script, re.MULTILINE)
    rotate_path, rotate = heredoc(script, "EOF_LOGROTATE")
    (files, body) = re.findall(r"^(/\S+(?: /\S+)*) \{\n(.*?)^\}$", rotate, re.MULTILINE | re.DOTALL)[0]
    assert set(files.split()) == set(SHIPPED)
    directives = {line.split()[0]: line.split()[1:] for line in body.splitlines() if line.strip()}
    assert "copytruncate" in directives, "the services hold their files open: rotation must truncate in place"
    assert re.fullmatch(r"\d+M", directives["size"][0]) and int(directives["size"][0][:-1]) <= 100
    assert 1 <= int(directives["rotate"][0]) <= 10
    timer = unit_file(script, "/etc/systemd/system/waiaas-logrotate.timer")
    assert re.search(r"^OnUnitActiveSec=(\d+)min$", timer, re.MULTILINE), "rotation checked at least hourly"
    service = unit_file(script, "/etc/systemd/system/waiaas-logrotate.service")
    assert re.search(rf"^ExecStart=/usr/sbin/logrotate .*{re.escape(rotate_path)}$", service, re.MULTILINE)


def test_agent_starts_with_the_written_config_before_the_services(script: str) -> None:
    config_path, _ = agent_config(script)
    starts = re.findall(rf"^{re.escape(AGENT_CTL)} -a fetch-config -m ec2 -s -c file:(\S+)$", script, re.MULTILINE)
    assert starts == [config_path]
    joined = script.replace("\\\n", "")  # continuation lines
    assert re.search(r"^dnf install -y .*\bamazon-cloudwatch-agent\b", joined, re.MULTILINE)
    start = script.index(f"{AGENT_CTL} -a fetch-config")
    assert start < script.index("systemctl enable --now waiaas-vsock-proxy.service waiaas-enclave.service")


def test_host_role_logs_permissions_are_the_agents_on_the_two_groups_only(
    templates: dict[str, Any], config: Any
) -> None:
    policy = _host_policy(templates)
    logs = [s for s in policy["Statement"] if any(a.startswith("logs:") for a in as_list(s["Action"]))]
    assert logs == [by_sid(policy, "HostLogs")]
    assert set(as_list(logs[0]["Action"])) == AGENT_ACTIONS
    prefix = f"arn:aws:logs:{config.region}:{config.account}:log-group:"
    assert set(as_list(logs[0]["Resource"])) == {f"{prefix}{group}:*" for group in SHIPPED.values()}
    assert "Condition" not in logs[0]


def test_agent_requests_pass_the_host_role_and_the_logs_endpoint(templates: dict[str, Any], config: Any) -> None:
    from tests.cdk.interface_endpoints import endpoint_policies

    endpoint = endpoint_policies(templates, config)["logs"]
    assert endpoint is not None
    role = _host_policy(templates)["Statement"]
    _, agent = agent_config(boot_script(templates))
    groups = [entry["log_group_name"] for entry in agent["logs"]["logs_collected"]["files"]["collect_list"]]
    host = {"aws:PrincipalAccount": config.account}
    for group in groups:
        for action, resource in agent_requests(config.region, config.account, group, INSTANCE):
            assert allows(role, action=action, resource=resource, context=host), (action, resource)
            assert allows(endpoint["Statement"], action=action, resource=resource, context=host), (action, resource)
    # ... and nothing else: other log groups of the deployment (flow logs, the trail) stay out of the host's reach.
    for other in ("/waiaas/vpc-flow-logs", "/waiaas/trail", "/waiaas/proxy-copy", "/waiaas"):
        for action, resource in agent_requests(config.region, config.account, other, INSTANCE):
            assert not allows(role, action=action, resource=resource, context=host), (action, resource)
    for action in ("logs:CreateLogGroup", "logs:PutRetentionPolicy", "logs:DeleteLogGroup", "logs:GetLogEvents"):
        resource = f"arn:aws:logs:{config.region}:{config.account}:log-group:/waiaas/proxy:*"
        assert not allows(role, action=action, resource=resource, context=host), action
