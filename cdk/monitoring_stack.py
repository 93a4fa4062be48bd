"""Monitoring stack: the notification topic, a CloudTrail trail into CloudWatch Logs, and alarms on key use.

The trail records every Region: since late 2021 CloudTrail delivers IAM and other global-service events only to
trails that include us-east-1, so a single-Region trail elsewhere would never see an IAM change.

Alarms (each to the encrypted notification topic); the two marked HIGH SEVERITY are changes to who may open agent
keys or sign as the owner, to investigate one by one (docs/deploy.md, "Who is trusted"):

- `OwnerKeyUsed`: any `kms:Sign` with the owner key. The owner signs rarely and deliberately; every use is news.
- `RefusedAttestedUnwrap`: a refused Decrypt / GenerateDataKey / GenerateRandom on the seal key or by the enclave
  host role: something without the pinned enclave image tried to unwrap an agent key.
- `KeyPolicyChanged` (HIGH SEVERITY): `PutKeyPolicy` on either key. The seal key's policy decides which enclave
  image may unwrap agent keys, the owner key's who may sign as the owner: expected only with an image rollout
  (seal key) or the owner's deliberate change (owner key).
- `KeyStateOrAliasChanged`: a grant, disable, rotation switched off or scheduled deletion on either key, or a change
  to either key's alias (created, re-pointed or deleted; matched by alias name, which is where CloudTrail puts it).
- `WaiaasRoleChanged` (HIGH SEVERITY): any IAM write to a `waiaas-*` role (trust policy, inline or attached
  policies, boundary, deletion): the owner chain's trust policies are what stand between an IAM administrator and
  the owner key's `kms:Sign`.

Enclave-health alarms live with the hosts (`cdk.hosts_stack.EnclaveHealthAlarms`) and use the same topic.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudtrail as cloudtrail
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from cdk import key_policies, naming
from cdk.config import DeploymentConfig
from cdk.stack_base import deployment_env
from cdk.state_stack import CLOUDTRAIL_PREFIX

TRAIL_LOG_RETENTION = logs.RetentionDays.ONE_YEAR
ALARM_PERIOD = Duration.minutes(5)

KEY_POLICY_EVENTS = ("PutKeyPolicy",)
KEY_STATE_EVENTS = ("CreateGrant", "DisableKey", "ScheduleKeyDeletion", "DisableKeyRotation")
"""KMS events whose CloudTrail record names the key in `resources[0]`."""
ALIAS_CHANGE_EVENTS = ("CreateAlias", "UpdateAlias", "DeleteAlias")
"""KMS events whose record names the ALIAS in `resources[0]` (and the alias in `requestParameters.aliasName`)."""
ROLE_CHANGE_EVENTS = (
    "CreateRole",
    "DeleteRole",
    "UpdateRole",
    "UpdateAssumeRolePolicy",
    "PutRolePolicy",
    "DeleteRolePolicy",
    "AttachRolePolicy",
    "DetachRolePolicy",
    "PutRolePermissionsBoundary",
    "DeleteRolePermissionsBoundary",
    "TagRole",
    "UntagRole",
    "AddRoleToInstanceProfile",
    "RemoveRoleFromInstanceProfile",
)
"""IAM writes whose CloudTrail record names the role in `requestParameters.roleName`."""
HIGH_SEVERITY = "HIGH SEVERITY: "


def _any_of(selector: str, values: tuple[str, ...]) -> str:
    """`(($.x = "a") || ($.x = "b"))`: CloudWatch Logs needs parentheses wherever && and || meet."""
    return "(" + " || ".join(f'({selector} = "{value}")' for value in values) + ")"


class Notifications(Construct):
    """SNS topic encrypted with its own key, which only CloudWatch alarms and Auto Scaling may use.

    The topic's policy replaces SNS's default one (which let the account's principals publish), so it names every
    publisher of this app: the CloudWatch alarm service for this account's alarms in this Region (all of them:
    the key-use alarms here, the enclave-health and audit-export alarms of the hosts stack), and Auto Scaling's
    service-linked role (the group's launch and terminate notifications). Anything else is denied by default, and
    a publish without TLS by the explicit deny CDK adds for `enforce_ssl`.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        autoscaling_role = (
            f"arn:{config.partition}:iam::{config.account}:role/aws-service-role/"
            "autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
        )
        policy = iam.PolicyDocument(
            statements=[
                key_policies.admin_statement(config),
                iam.PolicyStatement(
                    sid="AlarmsPublish",
                    principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                    actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=["*"],
                    conditions={"StringEquals": {"aws:SourceAccount": config.account}},
                ),
                iam.PolicyStatement(
                    sid="AutoScalingPublishes",
                    principals=[iam.ArnPrincipal(autoscaling_role)],
                    actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=["*"],
                ),
            ]
        )
        self.key = kms.CfnKey(
            self,
            "Key",
            description="WAIaaS notifications: encrypts the alarm topic",
            key_spec="SYMMETRIC_DEFAULT",
            key_usage="ENCRYPT_DECRYPT",
            key_policy=policy,
            enable_key_rotation=True,
            pending_window_in_days=30,
        )
        self.key.apply_removal_policy(RemovalPolicy.RETAIN)
        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=f"{naming.NAME}-alarms",
            display_name="WAIaaS security and health alarms",
            master_key=kms.Key.from_key_arn(self, "TopicKey", self.key.attr_arn),
            enforce_ssl=True,
        )
        alarms = f"arn:{config.partition}:cloudwatch:{config.region}:{config.account}:alarm:*"
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AlarmsPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": config.account},
                    "ArnLike": {"aws:SourceArn": alarms},
                },
            )
        )
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AutoScalingPublishes",
                principals=[iam.ArnPrincipal(autoscaling_role)],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
            )
        )
        for email in config.alarm_emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))


class KeyUseAlarms(Construct):
    """CloudTrail into CloudWatch Logs, metric filters on the two keys and the `waiaas-*` roles, and their alarms."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        owner_key_arn: str,
        seal_key_arn: str,
        topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        # The log bucket by name, not as a construct: its policy (state stack) admits exactly this trail by ARN.
        # Passing the construct would make CDK add broader, unconditioned CloudTrail statements to it.
        trail_bucket = s3.Bucket.from_bucket_name(self, "TrailBucket", naming.logs_bucket_name(config))
        self.trail = cloudtrail.Trail(
            self,
            "Trail",
            trail_name=naming.TRAIL,
            bucket=trail_bucket,
            s3_key_prefix=CLOUDTRAIL_PREFIX,
            send_to_cloud_watch_logs=True,
            cloud_watch_logs_retention=TRAIL_LOG_RETENTION,
            enable_file_validation=True,
            include_global_service_events=True,
            is_multi_region_trail=True,
            management_events=cloudtrail.ReadWriteType.ALL,
        )
        # CDK makes the trail depend on its log role both explicitly and through GetAtt; keep the explicit
        # dependency on the role's policy only (cfn-lint W3005 flags the duplicate).
        cfn_trail = self.trail.node.default_child
        logs_role = self.trail.node.find_child("LogsRole")
        cfn_policy = logs_role.node.find_child("DefaultPolicy").node.default_child
        if isinstance(cfn_trail, cloudtrail.CfnTrail) and isinstance(cfn_policy, iam.CfnPolicy):
            cfn_trail.add_override("DependsOn", [Stack.of(self).get_logical_id(cfn_policy)])
        log_group = self.trail.log_group
        if log_group is None:  # send_to_cloud_watch_logs=True always creates one
            raise RuntimeError("CloudTrail log group missing")
        kms_event = '($.eventSource = "kms.amazonaws.com")'
        owner = f'($.resources[0].ARN = "{owner_key_arn}")'
        seal = f'($.resources[0].ARN = "{seal_key_arn}")'
        host = f'($.userIdentity.sessionContext.sessionIssuer.userName = "{naming.ENCLAVE_HOST_ROLE}")'
        unwrap = _any_of("$.eventName", ("Decrypt", "GenerateDataKey", "GenerateRandom"))
        key_policy_change = _any_of("$.eventName", KEY_POLICY_EVENTS)
        key_state_change = _any_of("$.eventName", KEY_STATE_EVENTS)
        # Alias events name the alias, not the key, in resources[0]: match them by the alias name they change.
        our_aliases = _any_of("$.requestParameters.aliasName", (naming.OWNER_KEY_ALIAS, naming.SEAL_KEY_ALIAS))
        alias_change = f"{_any_of('$.eventName', ALIAS_CHANGE_EVENTS)} && {our_aliases}"
        patterns = {
            "OwnerKeyUsed": (
                f'{{ {kms_event} && ($.eventName = "Sign") && {owner} }}',
                "The owner key signed (or was asked to sign) something",
            ),
            "RefusedAttestedUnwrap": (
                f'{{ {kms_event} && {unwrap} && ($.errorCode = "AccessDenied*") && ({seal} || {host}) }}',
                "KMS refused an unwrap of the seal key: no attestation, or not the pinned enclave image",
            ),
            "KeyPolicyChanged": (
                f"{{ {kms_event} && {key_policy_change} && ({owner} || {seal}) }}",
                f"{HIGH_SEVERITY}a WAIaaS key policy was replaced: it decides which enclave image may unwrap agent "
                "keys (seal key) or who may sign as the owner (owner key); compare it with the release's policy",
            ),
            "KeyStateOrAliasChanged": (
                f"{{ {kms_event} && (({key_state_change} && ({owner} || {seal})) || ({alias_change})) }}",
                "A WAIaaS key's grants, state or alias changed",
            ),
            "WaiaasRoleChanged": (
                f'{{ ($.eventSource = "iam.amazonaws.com") && {_any_of("$.eventName", ROLE_CHANGE_EVENTS)} && '
                f'($.requestParameters.roleName = "{naming.NAME}-*") }}',
                f"{HIGH_SEVERITY}an IAM write to a WAIaaS role (trust policy, policies, boundary, deletion): the owner "
                "roles' trust policies guard kms:Sign with the owner key",
            ),
        }
        action = cw_actions.SnsAction(topic)
        for name, (pattern, description) in patterns.items():
            metric_filter = logs.MetricFilter(
                self,
                f"{name}Filter",
                log_group=log_group,
                filter_pattern=logs.FilterPattern.literal(pattern),
                metric_namespace=naming.TRAIL_METRIC_NAMESPACE,
                metric_name=name,
                metric_value="1",
            )
            alarm = cloudwatch.Alarm(
                self,
                name,
                alarm_description=description,
                metric=metric_filter.metric(statistic="Sum", period=ALARM_PERIOD),
                threshold=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(action)


class MonitoringStack(Stack):
    """Deployable unit: notifications, trail, key-use alarms. Deploy after keys and state, before the hosts."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        owner_key: kms.CfnKey,
        seal_key: kms.CfnKey,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            env=deployment_env(config),
            description="WAIaaS monitoring: alarm topic, CloudTrail, alarms on owner-key use and refused unwraps",
        )
        self.notifications = Notifications(self, "Notifications", config=config)
        KeyUseAlarms(
            self,
            "KeyUse",
            config=config,
            owner_key_arn=owner_key.attr_arn,
            seal_key_arn=seal_key.attr_arn,
            topic=self.notifications.topic,
        )
        CfnOutput(self, "AlarmTopicArn", value=self.notifications.topic.topic_arn)
