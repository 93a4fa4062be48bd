"""VPC endpoint policies: what the hosts may reach through each endpoint, and for whom.

Interface endpoints (only those whose service documents endpoint-policy support):

- every statement requires `aws:PrincipalAccount` = this account, so credentials from another account (a taken-over
  host exfiltrating with an attacker's keys) cannot use the endpoints;
- KMS: only the attested calls the enclave makes (`key_policies.ATTESTED_ACTIONS`), and the key-bearing ones only on
  keys of this account and region; CloudWatch Logs: only log groups of this account and region;
- CloudFormation: `cloudformation:SignalResource` on the enclave-hosts stack (the hosts' boot signal), nothing else;
- STS, SSM, CloudWatch metrics: the service's actions, for this account's principals (their resources are roles,
  AWS-owned documents or nothing at all, so a resource restriction would either say nothing or break the agent).

SSM messages and EC2 messages keep the default policy: their endpoint-policy support is not documented where this
was checked (docs/deploy.md, Network), and IAM on the host role still limits what crosses them.

Gateway endpoints: S3 to this deployment's data bucket and the package/agent repositories, DynamoDB to the table.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam

from cdk import naming
from cdk.config import DeploymentConfig
from cdk.key_policies import ATTESTED_ACTIONS

THIS_ACCOUNT_SERVICES = {"Sts": "sts", "Ssm": "ssm", "Monitoring": "cloudwatch"}
"""Interface endpoints (by construct id) open to every action of their service, for this account's principals."""

DEFAULT_POLICY_ENDPOINTS = frozenset({"SsmMessages", "Ec2Messages"})
"""Interface endpoints left with the default policy (endpoint-policy support not confirmed)."""

STATE_TABLE_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:ConditionCheckItem",
    "dynamodb:BatchGetItem",
)


def _this_account(config: DeploymentConfig) -> dict[str, dict[str, str]]:
    return {"StringEquals": {"aws:PrincipalAccount": config.account}}


def interface_endpoint_statements(endpoint_id: str, config: DeploymentConfig) -> list[iam.PolicyStatement]:
    """The policy statements of one interface endpoint; [] for the endpoints that keep the default policy."""
    anyone = [iam.AnyPrincipal()]
    regional = f"arn:{config.partition}:{{service}}:{config.region}:{config.account}"
    if endpoint_id == "Kms":
        key_bearing = [a for a in ATTESTED_ACTIONS if a != "kms:GenerateRandom"]
        return [
            iam.PolicyStatement(
                sid="AttestedUnwrapWithThisAccountsKeys",
                principals=anyone,
                actions=key_bearing,
                resources=[f"{regional.format(service='kms')}:key/*"],
                conditions=_this_account(config),
            ),
            iam.PolicyStatement(
                sid="AttestedRandom",  # GenerateRandom names no key
                principals=anyone,
                actions=["kms:GenerateRandom"],
                resources=["*"],
                conditions=_this_account(config),
            ),
        ]
    if endpoint_id == "Logs":
        return [
            iam.PolicyStatement(
                sid="ThisAccountsLogGroups",
                principals=anyone,
                actions=["logs:*"],
                resources=[f"{regional.format(service='logs')}:log-group:*"],
                conditions=_this_account(config),
            )
        ]
    if endpoint_id == "CloudFormation":
        return [
            iam.PolicyStatement(
                sid="BootSignalsToTheHostsStack",
                principals=anyone,
                actions=["cloudformation:SignalResource"],
                resources=[naming.stack_arn(config, naming.HOSTS_STACK)],
                conditions=_this_account(config),
            )
        ]
    if endpoint_id in THIS_ACCOUNT_SERVICES:
        return [
            iam.PolicyStatement(
                sid="ThisAccountsPrincipals",
                principals=anyone,
                actions=[f"{THIS_ACCOUNT_SERVICES[endpoint_id]}:*"],
                resources=["*"],
                conditions=_this_account(config),
            )
        ]
    if endpoint_id in DEFAULT_POLICY_ENDPOINTS:
        return []
    raise ValueError(f"no endpoint policy decided for interface endpoint {endpoint_id}")


def s3_endpoint_statements(config: DeploymentConfig) -> list[iam.PolicyStatement]:
    """The data bucket as the hosts use it (releases read; sealed-key copies and audit exports put, the exports read
    back and their keys listed: `cdk.identity_stack` grants the same), and the package and agent repositories
    (read)."""
    data = naming.bucket_arn(config, naming.data_bucket_name(config))
    region = config.region
    return [
        iam.PolicyStatement(
            sid="DeploymentReleases",
            principals=[iam.AnyPrincipal()],
            actions=["s3:GetObject"],
            resources=[f"{data}/{naming.RELEASES_PREFIX}*"],
        ),
        iam.PolicyStatement(
            sid="DeploymentSealedCopiesAndAuditExports",
            principals=[iam.AnyPrincipal()],
            actions=["s3:PutObject"],
            resources=[f"{data}/{naming.SEALED_PREFIX}*", f"{data}/{naming.AUDIT_PREFIX}*"],
        ),
        iam.PolicyStatement(
            sid="DeploymentAuditExportsReadBack",
            principals=[iam.AnyPrincipal()],
            actions=["s3:GetObject"],
            resources=[f"{data}/{naming.AUDIT_PREFIX}*"],
        ),
        iam.PolicyStatement(
            sid="DeploymentAuditExportKeys",
            principals=[iam.AnyPrincipal()],
            actions=["s3:ListBucket"],
            resources=[data],
        ),
        iam.PolicyStatement(
            sid="PackageAndAgentRepositories",
            principals=[iam.AnyPrincipal()],
            actions=["s3:GetObject"],
            resources=[
                # Amazon Linux 2023 package mirrors (the suffix after the region is not confirmed by AWS
                # documentation: docs/deploy.md, Network) and the SSM agent's own buckets, in this region.
                f"arn:{config.partition}:s3:::al2023-repos-{region}-*/*",
                f"arn:{config.partition}:s3:::amazon-ssm-{region}/*",
                f"arn:{config.partition}:s3:::amazon-ssm-packages-{region}/*",
                f"arn:{config.partition}:s3:::{region}-birdwatcher-prod/*",
                f"arn:{config.partition}:s3:::aws-ssm-{region}/*",
                f"arn:{config.partition}:s3:::aws-ssm-document-attachments-{region}/*",
                f"arn:{config.partition}:s3:::patch-baseline-snapshot-{region}/*",
            ],
        ),
    ]


def dynamodb_endpoint_statement(config: DeploymentConfig) -> iam.PolicyStatement:
    return iam.PolicyStatement(
        sid="StateTableOnly",
        principals=[iam.AnyPrincipal()],
        actions=list(STATE_TABLE_ACTIONS),
        resources=[naming.table_arn(config), f"{naming.table_arn(config)}/index/*"],
    )
