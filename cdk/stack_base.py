"""Helpers shared by the stacks: the explicit environment, and one-finding cdk-nag acknowledgments."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Environment, Validations
from constructs import IConstruct

from cdk.config import DeploymentConfig

_MIN_REASON_CHARS = 40
"""An acknowledgment must say why, specifically; a short reason is almost always a placeholder."""


def deployment_env(config: DeploymentConfig) -> Environment:
    """Account and region come from context, never from the caller's credentials: synth stays offline."""
    return Environment(account=config.account, region=config.region)


def acknowledge(construct: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge exactly one cdk-nag finding (e.g. `AwsSolutions-IAM5[Resource::*]`) on one construct."""
    if not finding.startswith("AwsSolutions-") or len(reason) < _MIN_REASON_CHARS:
        raise ValueError(f"acknowledgment of {finding!r} needs an AwsSolutions finding id and a specific reason")
    # The `AwsSolutions::` plugin prefix files the acknowledgment under cdk-nag's pack, so the validation report
    # lists it as a suppressed violation with its reason (the audit trail), not as an annotation.
    Validations.of(construct).acknowledge(Acknowledgment(id=f"AwsSolutions::{finding}", reason=reason))
