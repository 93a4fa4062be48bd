"""cdk-nag (AwsSolutions) and cfn-lint over the synthesized app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import aws_s3 as s3

from cdk.app import assemble, new_app

MIN_REASON_CHARS = 40


def _report(outdir: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((outdir / "validation-report.json").read_text())
    return report


def _acknowledgments(outdir: Path) -> list[tuple[str, str, str]]:
    """(construct path, acknowledged id, reason) for every acknowledgment recorded in the assembly."""
    found: list[tuple[str, str, str]] = []
    for metadata_file in outdir.glob("*.metadata.json"):
        for path, entries in json.loads(metadata_file.read_text()).items():
            for entry in entries:
                if entry["type"] == "aws:cdk:acknowledged-rules":
                    found.extend((path, ack_id, reason) for ack_id, reason in entry["data"].items())
    return found


def test_nag_reports_no_unacknowledged_finding(templates: dict[str, Any], cdk_outdir: Path) -> None:
    (nag,) = [p for p in _report(cdk_outdir)["pluginReports"] if p["pluginName"] == "AwsSolutions"]
    assert nag["conclusion"] == "success"
    assert nag["violations"] == []


def test_each_acknowledgment_names_one_finding_on_one_resource(templates: dict[str, Any], cdk_outdir: Path) -> None:
    (nag,) = [p for p in _report(cdk_outdir)["pluginReports"] if p["pluginName"] == "AwsSolutions"]
    suppressed = nag["suppressedViolations"]
    assert suppressed
    for violation in suppressed:
        assert violation["acknowledgedId"] == f"AwsSolutions::{violation['ruleName']}"
        assert len(violation["violatingConstructs"]) == 1
        assert len(violation["reason"]) >= MIN_REASON_CHARS
        # Acknowledged on the resource's own construct, never on a stack.
        assert "/" in violation["acknowledgedAt"], violation["acknowledgedAt"]


def test_no_stale_or_stack_wide_acknowledgment(templates: dict[str, Any], cdk_outdir: Path) -> None:
    (nag,) = [p for p in _report(cdk_outdir)["pluginReports"] if p["pluginName"] == "AwsSolutions"]
    used = {(v["acknowledgedAt"], v["acknowledgedId"]) for v in nag["suppressedViolations"]}
    ours = [a for a in _acknowledgments(cdk_outdir) if "AwsSolutions" in a[1]]
    assert ours
    for path, ack_id, reason in ours:
        assert path.count("/") >= 2, f"stack-wide acknowledgment at {path}"
        assert (path.lstrip("/"), ack_id) in used, f"{ack_id} at {path} acknowledges nothing"
        assert reason and len(reason) >= MIN_REASON_CHARS


def test_nag_is_wired_into_the_app(config: Any, tmp_path: Path) -> None:
    """A non-compliant resource added to an assembled app makes synthesis fail: the checks really run."""
    app = new_app(outdir=str(tmp_path))
    deployment = assemble(app, config)
    s3.Bucket(deployment.state, "NonCompliant")  # no TLS-only policy, no access logs
    with pytest.raises(RuntimeError, match=r"(?s)ValidationFailed: .*AwsSolutions-S10"):
        app.synth()
    (nag,) = [p for p in _report(tmp_path)["pluginReports"] if p["pluginName"] == "AwsSolutions"]
    rules = {v["ruleName"] for v in nag["violations"]}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules


def test_cfn_lint_is_clean_on_every_template(templates: dict[str, Any], cdk_outdir: Path) -> None:
    paths = sorted(str(p) for p in cdk_outdir.glob("*.template.json"))
    assert len(paths) == len(templates) == 7
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run([str(cfn_lint), *paths], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
