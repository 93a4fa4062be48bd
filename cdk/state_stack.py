"""State stack: the parent proxy's DynamoDB table, the data bucket (sealed key blobs, audit exports, releases) and
the log bucket that receives S3 server access logs, load-balancer access logs and CloudTrail.

Everything here is retained when the stack is deleted, and the stack is protected against termination.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk import naming
from cdk.config import DeploymentConfig
from cdk.stack_base import deployment_env

TTL_ATTRIBUTE = "expires_at"
"""Item expiry attribute the DynamoDB store writes (parent_proxy/store/dynamodb_base.py)."""

OUTBOX_DUE_INDEX = "outbox_due"
OUTBOX_DUE_ATTRIBUTE = "due_key"
"""The global secondary index the store claims webhooks through (parent_proxy/store/dynamodb_outbox_heads.py): HASH
``pk``, RANGE ``due_key`` (present on the outbox's wallet heads and newcomer marks only), all attributes projected.
The store's `create_table` declares the same (tests/cdk/test_state_table_matches_store.py compares them)."""

OBJECT_LOCK_DAYS = 365
"""Default governance-mode retention on the data bucket: every version of a sealed-key copy or an audit export stays
for a year; only a principal allowed s3:BypassGovernanceRetention (none of this app's roles) can remove it sooner."""

WRITE_ONCE_PREFIXES = (naming.SEALED_PREFIX, naming.AUDIT_PREFIX)
"""Data-bucket prefixes whose objects are put once and never replaced (the bucket policy refuses any other put)."""

LOG_EXPIRY_DAYS = 400
CLOUDTRAIL_PREFIX = "cloudtrail"
ALB_LOG_PREFIX = "alb"


class StateTable(Construct):
    """One table, string keys pk/sk, TTL, on-demand, the outbox's due index; point-in-time recovery and deletion
    protection."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.TableV2(
            self,
            "Table",
            table_name=naming.STATE_TABLE,
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing=dynamodb.Billing.on_demand(),
            encryption=dynamodb.TableEncryptionV2.aws_managed_key(),
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=True,
            time_to_live_attribute=TTL_ATTRIBUTE,
            global_secondary_indexes=[
                dynamodb.GlobalSecondaryIndexPropsV2(
                    index_name=OUTBOX_DUE_INDEX,
                    partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
                    sort_key=dynamodb.Attribute(name=OUTBOX_DUE_ATTRIBUTE, type=dynamodb.AttributeType.STRING),
                    projection_type=dynamodb.ProjectionType.ALL,
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )


class Buckets(Construct):
    """The log bucket and the data bucket."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        self.logs = s3.Bucket(
            self,
            "LogBucket",
            bucket_name=naming.logs_bucket_name(config),
            # Load-balancer access logs support SSE-S3 only.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            versioned=True,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(LOG_EXPIRY_DAYS))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        # No AwsSolutions-S1 finding here: cdk-nag recognises a bucket that receives server access logs.
        # CloudTrail writes here; the trail (monitoring stack) is named by a fixed ARN so no stack cycle arises.
        trail = naming.trail_arn(config)
        cloudtrail = iam.ServicePrincipal("cloudtrail.amazonaws.com")
        self.logs.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudTrailAclCheck",
                principals=[cloudtrail],
                actions=["s3:GetBucketAcl"],
                resources=[self.logs.bucket_arn],
                conditions={"StringEquals": {"aws:SourceArn": trail}},
            )
        )
        self.logs.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudTrailWrite",
                principals=[cloudtrail],
                actions=["s3:PutObject"],
                resources=[self.logs.arn_for_objects(f"{CLOUDTRAIL_PREFIX}/AWSLogs/{config.account}/*")],
                conditions={"StringEquals": {"aws:SourceArn": trail, "s3:x-amz-acl": "bucket-owner-full-control"}},
            )
        )
        self.data = s3.Bucket(
            self,
            "DataBucket",
            bucket_name=naming.data_bucket_name(config),
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            versioned=True,
            object_lock_enabled=True,
            object_lock_default_retention=s3.ObjectLockRetention.governance(Duration.days(OBJECT_LOCK_DAYS)),
            server_access_logs_bucket=self.logs,
            server_access_logs_prefix="s3-access/data/",
            removal_policy=RemovalPolicy.RETAIN,
        )
        # Sealed-key copies and audit exports are written once: a put without If-None-Match (which S3 refuses when
        # the key exists) would add a new current version over an object (parent_proxy.data_bucket).
        self.data.add_to_resource_policy(
            iam.PolicyStatement(
                sid="WriteOnceSealedCopiesAndAuditExports",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:PutObject"],
                resources=[self.data.arn_for_objects(f"{prefix}*") for prefix in WRITE_ONCE_PREFIXES],
                conditions={"Null": {"s3:if-none-match": "true"}},
            )
        )


class StateStack(Stack):
    """Deployable unit: table and buckets."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(
            scope,
            construct_id,
            env=deployment_env(config),
            description="WAIaaS state: DynamoDB table, sealed-blob and audit bucket, log bucket",
            termination_protection=True,
        )
        self.state = StateTable(self, "State")
        self.buckets = Buckets(self, "Buckets", config=config)
        CfnOutput(self, "DataBucketName", value=self.buckets.data.bucket_name)
        CfnOutput(self, "StateTableName", value=self.state.table.table_name)
