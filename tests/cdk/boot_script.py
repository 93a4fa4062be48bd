"""The enclave hosts' boot script as synthesized, and the files its heredocs write (test-only)."""

from __future__ import annotations

import json
import re
from typing import Any

from cdk.user_data import SignalTarget
from tests.cdk.policy_walk import resources_of_type

HOSTS = "WaiaasEnclaveHosts"
SIGNAL = SignalTarget(stack=HOSTS, resource="Group")
"""What a script rendered outside the app (`user_data.render` in a test) signals."""
PROXY_ENV = "/etc/waiaas/proxy.env"


def launch_data(templates: dict[str, Any]) -> dict[str, Any]:
    (template,) = resources_of_type(templates[HOSTS], "AWS::EC2::LaunchTemplate").values()
    data: dict[str, Any] = template["Properties"]["LaunchTemplateData"]
    return data


def boot_script(templates: dict[str, Any]) -> str:
    encoded = launch_data(templates)["UserData"]["Fn::Base64"]
    assert isinstance(encoded, str), "user data must be a literal script (no CloudFormation tokens)"
    return encoded


def heredoc(script: str, marker: str) -> tuple[str, str]:
    """(target path, body) of the single `cat > PATH <<'MARKER'` ... `MARKER` block. Quoted markers only: the
    body is then written verbatim, with no shell expansion at boot."""
    found = re.findall(rf"^cat > (\S+) <<'{marker}'\n(.*?)^{marker}$", script, re.MULTILINE | re.DOTALL)
    if len(found) != 1:
        raise LookupError(f"expected one heredoc {marker}, found {len(found)}")
    path, body = found[0]
    return path, body


def unit_file(script: str, path: str) -> str:
    """Body of the systemd unit the boot script writes to `path` (units share the EOF_UNIT marker)."""
    found = re.findall(rf"^cat > {re.escape(path)} <<'EOF_UNIT'\n(.*?)^EOF_UNIT$", script, re.MULTILINE | re.DOTALL)
    if len(found) != 1:
        raise LookupError(f"expected one unit written to {path}, found {len(found)}")
    body: str = found[0]
    return body


def agent_config(script: str) -> tuple[str, dict[str, Any]]:
    """(path, parsed JSON) of the CloudWatch agent configuration the boot script writes (heredoc EOF_AGENT)."""
    path, body = heredoc(script, "EOF_AGENT")
    parsed: dict[str, Any] = json.loads(body)
    return path, parsed


def agent_requests(region: str, account: str, log_group: str, instance_id: str) -> list[tuple[str, str]]:
    """(action, resource as IAM evaluates it) of each CloudWatch Logs call the agent makes for one log group: it
    looks up and creates its stream (named by instance id), then puts events into it. DescribeLogStreams is
    evaluated on the group's `log-stream:` resource with an empty stream name (as AWS's access-denied messages
    show), which is why IAM policies name a log group as `log-group:NAME:*` for these actions."""
    group = f"arn:aws:logs:{region}:{account}:log-group:{log_group}"
    return [
        ("logs:DescribeLogStreams", f"{group}:log-stream:"),
        ("logs:CreateLogStream", f"{group}:log-stream:{instance_id}"),
        ("logs:PutLogEvents", f"{group}:log-stream:{instance_id}"),
    ]


def proxy_env(templates: dict[str, Any]) -> dict[str, str]:
    """The variables of the proxy's environment file the boot script writes (heredoc EOF_ENV)."""
    path, body = heredoc(boot_script(templates), "EOF_ENV")
    assert path == PROXY_ENV
    pairs = [line.split("=", 1) for line in body.splitlines()]
    assert all(len(pair) == 2 for pair in pairs), body
    return dict(pairs)
