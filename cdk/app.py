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

from cdk import naming
from cdk.config import CONTEXT_KEYS, PREFIX, ConfigError, DeploymentConfig, load_config
from cdk.hosts_stack import EnclaveHostsStack
from cdk.identity_stack import IdentityStack
from cdk.keys_stack import KeysStack, OwnerKeyStack
from cdk.monitoring_stack import MonitoringStack
from cdk.network_stack import NetworkStack
from cdk.state_stack import StateStack

FEATURE_FLAGS: dict[str, object] = {
    # S3 server access logs are admitted by a bucket policy (logging service principal), not a bucket ACL.
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
    # Log-delivery buckets get a policy for the delivery service rather than relying on ACLs.
    "@aws-cdk/aws-s3:createDefaultLoggingPolicy": True,
}
"""CDK feature flags this app relies on, set here rather than in cdk.json so every entry point gets them."""


def new_app(*, outdir: str | None = None) -> App:
    """An App with this project's feature flags; context from the CDK CLI (cdk.json, -c) is read as usual."""
    return App(outdir=outdir, post_cli_context=FEATURE_FLAGS, analytics_reporting=False)


@dataclass(frozen=True, kw_only=True)
class Deployment:
    """The assembled stacks, for tests and for `cdk.synth`."""

    network: NetworkStack
    identity: IdentityStack
    owner_key: OwnerKeyStack
    keys: KeysStack
    state: StateStack
    monitoring: MonitoringStack
    hosts: EnclaveHostsStack


def config_from_app(app: App) -> DeploymentConfig:
    """The single place that reads CDK context. Raises `ConfigError` naming each missing or malformed key."""
    return load_config({PREFIX + key: app.node.try_get_context(PREFIX + key) for key in CONTEXT_KEYS})


def assemble(app: App, config: DeploymentConfig) -> Deployment:
    network = NetworkStack(app, "WaiaasNetwork", config=config)
    identity = IdentityStack(app, "WaiaasIdentity", config=config)
    owner_key = OwnerKeyStack(app, "WaiaasOwnerKey", config=config)
    owner_key.add_stack_dependency(identity, "the key policy names the owner roles; KMS refuses unknown principals")
    keys = KeysStack(app, "WaiaasKeys", config=config)
    keys.add_stack_dependency(identity, "key policies name the roles; KMS refuses unknown principals")
    state = StateStack(app, "WaiaasState", config=config)
    monitoring = MonitoringStack(
        app,
        "WaiaasMonitoring",
        config=config,
        owner_key=owner_key.owner.key,
        seal_key=keys.seal.key,
    )
    monitoring.add_stack_dependency(state, "the log bucket's policy must admit the trail before it is created")
    hosts = EnclaveHostsStack(
        app,
        naming.HOSTS_STACK,
        config=config,
        vpc=network.vpc,
        instance_profile=identity.host.instance_profile,
        access_logs=state.buckets.logs,
        notifications=monitoring.notifications.topic,
    )
    hosts.add_stack_dependency(keys, "the enclave unwraps with the seal key at boot")
    hosts.add_stack_dependency(state, "the hosts fetch the release from the data bucket at boot")
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return Deployment(
        network=network,
        identity=identity,
        owner_key=owner_key,
        keys=keys,
        state=state,
        monitoring=monitoring,
        hosts=hosts,
    )


def main() -> None:
    app = new_app()
    try:
        config = config_from_app(app)
    except ConfigError as exc:
        sys.exit(f"cdk.app: {exc}")
    assemble(app, config)
    app.synth()


if __name__ == "__main__":
    main()
