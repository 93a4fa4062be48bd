"""Identity stack: the owner's assume-role chain, the enclave host role, and the operator role.

    configured owner principals --(MFA, source identity, 1 h)--> owner-entry --(source identity)--> owner-signer
                                                                                 (the only kms:Sign principal)
    configured owner principals --(MFA, source identity, 1 h)--> owner-key-admin (break-glass: the only principal
                                                                  that may replace the owner key's policy)
    ec2.amazonaws.com --> enclave-host (instance profile)    operator principals --(MFA)--> operator (SSM, read)

The owner-signer and owner-key-admin roles have no identity policy: the owner key's policy is the only thing that
lets the first sign and the second replace that policy, and nothing else in the account can. The break-glass role is
assumed directly (not through the entry role) so that its session is itself the MFA-authenticated one: the owner key's
policy denies a policy change without `aws:MultiFactorAuthPresent`. Role names are fixed (`cdk.naming`) so the key
policies can name them.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from cdk import host_logs, naming
from cdk.config import DeploymentConfig
from cdk.endpoint_policies import STATE_TABLE_ACTIONS
from cdk.key_policies import IMAGE_SHA384_KEY, PCR8_KEY
from cdk.stack_base import acknowledge, deployment_env

SESSION = Duration.hours(1)
"""Shortest maximum session IAM allows for a role."""

MFA_MAX_AGE_SECONDS = 3600
"""An owner or operator must have authenticated with MFA within the last hour."""

HOST_TAG_KEY = "waiaas:role"
HOST_TAG_VALUE = "enclave-host"
"""Tag on the enclave hosts; operator SSM sessions are limited to instances carrying it."""


REQUIRE_SOURCE_IDENTITY = {"Null": {"sts:SourceIdentity": "false"}}
"""Every owner session carries the human's source identity (set on the first hop, kept by STS along a chain)."""


def _mfa_conditions() -> dict[str, dict[str, object]]:
    return {
        "Bool": {"aws:MultiFactorAuthPresent": "true"},
        "NumericLessThan": {"aws:MultiFactorAuthAge": str(MFA_MAX_AGE_SECONDS)},
    }


def _owner_assumed_role(
    scope: Construct, construct_id: str, *, config: DeploymentConfig, name: str, why: str
) -> iam.Role:
    """A role only the configured owners may assume, with MFA (within the hour) and their own source identity."""
    owners = [iam.ArnPrincipal(arn) for arn in config.owner_principals]
    role = iam.Role(
        scope,
        construct_id,
        role_name=name,
        description=why,
        assumed_by=iam.CompositePrincipal(*owners).with_conditions({**_mfa_conditions(), **REQUIRE_SOURCE_IDENTITY}),
        max_session_duration=SESSION,
    )
    role.assume_role_policy.add_statements(  # type: ignore[union-attr]
        iam.PolicyStatement(
            sid="OwnersSetTheirSourceIdentity",
            principals=owners,
            actions=["sts:SetSourceIdentity"],
            conditions=_mfa_conditions(),
        )
    )
    return role


class OwnerRoleChain(Construct):
    """Owner entry role -> owner-signer role, and the owner's break-glass role for the owner key's policy. Every
    session carries the human's source identity."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        self.entry = _owner_assumed_role(
            self,
            "EntryRole",
            config=config,
            name=naming.OWNER_ENTRY_ROLE,
            why="WAIaaS owner entry: MFA-authenticated owners assume it to reach the owner-signer role",
        )
        self.key_admin = _owner_assumed_role(
            self,
            "KeyAdminRole",
            config=config,
            name=naming.OWNER_KEY_ADMIN_ROLE,
            why="WAIaaS owner break-glass: the only principal that may replace the owner key's policy (MFA)",
        )
        self.signer = iam.Role(
            self,
            "SignerRole",
            role_name=naming.OWNER_SIGNER_ROLE,
            description="WAIaaS owner signer: the only principal the owner key lets call kms:Sign",
            assumed_by=iam.ArnPrincipal(self.entry.role_arn).with_conditions(REQUIRE_SOURCE_IDENTITY),
            max_session_duration=SESSION,
        )
        self.signer.assume_role_policy.add_statements(  # type: ignore[union-attr]
            iam.PolicyStatement(
                sid="EntryRolePassesSourceIdentity",
                principals=[iam.ArnPrincipal(self.entry.role_arn)],
                actions=["sts:SetSourceIdentity"],
            )
        )
        self.entry.add_to_policy(
            iam.PolicyStatement(
                sid="AssumeOwnerSignerOnly",
                actions=["sts:AssumeRole", "sts:SetSourceIdentity"],
                resources=[self.signer.role_arn],
            )
        )


class EnclaveHostIdentity(Construct):
    """Instance role and profile of the parent instances: state, artifacts, logs; KMS only with attestation."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        data = naming.bucket_arn(config, naming.data_bucket_name(config))
        table = naming.table_arn(config)
        shipped_groups = [host_logs.agent_resource(config, service) for service in host_logs.SERVICE_LOGS]
        hosts_stack = naming.stack_arn(config, naming.HOSTS_STACK)
        self.role = iam.Role(
            self,
            "Role",
            role_name=naming.ENCLAVE_HOST_ROLE,
            description="WAIaaS enclave host: parent proxy state and relaying; seal key only via attestation",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            max_session_duration=SESSION,
        )
        pinned = {IMAGE_SHA384_KEY: config.enclave.pcr0}
        if config.enclave.pcr8 is not None:
            pinned[PCR8_KEY] = config.enclave.pcr8
        policy = iam.Policy(
            self,
            "Policy",
            statements=[
                iam.PolicyStatement(
                    sid="StateTable",
                    actions=list(STATE_TABLE_ACTIONS),
                    resources=[table, f"{table}/index/*"],
                ),
                iam.PolicyStatement(
                    sid="ReadReleases",
                    actions=["s3:GetObject"],
                    resources=[f"{data}/{naming.RELEASES_PREFIX}*"],
                ),
                # The proxy copies each new sealed agent key here and the audit export writes here; both put each
                # object once (the bucket policy refuses a put that could replace one: cdk.state_stack) and never
                # delete: no s3:Delete*, nothing on object lock. A sealed-key copy is never read back.
                iam.PolicyStatement(
                    sid="SealedBlobs",
                    actions=["s3:PutObject"],
                    resources=[f"{data}/{naming.SEALED_PREFIX}*"],
                ),
                # An export that meets an object under its key (another host exporting the same records at once)
                # reads it back to compare: the exports are copies of the log the hosts hold anyway.
                iam.PolicyStatement(
                    sid="AuditExports",
                    actions=["s3:PutObject", "s3:GetObject"],
                    resources=[f"{data}/{naming.AUDIT_PREFIX}*"],
                ),
                iam.PolicyStatement(
                    # `waiaas audit export` finds the last export by its key (object keys under the prefix only).
                    sid="AuditExportKeys",
                    actions=["s3:ListBucket"],
                    resources=[data],
                    conditions={"StringEquals": {"s3:prefix": naming.AUDIT_PREFIX}},
                ),
                iam.PolicyStatement(
                    sid="AttestedRandomOnly",
                    # GenerateRandom names no key, so IAM (not the key policy) decides it: same pinned image.
                    actions=["kms:GenerateRandom"],
                    resources=["*"],
                    conditions={"StringEqualsIgnoreCase": pinned},
                ),
                iam.PolicyStatement(
                    # The CloudWatch agent on the host (`cdk.host_logs`): its streams in the two host log groups.
                    sid="HostLogs",
                    actions=list(host_logs.AGENT_ACTIONS),
                    resources=shipped_groups,
                ),
                iam.PolicyStatement(
                    # The boot script's last step (`cdk.user_data`): its outcome to the creation or rollout waiting
                    # for it. IAM names a stack, not a resource in it: the group is the only thing there that waits.
                    sid="SignalBootToHostsStack",
                    actions=["cloudformation:SignalResource"],
                    resources=[hosts_stack],
                ),
                iam.PolicyStatement(
                    sid="EnclaveHeartbeatMetric",
                    actions=["cloudwatch:PutMetricData"],
                    resources=["*"],
                    conditions={"StringEquals": {"cloudwatch:namespace": naming.METRIC_NAMESPACE}},
                ),
            ],
        )
        policy.attach_to_role(self.role)
        self.instance_profile = iam.InstanceProfile(
            self, "InstanceProfile", role=self.role, instance_profile_name=naming.ENCLAVE_HOST_ROLE
        )
        SessionManagerAgent(self, "SessionManager", role=self.role)
        for resource, reason in (
            (f"{table}/index/*", "The proxy queries the state table's secondary indexes, all of which it owns."),
            (f"{data}/{naming.RELEASES_PREFIX}*", "Hosts read any released enclave image and wheelhouse."),
            (
                f"{data}/{naming.SEALED_PREFIX}*",
                "Put only: a copy of each sealed agent key, one object per wallet and agent key (named at run time), "
                "ciphertext only the attested enclave opens.",
            ),
            (
                f"{data}/{naming.AUDIT_PREFIX}*",
                "One object per audit export, named by the seq range it holds (known at run time): put, and read back "
                "when another host exported the same records at once.",
            ),
            (
                hosts_stack,
                "A host signals its boot to the enclave-hosts stack, whose id (the ARN's last part) CloudFormation "
                "makes at creation; the stack name is fixed.",
            ),
            (
                "*",
                "kms:GenerateRandom and cloudwatch:PutMetricData have no resource type; the first is limited to the "
                "pinned enclave attestation and the second to the WAIaaS metric namespace by conditions.",
            ),
            *(
                (
                    host_logs.agent_resource(config, service),
                    f"The CloudWatch agent writes one stream per instance id into {host_logs.LOG_GROUPS[service]}; IAM "
                    "names a log group for these actions as 'log-group:NAME:*', the wildcard covering its streams.",
                )
                for service in host_logs.SERVICE_LOGS
            ),
        ):
            acknowledge(policy, f"AwsSolutions-IAM5[Resource::{resource}]", reason)


SESSION_MANAGER_AGENT_ACTIONS = (
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
)
"""What the SSM agent needs for Session Manager and nothing more (AWS's documented minimum for Session Manager; the
AWS-managed AWSCloud9SSMInstanceProfile holds exactly these). Deliberately not AmazonSSMManagedInstanceCore, which
adds ssm:GetParameter(s) on every parameter of the account, documents, associations and ec2messages (Run Command:
a command channel onto the host that Session Manager does not need)."""


class SessionManagerAgent(Construct):
    """Inline policy for the SSM agent on the enclave hosts: registration and Session Manager channels only."""

    def __init__(self, scope: Construct, construct_id: str, *, role: iam.IRole) -> None:
        super().__init__(scope, construct_id)
        policy = iam.Policy(
            self,
            "Policy",
            statements=[
                iam.PolicyStatement(
                    sid="SessionManagerOnly",
                    actions=list(SESSION_MANAGER_AGENT_ACTIONS),
                    resources=["*"],
                )
            ],
        )
        policy.attach_to_role(role)
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::*]",
            "The ssmmessages channel actions have no resource type, and ssm:UpdateInstanceInformation is the agent "
            "reporting its own instance; AWS documents exactly these on '*' as Session Manager's minimum.",
        )


class OperatorRole(Construct):
    """SSM sessions to the enclave hosts and read-only views; no data, no keys, no changes."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        arn_prefix = f"arn:{config.partition}"
        log_groups = f"{arn_prefix}:logs:{config.region}:{config.account}:log-group:{naming.LOG_GROUP_PREFIX}*"
        instances = f"{arn_prefix}:ec2:{config.region}:{config.account}:instance/*"
        sessions = f"{arn_prefix}:ssm:{config.region}:{config.account}:session/${{aws:userid}}-*"
        self.role = iam.Role(
            self,
            "Role",
            role_name=naming.OPERATOR_ROLE,
            description="WAIaaS operator: Session Manager shells on enclave hosts and read-only monitoring",
            assumed_by=iam.CompositePrincipal(
                *[iam.ArnPrincipal(arn) for arn in config.operator_principals]
            ).with_conditions(_mfa_conditions()),
            max_session_duration=SESSION,
        )
        policy = iam.Policy(
            self,
            "Policy",
            statements=[
                iam.PolicyStatement(
                    sid="SessionsToEnclaveHostsOnly",
                    actions=["ssm:StartSession"],
                    resources=[instances],
                    conditions={"StringEquals": {f"ssm:resourceTag/{HOST_TAG_KEY}": HOST_TAG_VALUE}},
                ),
                iam.PolicyStatement(
                    sid="ShellDocument",
                    actions=["ssm:StartSession"],
                    resources=[
                        f"{arn_prefix}:ssm:{config.region}:{config.account}:document/SSM-SessionManagerRunShell"
                    ],
                ),
                iam.PolicyStatement(
                    sid="OwnSessionsOnly",
                    actions=["ssm:TerminateSession", "ssm:ResumeSession"],
                    resources=[sessions],
                ),
                iam.PolicyStatement(
                    sid="ReadOnlyViews",
                    actions=[
                        "ssm:DescribeSessions",
                        "ssm:GetConnectionStatus",
                        "ssm:DescribeInstanceInformation",
                        "ec2:DescribeInstances",
                        "autoscaling:DescribeAutoScalingGroups",
                        "elasticloadbalancing:DescribeTargetHealth",
                        "cloudwatch:DescribeAlarms",
                        "cloudwatch:GetMetricData",
                    ],
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    sid="ReadHostLogs",
                    actions=["logs:FilterLogEvents", "logs:GetLogEvents", "logs:DescribeLogStreams"],
                    resources=[log_groups, f"{log_groups}:log-stream:*"],
                ),
            ],
        )
        policy.attach_to_role(self.role)
        for resource, reason in (
            (instances, "Host instance ids change with every scale-out; the tag condition limits it to enclave hosts."),
            (
                sessions.replace("${aws:userid}", "<aws:userid>"),  # cdk-nag's rendering of the policy variable
                "An operator can end or resume only sessions whose id starts with their own user id.",
            ),
            ("*", "Describe/Get monitoring calls have no resource-level permissions; all are read-only."),
            (log_groups, "Read access to the /waiaas/ log groups created by the enclave-hosts stack."),
            (f"{log_groups}:log-stream:*", "Log streams are named per instance at boot, so names are unknown."),
        ):
            acknowledge(policy, f"AwsSolutions-IAM5[Resource::{resource}]", reason)


class IdentityStack(Stack):
    """Deployable unit: every IAM role of the deployment. Deploy first: the key policies name these roles."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(
            scope,
            construct_id,
            env=deployment_env(config),
            description="WAIaaS IAM: owner assume-role chain, enclave host role, operator role",
        )
        self.owner = OwnerRoleChain(self, "Owner", config=config)
        self.host = EnclaveHostIdentity(self, "EnclaveHost", config=config)
        self.operator = OperatorRole(self, "Operator", config=config)
        CfnOutput(self, "OwnerEntryRoleArn", value=self.owner.entry.role_arn)
        CfnOutput(self, "OwnerSignerRoleArn", value=self.owner.signer.role_arn)
        CfnOutput(self, "OperatorRoleArn", value=self.operator.role.role_arn)
