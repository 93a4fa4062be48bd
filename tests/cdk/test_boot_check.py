"""The enclave-image check of the boot script, run for real: check-eif.sh is taken from the synthesized user data
and executed by bash with a stub `nitro-cli` first on PATH (real `jq`), once per case. The stub prints a given
`describe-eif` answer (or fails) and records its arguments, so the test also sees which file was measured.

The proxy user and groups: the network-facing proxy user is in no group (the `ne` group controls
/dev/nitro_enclaves, which would let it stop the enclave or start another image without this check).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cdk import user_data
from cdk.synth import example_config
from tests.cdk.boot_script import SIGNAL, boot_script, heredoc, unit_file
from tests.cdk.conftest import PCR0, PCR8

ENCLAVE_UNIT = "/etc/systemd/system/waiaas-enclave.service"
PROXY_UNIT = "/etc/systemd/system/waiaas-proxy.service"
STUB = """#!/bin/bash
printf '%s\\n' "$*" >> "$STUB_DIR/calls"
cat "$STUB_DIR/answer"
exit "$(cat "$STUB_DIR/exit")"
"""
JQ = shutil.which("jq")


def _answer(pcr0: Any = PCR0, pcr8: Any = PCR8) -> str:
    measurements = {"HashAlgorithm": "Sha384 { ... }"}
    if pcr0 is not None:
        measurements["PCR0"] = pcr0
    if pcr8 is not None:
        measurements["PCR8"] = pcr8
    return json.dumps({"EifVersion": 4, "Measurements": measurements, "IsSigned": pcr8 is not None}, indent=2)


def _run_check(tmp_path: Path, script: str, answer: str, exit_code: int = 0) -> tuple[int, list[str]]:
    """Run the boot script's check-eif.sh against a stub describe-eif; (exit status, stub invocations)."""
    if JQ is None:
        pytest.fail("these tests need jq (the hosts install it; so must the test machine)")
    _, body = heredoc(script, "EOF_CHECK")
    check = tmp_path / "check-eif.sh"
    check.write_text(body)
    check.chmod(0o755)
    stub_bin = tmp_path / "bin"
    stub_bin.mkdir(exist_ok=True)
    (stub_bin / "nitro-cli").write_text(STUB)
    (stub_bin / "nitro-cli").chmod(0o755)
    (tmp_path / "answer").write_text(answer)
    (tmp_path / "exit").write_text(str(exit_code))
    (tmp_path / "calls").write_text("")
    path = f"{stub_bin}:{Path(JQ).parent}:/usr/bin:/bin"
    result = subprocess.run(
        [str(check)], env={"PATH": path, "STUB_DIR": str(tmp_path)}, capture_output=True, timeout=30, check=False
    )
    return result.returncode, (tmp_path / "calls").read_text().splitlines()


@pytest.fixture(scope="module")
def signed_script(templates: dict[str, Any]) -> str:
    return boot_script(templates)


@pytest.mark.parametrize(
    ("answer", "exit_code"),
    [
        (_answer(), 0),
        (_answer(PCR0.upper(), PCR8.upper()), 0),  # nitro-cli's case is not part of the value
    ],
    ids=["matching", "matching-upper-case"],
)
def test_matching_measurements_pass(tmp_path: Path, signed_script: str, answer: str, exit_code: int) -> None:
    status, calls = _run_check(tmp_path, signed_script, answer, exit_code)
    assert status == 0
    assert len(calls) == 1 and calls[0].startswith("describe-eif ")


REFUSED = {
    "wrong-pcr0": (_answer(pcr0=PCR8), 0),
    "wrong-pcr8": (_answer(pcr8=PCR0), 0),
    "missing-pcr8": (_answer(pcr8=None), 0),
    "missing-pcr0": (_answer(pcr0=None), 0),
    "pcr0-with-a-prefix": (_answer(pcr0="0" + PCR0), 0),
    "pcr0-with-a-suffix": (_answer(pcr0=PCR0 + "00"), 0),
    "pcr0-truncated": (_answer(pcr0=PCR0[:-1]), 0),
    "pcr8-with-a-suffix": (_answer(pcr8=PCR8 + " "), 0),
    "pcr0-not-a-string": (_answer(pcr0=[PCR0]), 0),
    "no-measurements": (json.dumps({"EifVersion": 4}), 0),
    "empty-object": ("{}", 0),
    "not-json": ("Measurements: PCR0=" + PCR0, 0),
    "empty-output": ("", 0),
    # describe-eif failing must stop the check even when its output would have matched (set -e).
    "describe-eif-fails-after-matching-output": (_answer(), 3),
    "describe-eif-fails-without-output": ("", 1),
}


@pytest.mark.parametrize(("answer", "exit_code"), list(REFUSED.values()), ids=list(REFUSED))
def test_anything_else_is_refused(tmp_path: Path, signed_script: str, answer: str, exit_code: int) -> None:
    status, calls = _run_check(tmp_path, signed_script, answer, exit_code)
    assert status != 0
    assert len(calls) == 1


def test_unsigned_image_checks_pcr0_only(tmp_path: Path) -> None:
    script = user_data.render(example_config(pcr0=PCR0, pcr8=None), signal=SIGNAL)
    assert _run_check(tmp_path, script, _answer(pcr8=None))[0] == 0
    assert _run_check(tmp_path, script, _answer(pcr0=PCR8, pcr8=None))[0] != 0
    assert _run_check(tmp_path, script, _answer(pcr0=PCR0 + "0", pcr8=None))[0] != 0
    assert _run_check(tmp_path, script, _answer(pcr8=None), exit_code=3)[0] != 0


def test_the_measured_file_is_the_file_that_runs(tmp_path: Path, signed_script: str) -> None:
    check_path, _ = heredoc(signed_script, "EOF_CHECK")
    _, calls = _run_check(tmp_path, signed_script, _answer())
    measured = re.fullmatch(r"describe-eif --eif-path (\S+)", calls[0])
    assert measured is not None, calls
    unit = unit_file(signed_script, ENCLAVE_UNIT)
    starts = re.findall(r"^ExecStart=/usr/bin/nitro-cli run-enclave --eif-path (\S+) ", unit, re.MULTILINE)
    assert starts == [measured.group(1)]
    assert re.findall(r"^ExecStartPre=(\S+)$", unit, re.MULTILINE) == [check_path]
    assert "--debug-mode" not in unit and "--attach-console" not in unit
    # ... and it is the file downloaded from the release, made read-only before the unit can start.
    downloads = re.findall(r"^aws s3 cp \S+ (\S+)$", signed_script, re.MULTILINE)
    assert measured.group(1) in downloads
    assert f"chmod 0444 {measured.group(1)}" in signed_script


def test_proxy_user_is_in_no_group(signed_script: str) -> None:
    user = user_data.PROXY_USER
    (useradd,) = [line for line in signed_script.splitlines() if re.search(rf"\buseradd\b.* {user}$", line)]
    assert not re.search(r"\s(-G|--groups|-g|--gid)\b", useradd)
    for line in signed_script.splitlines():
        assert not re.search(r"\b(usermod|gpasswd|adduser|groupmems)\b", line), line
        assert not re.match(r"(SupplementaryGroups|Group|DynamicUser)=", line) or line == "DynamicUser=yes", line
    proxy = unit_file(signed_script, PROXY_UNIT)
    assert re.findall(r"^User=(\S+)$", proxy, re.MULTILINE) == [user]
    assert "Group=" not in proxy


def test_proxy_holds_no_capability_and_the_vsock_proxy_waits_for_the_network(signed_script: str) -> None:
    """The proxy runs as an unprivileged user and needs no capability (it binds 8080, talks TCP and vsock, reads
    files): an empty bounding set keeps it from regaining any. `After=network-online.target` alone does not pull
    that target in; `Wants=` does."""
    proxy = unit_file(signed_script, PROXY_UNIT)
    assert re.findall(r"^CapabilityBoundingSet=(.*)$", proxy, re.MULTILINE) == [""]
    vsock = unit_file(signed_script, "/etc/systemd/system/waiaas-vsock-proxy.service")
    assert "Wants=network-online.target" in vsock.splitlines()
    assert "After=network-online.target" in vsock.splitlines()
