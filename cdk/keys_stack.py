"""Keys stack: the owner key (Ed25519, sign only) and the seal key (symmetric, attestation-gated).

The keys are L1 `CfnKey`s so that the key policy written in `cdk.key_policies` is exactly the one deployed: the
L2 `Key` may add statements of its own. Both are retained when the stack is deleted, and the stack is protected
against termination: losing the seal key loses every agent key sealed under it.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_kms as kms
from constructs import Construct

from cdk import key_policies, naming
from cdk.config import DeploymentConfig
from cdk.stack_base import deployment_env

KEY_DELETION_WINDOW_DAYS = 30
"""Longest window KMS allows: a scheduled deletion can be cancelled for a month."""


class OwnerKey(Construct):
    """The owner's Ed25519 key; only the owner-signer role can sign with it."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.CfnKey(
            self,
            "Key",
            description="WAIaaS owner key: Ed25519 (ED25519_SHA_512, RAW) signatures by the owner-signer role",
            key_spec="ECC_NIST_EDWARDS25519",
            key_usage="SIGN_VERIFY",
            key_policy=key_policies.owner_key_policy(config),
            pending_window_in_days=KEY_DELETION_WINDOW_DAYS,
            enabled=True,
        )
        self.key.apply_removal_policy(RemovalPolicy.RETAIN)
        kms.CfnAlias(self, "Alias", alias_name=naming.OWNER_KEY_ALIAS, target_key_id=self.key.ref)


class SealKey(Construct):
    """The symmetric key that wraps agent-key data keys; usable only from the pinned enclave image."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.CfnKey(
            self,
            "Key",
            description="WAIaaS seal key: data keys for agent-key blobs, released only to the attested enclave",
            key_spec="SYMMETRIC_DEFAULT",
            key_usage="ENCRYPT_DECRYPT",
            key_policy=key_policies.seal_key_policy(config),
            enable_key_rotation=True,
            pending_window_in_days=KEY_DELETION_WINDOW_DAYS,
            enabled=True,
        )
        self.key.apply_removal_policy(RemovalPolicy.RETAIN)
        kms.CfnAlias(self, "Alias", alias_name=naming.SEAL_KEY_ALIAS, target_key_id=self.key.ref)


class KeysStack(Stack):
    """Deployable unit: both KMS keys. Deploy after the identity stack (the key policies name its roles)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(
            scope,
            construct_id,
            env=deployment_env(config),
            description="WAIaaS KMS keys: owner signing key and attestation-gated seal key",
            termination_protection=True,
        )
        self.owner = OwnerKey(self, "OwnerKey", config=config)
        self.seal = SealKey(self, "SealKey", config=config)
        CfnOutput(self, "OwnerKeyArn", value=self.owner.key.attr_arn)
        CfnOutput(self, "SealKeyArn", value=self.seal.key.attr_arn)
