"""Creation and rollouts of the hosts wait for each new host's boot, and the boot tells them how it went.

Static: the group's creation policy and rolling update wait for signals, longer than the boot script's own
deadline; the script signals exactly that group in exactly that stack; the host role and the CloudFormation
endpoint let that signal through and nothing wider.

Run for real: the boot script's signalling (step 0, its exit trap, and step 10, the readiness wait) is taken from the
synthesized user data and run by bash with stubs of `curl` (instance metadata and the proxy's /readyz), `aws` and
`sleep` first on PATH; the steps in between are replaced by what each case needs (nothing, or a failing command).

Before: no creation policy, no WaitOnResourceSignals, no PauseTime: a rollout replaced every host within minutes,
whether or not the new ones booted, and completed a release whose image failed its check on every host.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cdk import naming
from enclave_app.constants import PROXY_HTTP_PORT
from tests.cdk.boot_script import HOSTS, boot_script
from tests.cdk.interface_endpoints import endpoint_policies
from tests.cdk.policy_walk import allows, as_list, find_one, resources_of_type

IDENTITY = "WaiaasIdentity"
INSTANCE = "i-0123456789abcdef0"
STACK_ID = "0f1e2d3c-0000-4000-8000-000000000000"
ISO_MINUTES = re.compile(r"PT([0-9]+)M")


def _group(templates: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    (found,) = resources_of_type(templates[HOSTS], "AWS::AutoScaling::AutoScalingGroup").items()
    return found


def _deadline_seconds(script: str) -> int:
    (seconds,) = re.findall(r'^  if \[ "\$SECONDS" -ge ([0-9]+) \]; then$', script, re.MULTILINE)
    return int(seconds)


def test_creation_and_rollouts_wait_for_a_signal_from_each_new_host(templates: dict[str, Any]) -> None:
    _, group = _group(templates)
    creation = group["CreationPolicy"]["ResourceSignal"]
    assert creation["Count"] == int(group["Properties"]["MinSize"])  # every configured host, at creation
    rolling = group["UpdatePolicy"]["AutoScalingRollingUpdate"]
    assert rolling["WaitOnResourceSignals"] is True
    assert rolling["MaxBatchSize"] == 1 and rolling["MinInstancesInService"] == int(group["Properties"]["MinSize"])
    assert "MinSuccessfulInstancesPercent" not in rolling  # default 100: one FAILURE fails the rollout
    assert rolling["PauseTime"] == creation["Timeout"]


def test_the_wait_outlasts_the_boot_scripts_deadline(templates: dict[str, Any]) -> None:
    """A host that is not ready signals FAILURE itself before CloudFormation gives up on it; the load balancer's
    checks do not count before the boot's deadline either."""
    _, group = _group(templates)
    timeout = ISO_MINUTES.fullmatch(group["CreationPolicy"]["ResourceSignal"]["Timeout"])
    assert timeout is not None
    deadline = _deadline_seconds(boot_script(templates))
    assert int(timeout.group(1)) * 60 >= deadline + 5 * 60  # launch, cloud-init and the signal's way out
    assert int(group["Properties"]["HealthCheckGracePeriod"]) >= deadline


def test_the_boot_script_signals_exactly_this_group(templates: dict[str, Any]) -> None:
    group_id, _ = _group(templates)
    script = boot_script(templates).replace("\\\n", "")
    found = re.findall(r"aws cloudformation signal-resource --stack-name (\S+) --logical-resource-id (\S+) ", script)
    assert found == [(HOSTS, group_id)]


def test_the_host_role_and_the_endpoint_let_the_signal_through_and_nothing_wider(
    templates: dict[str, Any], config: Any
) -> None:
    role_id, _ = find_one(templates[IDENTITY], "AWS::IAM::Role", RoleName=naming.ENCLAVE_HOST_ROLE)
    role = [
        s
        for policy in resources_of_type(templates[IDENTITY], "AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    # Literal ARNs only: nothing like CDK's own grant to a group with `signals=`, on `AWS::StackId` (which, in the
    # identity stack's template, is the identity stack).
    assert all(isinstance(r, str) for s in role for r in as_list(s["Resource"])), role
    endpoint = endpoint_policies(templates, config)["cloudformation"]
    assert endpoint is not None
    context = {"aws:PrincipalAccount": config.account}

    def stack(name: str, region: str = config.region) -> str:
        return f"arn:aws:cloudformation:{region}:{config.account}:stack/{name}/{STACK_ID}"

    for statements in (role, endpoint["Statement"]):
        assert allows(statements, action="cloudformation:SignalResource", resource=stack(HOSTS), context=context)
        for other in (stack("WaiaasKeys"), stack("WaiaasIdentity"), stack(HOSTS, "us-east-1"), stack(HOSTS + "X")):
            assert not allows(statements, action="cloudformation:SignalResource", resource=other, context=context)
        for action in ("cloudformation:UpdateStack", "cloudformation:CancelUpdateStack", "cloudformation:DeleteStack"):
            assert not allows(statements, action=action, resource=stack(HOSTS), context=context)


CURL = f"""#!/bin/bash
printf 'curl %s\\n' "$*" >> "$STUB_DIR/calls"
case "$*" in
  *api/token*) echo TOKEN ;;
  *meta-data/instance-id*) [[ "$*" == *"X-aws-ec2-metadata-token: TOKEN"* ]] && echo {INSTANCE} ;;
  *readyz*)
    answer="$(head -n 1 "$STUB_DIR/ready")"; sed -i 1d "$STUB_DIR/ready"
    [ "$answer" = 200 ] || exit 22 ;;
  *) exit 7 ;;
esac
"""
AWS = """#!/bin/bash
printf 'aws %s\\n' "$*" >> "$STUB_DIR/calls"
exit "$(cat "$STUB_DIR/aws_exit")"
"""
SLEEP = """#!/bin/bash
printf 'sleep %s\\n' "$*" >> "$STUB_DIR/calls"
"""


def _signalling(script: str, middle: str) -> str:
    """The script's head (through step 0), ``middle`` in place of steps 1 to 9, and step 10."""
    head, rest = script.split("\n# 1. Packages.\n", 1)
    tail = rest[rest.index("\n# 10. Ready") :]
    assert "trap " in head and "signal_boot SUCCESS" in tail
    return f"{head}\n{middle}\n{tail}"


def _run(
    tmp_path: Path, script: str, *, middle: str = "", ready: list[str], aws_exit: int = 0
) -> tuple[int, list[str]]:
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in (("curl", CURL), ("aws", AWS), ("sleep", SLEEP)):
        (stubs / name).write_text(body)
        (stubs / name).chmod(0o755)
    (tmp_path / "ready").write_text("".join(f"{answer}\n" for answer in ready))
    (tmp_path / "aws_exit").write_text(str(aws_exit))
    (tmp_path / "calls").write_text("")
    boot = tmp_path / "boot.sh"
    boot.write_text(_signalling(script, middle))
    result = subprocess.run(
        ["/bin/bash", str(boot)],
        env={"PATH": f"{stubs}:/usr/bin:/bin", "STUB_DIR": str(tmp_path)},
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode, (tmp_path / "calls").read_text().splitlines()


def _signals(calls: list[str]) -> list[str]:
    found = [re.search(r"--unique-id (\S+) --status (\S+)$", c) for c in calls if c.startswith("aws ")]
    assert all(found), calls
    return [f"{m.group(1)} {m.group(2)}" for m in found if m]


@pytest.fixture(scope="module")
def script(templates: dict[str, Any]) -> str:
    return boot_script(templates)


def test_a_ready_proxy_signals_success_once(tmp_path: Path, script: str) -> None:
    status, calls = _run(tmp_path, script, ready=["200"])
    assert status == 0
    assert _signals(calls) == [f"{INSTANCE} SUCCESS"]
    (polled,) = [c for c in calls if "readyz" in c]
    assert polled.endswith(f"http://127.0.0.1:{PROXY_HTTP_PORT}/readyz")  # readiness (enclave up), not /healthz


def test_the_boot_waits_while_the_proxy_is_not_ready(tmp_path: Path, script: str) -> None:
    status, calls = _run(tmp_path, script, ready=["503", "503", "000", "200"])
    assert status == 0
    assert _signals(calls) == [f"{INSTANCE} SUCCESS"]
    assert len([c for c in calls if c.startswith("sleep ")]) == 3


def test_a_proxy_not_ready_by_the_deadline_signals_failure(tmp_path: Path, script: str) -> None:
    deadline = _deadline_seconds(script)
    status, calls = _run(tmp_path, script, middle=f"SECONDS={deadline}", ready=["503"] * 3)
    assert status == 1
    assert _signals(calls) == [f"{INSTANCE} FAILURE"]


def test_a_failed_step_signals_failure_and_never_success(tmp_path: Path, script: str) -> None:
    """For example check-eif.sh refusing the image: `systemctl enable --now` of the enclave unit fails."""
    status, calls = _run(tmp_path, script, middle="false", ready=["200"])
    assert status != 0
    assert _signals(calls) == [f"{INSTANCE} FAILURE"]
    assert not [c for c in calls if "readyz" in c]


def test_a_refused_success_outside_a_rollout_is_not_a_failure(tmp_path: Path, script: str) -> None:
    """A host the group launches on its own (nothing waits for signals): CloudFormation refuses the signal, and
    the boot ends well, without a FAILURE signal after it."""
    status, calls = _run(tmp_path, script, ready=["200"], aws_exit=254)
    assert status == 0
    assert _signals(calls) == [f"{INSTANCE} SUCCESS"]
