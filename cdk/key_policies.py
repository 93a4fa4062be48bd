"""Key policies of the owner key and the seal key, as the only place that grants use of either key.

Both policies follow the same shape:

1. Key administrators (named principals of this account) get an explicit list of management actions. No
   wildcard and no use action: they can describe, tag, disable and schedule deletion, but cannot sign, decrypt,
   generate data keys, re-encrypt or create grants.
2. Exactly one role may use the key, under conditions (owner key: `kms:Sign` with pure Ed25519 over a raw message;
   seal key: unwrap only with an attestation document from the pinned enclave image).
3. Explicit denies to every principal restate the conditions, so that no later grant, IAM policy or admin
   mistake can widen them. A negated condition operator is true when its key is absent from the request: a call
   without an attestation document (or without a source identity) is caught by the deny.

Who may replace a policy differs, because `kms:PutKeyPolicy` replaces the whole document, denies included:

- Seal key: the key administrators (the CloudFormation execution role among them). Pinning a new enclave image IS a
  policy change, so whoever deploys decides which code may unwrap agent keys; no statement can survive a
  replacement, so this trust is stated (docs/deploy.md, "Who is trusted") and every change raises the
  `KeyPolicyChanged` alarm.
- Owner key: nobody but the owner's break-glass role (`waiaas-owner-key-admin`, assumed directly by an owner with
  MFA and a source identity). Its policy does not change with image rollouts, so the key administrators, and with
  them the deployment role, get no `kms:PutKeyPolicy` and an explicit deny. KMS's lockout check refuses a creator
  that could not re-policy the key, so the owner key is created with `BypassPolicyLockoutSafetyCheck` (the
  break-glass role can). A deliberate change goes through `owner_key_policy(..., admitted_writer=...)`: the owner
  puts that policy, which admits the deployment role until the next deployment replaces it with the final one.

No statement grants `kms:*`; the account root is not a principal; grants are denied outright.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import aws_iam as iam

from cdk import naming
from cdk.config import DeploymentConfig

ADMIN_ACTIONS = (
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:ListGrants",
    "kms:PutKeyPolicy",
    "kms:UpdateKeyDescription",
    "kms:EnableKey",
    "kms:DisableKey",
    "kms:EnableKeyRotation",
    "kms:DisableKeyRotation",
    "kms:RotateKeyOnDemand",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:CreateAlias",
    "kms:UpdateAlias",
    "kms:DeleteAlias",
    "kms:RevokeGrant",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
)
"""Key management without key use. `kms:CreateGrant` is deliberately absent: a grant is a way to use the key."""

POLICY_WRITE = "kms:PutKeyPolicy"
OWNER_KEY_ADMIN_ACTIONS = tuple(action for action in ADMIN_ACTIONS if action != POLICY_WRITE)
"""The owner key's administrators manage it but cannot replace its policy (that would let them write in a signer)."""

USE_ACTIONS = frozenset(
    {
        "kms:Sign",
        "kms:Verify",
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyPair",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:GenerateDataKeyPairWithoutPlaintext",
        "kms:GenerateMac",
        "kms:VerifyMac",
        "kms:DeriveSharedSecret",
        "kms:GenerateRandom",
        "kms:CreateGrant",
    }
)
"""Actions that use key material (or delegate its use); administrators get none of them."""

SIGNING_ALGORITHM = "ED25519_SHA_512"
"""Pure Ed25519: the only algorithm that yields valid Solana signatures (never ED25519_PH_SHA_512)."""
MESSAGE_TYPE = "RAW"

IMAGE_SHA384_KEY = "kms:RecipientAttestation:ImageSha384"
"""KMS condition key carrying PCR0 of the attestation document in the request's Recipient."""
PCR8_KEY = "kms:RecipientAttestation:PCR8"
"""KMS condition key carrying PCR8 (signing certificate of the image) of the attestation document."""

ATTESTED_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateRandom")
"""What the enclave does with the seal key, each call carrying a Recipient attestation document."""
UNWRAP_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyPair", "kms:DeriveSharedSecret")
"""Actions that can release key material, denied to everyone unless the attestation matches."""


def admin_statement(config: DeploymentConfig, actions: tuple[str, ...] = ADMIN_ACTIONS) -> iam.PolicyStatement:
    return iam.PolicyStatement(
        sid="KeyAdministrationWithoutUse",
        effect=iam.Effect.ALLOW,
        principals=[iam.ArnPrincipal(arn) for arn in config.key_admin_principals],
        actions=list(actions),
        resources=["*"],
    )


def _deny_everyone(sid: str, actions: list[str], conditions: dict[str, Any] | None = None) -> iam.PolicyStatement:
    """An explicit deny to every principal (point 3 above): no grant, IAM policy or other statement outweighs it."""
    return iam.PolicyStatement(
        sid=sid,
        effect=iam.Effect.DENY,
        principals=[iam.AnyPrincipal()],
        actions=actions,
        resources=["*"],
        conditions=conditions,
    )


def _deny_grants() -> iam.PolicyStatement:
    return _deny_everyone("DenyGrants", ["kms:CreateGrant"])


def _owner_key_policy_writers(config: DeploymentConfig, admitted_writer: str | None) -> list[iam.PolicyStatement]:
    """Only the break-glass role may replace the owner key's policy, with MFA and a source identity; an admitted
    writer (one deployment, see the module docstring) may too, without them (a CloudFormation session has neither)."""
    break_glass = naming.role_arn(config, naming.OWNER_KEY_ADMIN_ROLE)
    writers = [break_glass] if admitted_writer is None else [break_glass, admitted_writer]
    exempt = {} if admitted_writer is None else {"ArnNotEquals": {"aws:PrincipalArn": admitted_writer}}
    return [
        iam.PolicyStatement(
            sid="OwnerKeyPolicyWriters",
            effect=iam.Effect.ALLOW,
            principals=[iam.ArnPrincipal(arn) for arn in writers],
            actions=[POLICY_WRITE, "kms:GetKeyPolicy", "kms:DescribeKey"],
            resources=["*"],
        ),
        _deny_everyone(
            "DenyPolicyChangeByAnyOtherPrincipal",
            [POLICY_WRITE],
            {"ArnNotEquals": {"aws:PrincipalArn": writers if admitted_writer else break_glass}},
        ),
        _deny_everyone(
            "DenyPolicyChangeWithoutMfa",
            [POLICY_WRITE],
            # IfExists: a request whose credentials carry no MFA information at all is denied too.
            {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}, **exempt},
        ),
        _deny_everyone(
            "DenyPolicyChangeWithoutSourceIdentity", [POLICY_WRITE], {"Null": {"aws:SourceIdentity": "true"}, **exempt}
        ),
    ]


def owner_key_policy(config: DeploymentConfig, *, admitted_writer: str | None = None) -> iam.PolicyDocument:
    """The owner key's policy. `admitted_writer` (a role ARN) gives the variant the owner puts before a deliberate
    policy change: that role may also replace the policy, until a deployment replaces it with the final one."""
    roles = naming.role_arn(config, "")
    if admitted_writer is not None and (not admitted_writer.startswith(roles) or admitted_writer == roles):
        raise ValueError(f"the admitted writer must be a role of account {config.account}, not {admitted_writer!r}")
    signer = naming.role_arn(config, naming.OWNER_SIGNER_ROLE)
    entry = naming.role_arn(config, naming.OWNER_ENTRY_ROLE)
    return iam.PolicyDocument(
        statements=[
            admin_statement(config, OWNER_KEY_ADMIN_ACTIONS),
            *_owner_key_policy_writers(config, admitted_writer),
            iam.PolicyStatement(
                sid="OwnerSignerSignsPureEd25519",
                effect=iam.Effect.ALLOW,
                principals=[iam.ArnPrincipal(signer)],
                actions=["kms:Sign"],
                resources=["*"],
                conditions={
                    "StringEquals": {"kms:SigningAlgorithm": SIGNING_ALGORITHM, "kms:MessageType": MESSAGE_TYPE}
                },
            ),
            iam.PolicyStatement(
                sid="OwnerRolesReadPublicKey",
                effect=iam.Effect.ALLOW,
                principals=[iam.ArnPrincipal(signer), iam.ArnPrincipal(entry)],
                actions=["kms:GetPublicKey", "kms:DescribeKey"],
                resources=["*"],
            ),
            _deny_everyone("DenySignByAnyOtherPrincipal", ["kms:Sign"], {"ArnNotEquals": {"aws:PrincipalArn": signer}}),
            _deny_everyone(
                "DenySignOtherThanPureEd25519",
                ["kms:Sign"],
                {"StringNotEquals": {"kms:SigningAlgorithm": SIGNING_ALGORITHM}},
            ),
            _deny_everyone("DenySignOfDigests", ["kms:Sign"], {"StringNotEquals": {"kms:MessageType": MESSAGE_TYPE}}),
            _deny_everyone("DenySignWithoutSourceIdentity", ["kms:Sign"], {"Null": {"aws:SourceIdentity": "true"}}),
            _deny_grants(),
        ]
    )


def seal_key_policy(config: DeploymentConfig) -> iam.PolicyDocument:
    host = naming.role_arn(config, naming.ENCLAVE_HOST_ROLE)
    pinned = {IMAGE_SHA384_KEY: config.enclave.pcr0}
    if config.enclave.pcr8 is not None:
        pinned[PCR8_KEY] = config.enclave.pcr8
    statements = [
        admin_statement(config),
        iam.PolicyStatement(
            sid="EnclaveUsesKeyWithPinnedAttestation",
            effect=iam.Effect.ALLOW,
            principals=[iam.ArnPrincipal(host)],
            actions=list(ATTESTED_ACTIONS),
            resources=["*"],
            # Keys inside one operator are ANDed: every pinned measurement must match.
            conditions={"StringEqualsIgnoreCase": pinned},
        ),
    ]
    # One deny per measurement: within one deny, negated keys would be ANDed, and a request matching one
    # measurement but not the other would escape it.
    for sid, key, value in (
        ("DenyUnwrapWithoutPinnedImage", IMAGE_SHA384_KEY, config.enclave.pcr0),
        ("DenyUnwrapWithoutPinnedSigner", PCR8_KEY, config.enclave.pcr8),
    ):
        if value is None:
            continue
        statements.append(_deny_everyone(sid, list(UNWRAP_ACTIONS), {"StringNotEqualsIgnoreCase": {key: value}}))
    statements.append(_deny_everyone("DenyReEncrypt", ["kms:ReEncryptFrom", "kms:ReEncryptTo"]))
    statements.append(_deny_grants())
    return iam.PolicyDocument(statements=statements)
