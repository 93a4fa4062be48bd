"""`python -m cdk.owner_key_policy [--admit ROLE_ARN]`: print the owner key's policy for this deployment, as JSON.

The owner key's policy cannot be replaced by a deployment (`cdk.key_policies`): KMS refuses `PutKeyPolicy` to
everyone but the owner's break-glass role. A deliberate change (new key administrators, a release that changes the
policy) therefore takes the owner's consent, in two steps (docs/deploy.md, "Changing the owner key's policy"):

1. the owner, in a break-glass session, puts the policy printed with `--admit <CloudFormation execution role ARN>`:
   the new policy, in which that role may also replace the policy;
2. the next `cdk deploy WaiaasOwnerKey` replaces it with the final policy (the one printed without `--admit`), in
   which only the break-glass role may. The owner compares `aws kms get-key-policy` with it afterwards.

Without `--admit` the output is the policy exactly as synthesized into `WaiaasOwnerKey` (a test compares them). The
settings come from the committed `cdk.json`; the owner key's policy depends on no enclave measurement, so the
EXAMPLE measurements of `cdk/example-pcrs.json` only complete the validation.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from aws_cdk import App, Stack

from cdk import key_policies
from cdk.config import ConfigError, DeploymentConfig, load_config
from cdk.synth import committed_context, example_pcrs


def owner_key_policy_json(config: DeploymentConfig, *, admitted_writer: str | None = None) -> dict[str, Any]:
    """The owner key's policy document as plain JSON (what CloudFormation passes to KMS)."""
    document = key_policies.owner_key_policy(config, admitted_writer=admitted_writer)
    resolved: dict[str, Any] = Stack(App(), "OwnerKeyPolicy").resolve(document)
    return resolved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cdk.owner_key_policy", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--admit",
        metavar="ROLE_ARN",
        help="also let this role (the CloudFormation execution role) replace the policy, until the next deployment",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config({**committed_context(), **example_pcrs()})
        policy = owner_key_policy_json(config, admitted_writer=args.admit)
    except (ConfigError, ValueError) as exc:
        sys.exit(f"cdk.owner_key_policy: {exc}")
    print(json.dumps(policy, indent=2))


if __name__ == "__main__":
    main()
