"""Offline synthesis: `make synth`, the tests, and the seal-key policy the test KMS evaluates.

`python -m cdk.synth` synthesizes every stack into `$CDK_OUTDIR` (default `cdk.out`) from the committed `cdk.json`
context plus the EXAMPLE measurements in `cdk/example-pcrs.json`. It needs no AWS credentials: account, region
and availability zones come from context, and nothing is looked up.

One source of truth for the seal-key policy: `seal_key_policy(synthesize_templates(config))` returns the key policy
exactly as synthesized into the keys stack's template, a plain dict with no CloudFormation tokens.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from cdk import naming
from cdk.app import assemble, new_app
from cdk.config import PREFIX, ConfigError, DeploymentConfig, load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
CDK_JSON = REPO_ROOT / "cdk.json"
EXAMPLE_PCRS = Path(__file__).resolve().parent / "example-pcrs.json"

Template = dict[str, Any]


def committed_context() -> dict[str, object]:
    """The `context` object of the committed `cdk.json` (every setting except the enclave measurements)."""
    data = json.loads(CDK_JSON.read_text(encoding="utf-8"))
    context = data.get("context")
    if not isinstance(context, dict):
        raise ConfigError(f"{CDK_JSON} has no context object")
    return context


def example_context(*, pcr0: str, pcr8: str | None) -> dict[str, object]:
    """Committed context plus the given measurements; `pcr8=None` means an unsigned image."""
    context = committed_context()
    context[PREFIX + "enclavePcr0"] = pcr0
    context[PREFIX + "enclaveImageSigned"] = pcr8 is not None
    if pcr8 is not None:
        context[PREFIX + "enclavePcr8"] = pcr8
    return context


def example_config(*, pcr0: str, pcr8: str | None) -> DeploymentConfig:
    """A validated config from the committed context with the given PCR0/PCR8 (lowercase hex SHA-384)."""
    return load_config(example_context(pcr0=pcr0, pcr8=pcr8))


def example_pcrs() -> dict[str, object]:
    """The EXAMPLE measurements used by `make synth` (not a real image: never deploy them)."""
    data = json.loads(EXAMPLE_PCRS.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ConfigError(f"{EXAMPLE_PCRS} must hold a JSON object")
    return {key: value for key, value in data.items() if key.startswith(PREFIX)}


def synthesize(config: DeploymentConfig, outdir: Path) -> dict[str, Template]:
    """Assemble and synthesize every stack into `outdir`; return each stack's template by stack name.

    Raises `RuntimeError` (from CDK) when cdk-nag reports an unacknowledged finding; the report is written to
    `outdir/validation-report.json`.
    """
    app = new_app(outdir=str(outdir))
    assemble(app, config)
    assembly = app.synth()
    return {stack.stack_name: dict(stack.template) for stack in assembly.stacks}


def synthesize_templates(config: DeploymentConfig) -> dict[str, Template]:
    """Like `synthesize`, into a temporary directory that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="waiaas-cdk-") as outdir:
        return synthesize(config, Path(outdir))


def _key_policy_by_alias(templates: dict[str, Template], alias: str) -> dict[str, Any]:
    for template in templates.values():
        resources: dict[str, Any] = template.get("Resources", {})
        for resource in resources.values():
            props = resource.get("Properties", {})
            if resource.get("Type") == "AWS::KMS::Alias" and props.get("AliasName") == alias:
                key_id = props["TargetKeyId"]["Ref"]
                policy: dict[str, Any] = resources[key_id]["Properties"]["KeyPolicy"]
                return policy
    raise LookupError(f"no key with alias {alias} in the synthesized templates")


def seal_key_policy(templates: dict[str, Template]) -> dict[str, Any]:
    """The seal key's policy document as synthesized (plain JSON: Version, Statement[...])."""
    return _key_policy_by_alias(templates, naming.SEAL_KEY_ALIAS)


def owner_key_policy(templates: dict[str, Template]) -> dict[str, Any]:
    """The owner key's policy document as synthesized."""
    return _key_policy_by_alias(templates, naming.OWNER_KEY_ALIAS)


def main() -> None:
    outdir = Path(os.environ.get("CDK_OUTDIR", "cdk.out"))
    try:
        config = load_config({**committed_context(), **example_pcrs()})
    except ConfigError as exc:
        sys.exit(f"cdk.synth: {exc}")
    try:
        templates = synthesize(config, outdir)
    except RuntimeError as exc:  # cdk-nag findings: CDK has printed them and written the report
        sys.exit(f"cdk.synth: {exc}")
    print(f"cdk.synth: {len(templates)} stacks synthesized into {outdir}/ with the EXAMPLE enclave measurements")


if __name__ == "__main__":
    main()
