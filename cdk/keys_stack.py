"""Keys stacks: the owner key (Ed25519, sign only) and the seal key (symmetric, attestation-gated), one stack each.

The keys are L1 `CfnKey`s so that the key policy written in `cdk.key_policies` is exactly the one deployed: the
L2 `Key` may add statements of its own. Both are retained when their stack is deleted, and both stacks are protected
against termination: losing the seal key loses every agent key sealed under it, losing the owner key loses the
owner's half of every wallet.

The owner key has a stack of its own because its policy never changes with an image rollout: redeploying the seal
key with new measurements (`WaiaasKeys`) never touches it, and a deployment cannot replace its policy anyway (see
`cdk.key_policies`: KMS refuses the deployment role's `PutKeyPolicy` on it, so an update that changes that policy
fails and CloudFormation rolls it back).
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
    """The owner's Ed25519 key; only the owner-signer role can sign with it, only the owner can re-policy it."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.CfnKey(
            self,
            "Key",
            description="WAIaaS owner key: Ed25519 (ED25519_SHA_512, RAW) signatures by the owner-signer role",
            key_spec="ECC_NIST_EDWARDS25519",
            key_usage="SIGN_VERIFY",
            key_policy=key_policies.owner_key_policy(config),
            # The policy denies PutKeyPolicy to its creator (the CloudFormation execution role) by design; KMS's
            # lockout check would refuse that. The break-glass role can re-policy the key, so it is not locked out.
            bypass_policy_lockout_safety_check=True,
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


class OwnerKeyStack(Stack):
    """Deployable unit: the owner key. Deploy after the identity stack (its policy names the owner roles)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(
            scope,
            construct_id,
            env=deployment_env(config),
            description="WAIaaS owner key: Ed25519 signing key whose policy only the owner may replace",
            termination_protection=True,
        )
        self.owner = OwnerKey(self, "OwnerKey", config=config)
        CfnOutput(self, "OwnerKeyArn", value=self.owner.key.attr_arn)


class KeysStack(Stack):
    """Deployable unit: the seal key, redeployed with every new enclave image. Deploy after the identity stack."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(
            scope,
            construct_id,
            env=deployment_env(config),
            description="WAIaaS seal key: attestation-gated, pinned to the enclave image measurements",
            termination_protection=True,
        )
        self.seal = SealKey(self, "SealKey", config=config)
        CfnOutput(self, "SealKeyArn", value=self.seal.key.attr_arn)
