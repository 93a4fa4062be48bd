"""CDK entry point (`cdk.json`: `"app": ".venv/bin/python -m cdk.app"`): read context once, assemble the stacks.

Nothing here builds a resource. `assemble` wires one stack per deployable unit, passing the validated config and
the constructs each stack needs, and registers cdk-nag's AwsSolutions pack on the whole app: an unacknowledged
finding fails synthesis.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from cdk.config import CONTEXT_KEYS, PREFIX, ConfigError, DeploymentConfig, load_config
from cdk.identity_stack import IdentityStack
from cdk.keys_stack import KeysStack


@dataclass(frozen=True, kw_only=True)
class Deployment:
    """The assembled stacks, for tests and for `cdk.synth`."""

    identity: IdentityStack
    keys: KeysStack


def config_from_app(app: App) -> DeploymentConfig:
    """The single place that reads CDK context. Raises `ConfigError` naming each missing or malformed key."""
    return load_config({PREFIX + key: app.node.try_get_context(PREFIX + key) for key in CONTEXT_KEYS})


def assemble(app: App, config: DeploymentConfig) -> Deployment:
    identity = IdentityStack(app, "WaiaasIdentity", config=config)
    keys = KeysStack(app, "WaiaasKeys", config=config)
    keys.add_stack_dependency(identity, "key policies name the roles; KMS refuses unknown principals")
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return Deployment(identity=identity, keys=keys)


def main() -> None:
    app = App()
    try:
        config = config_from_app(app)
    except ConfigError as exc:
        sys.exit(f"cdk.app: {exc}")
    assemble(app, config)
    app.synth()


if __name__ == "__main__":
    main()
