"""The enclave hosts' boot script as synthesized, and the files its heredocs write (test-only)."""

from __future__ import annotations

import re
from typing import Any

from tests.cdk.policy_walk import resources_of_type

HOSTS = "WaiaasEnclaveHosts"


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
