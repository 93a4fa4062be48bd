"""Enclave-hosts stack: Nitro-enabled parent instances in an Auto Scaling group behind an internal TLS load balancer.

- Launch template: Nitro Enclaves enabled, IMDSv2 required (hop limit 1), encrypted root volume, no SSH key pair
  (Session Manager only), the boot script of `cdk.user_data`.
- Load balancer: internal, HTTPS only with the configured certificate, reachable from the allowed client networks
  only; it forwards to the parent proxy's port and nothing else reaches the hosts. ``GET /metrics`` (every wallet's
  decision and approval counters) is not forwarded: the listener answers 404 itself (`METRICS_PATH_PATTERNS`), and
  the proxies serve it to on-host clients only (``WAIAAS_METRICS=loopback``, `cdk.user_data`), which also covers
  a path the rule does not see as ``/metrics`` and the proxy does (a percent-escape: ``/%6Detrics``).
- Enclave health: the group replaces hosts that fail the load balancer's check; alarms (to the monitoring
  stack's topic) fire when a host reports no running enclave or the load balancer has no healthy host.
- Creation and rollouts wait for the hosts: each host's boot script signals SUCCESS once its proxy is ready (enclave
  up, `cdk.user_data`) or FAILURE; CloudFormation waits up to `SIGNAL_TIMEOUT` for each, at creation for the
  configured count, in a rollout for each new host before it replaces the next old one, and fails (rolls back) on a
  FAILURE or on silence.
- Audit exports: alarms on the export's FAILED lines and on an hour without an OK line, from the hosts' proxy log
  group (`cdk.audit_export_alarms`).
"""

from __future__ import annotations

import jsii
from aws_cdk import (
    CfnCreationPolicy,
    CfnOutput,
    CfnResourceSignal,
    Duration,
    IStableStringProducer,
    Lazy,
    Stack,
    Tags,
)
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from cdk import host_logs, naming, user_data
from cdk.audit_export_alarms import AuditExportAlarms
from cdk.config import DeploymentConfig
from cdk.identity_stack import HOST_TAG_KEY, HOST_TAG_VALUE
from cdk.network_stack import host_subnets
from cdk.stack_base import deployment_env
from cdk.state_stack import ALB_LOG_PREFIX
from enclave_app.constants import PROXY_HTTP_PORT

HTTPS_PORT = 443
PROXY_HEALTH_PATH = "/healthz"
"""Parent-proxy endpoint the load balancer checks: 200 while the proxy process answers (the enclave's state is
``/readyz``'s, which the boot script waits for before it signals: `cdk.user_data`)."""
METRICS_PATH_PATTERNS = ("/metrics", "/metrics/*")
"""Paths the load balancer answers 404 itself (`METRICS_NOT_FOUND`) instead of forwarding: the proxy's Prometheus
endpoint, for on-host scraping only."""
METRICS_NOT_FOUND = '{"error":{"code":"not_found","message":"not found"}}'
"""The body of that 404: the proxy's own for a path it does not have (`parent_proxy.api_errors`)."""
METRICS_RULE_PRIORITY = 1
ROOT_VOLUME_GIB = 30
HEALTH_GRACE = Duration.minutes(user_data.READY_DEADLINE_MINUTES)
"""Boot installs packages and starts the enclave before the first health check counts: as long as the boot script
gives the proxy to become ready."""
SIGNAL_TIMEOUT = Duration.minutes(20)
"""How long CloudFormation waits for a new host's signal (creation policy and the rolling update's pause): the boot
script's own deadline (`user_data.READY_DEADLINE_MINUTES`, counted from its start) plus the instance's launch and
the signal's way out. Silence past it fails the creation or rolls the rollout back."""


@jsii.implements(IStableStringProducer)
class _BootScript:
    """The boot script, rendered at synthesis: it names the group's logical id, known once the group exists (the
    launch template, made first, takes user data that is rendered lazily)."""

    def __init__(self, config: DeploymentConfig) -> None:
        self._config = config
        self.group: autoscaling.AutoScalingGroup | None = None

    def produce(self) -> str | None:
        if self.group is None:
            raise RuntimeError("the boot script needs the Auto Scaling group it signals")
        stack = Stack.of(self.group)
        cfn_group = self.group.node.default_child
        if not isinstance(cfn_group, autoscaling.CfnAutoScalingGroup):
            raise RuntimeError("the Auto Scaling group has no CloudFormation resource")
        target = user_data.SignalTarget(stack=stack.stack_name, resource=stack.get_logical_id(cfn_group))
        return user_data.render(self._config, signal=target)


HOST_LOG_RETENTION = logs.RetentionDays.ONE_YEAR


class EnclaveHostFleet(Construct):
    """Launch template, Auto Scaling group, and the hosts' security group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        vpc: ec2.IVpc,
        instance_profile: iam.IInstanceProfile,
        notifications: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(
            self,
            "HostSecurityGroup",
            vpc=vpc,
            description="WAIaaS enclave hosts: proxy port from the load balancer only, HTTPS out only",
            allow_all_outbound=False,
        )
        # HTTPS out: the VPC endpoints, the Solana RPC endpoint and webhook receivers (where the network lets
        # them through: `cdk.network_stack`). DNS, time and instance metadata go to the VPC's link-local services,
        # which security groups do not filter.
        self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS_PORT), "HTTPS out")
        boot_script = _BootScript(config)
        self.launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            launch_template_name=f"{naming.NAME}-enclave-host",
            machine_image=ec2.MachineImage.latest_amazon_linux2023(),
            instance_type=ec2.InstanceType(config.instance_type),
            instance_profile=instance_profile,
            security_group=self.security_group,
            user_data=ec2.UserData.custom(Lazy.string(boot_script)),
            nitro_enclave_enabled=True,
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        ROOT_VOLUME_GIB,
                        encrypted=True,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        delete_on_termination=True,
                    ),
                )
            ],
        )
        self.group = autoscaling.AutoScalingGroup(
            self,
            "Group",
            vpc=vpc,
            vpc_subnets=host_subnets(config),
            launch_template=self.launch_template,
            min_capacity=config.host_count,
            max_capacity=config.host_count + 1,
            health_checks=autoscaling.HealthChecks.with_additional_checks(
                additional_types=[autoscaling.AdditionalHealthCheckType.ELB], grace_period=HEALTH_GRACE
            ),
            notifications=[autoscaling.NotificationConfiguration(topic=notifications)],
            # Replace one host at a time, never drop below the configured count, and replace the next old host only
            # once the new one has signalled SUCCESS; a FAILURE or no signal in time rolls the update back.
            update_policy=autoscaling.UpdatePolicy.rolling_update(
                max_batch_size=1,
                min_instances_in_service=config.host_count,
                wait_on_resource_signals=True,
                pause_time=SIGNAL_TIMEOUT,
            ),
        )
        boot_script.group = self.group
        # Created when the configured count of hosts has signalled SUCCESS (their proxies ready). Set on the resource,
        # not with the group's `signals=`, which would also grant `cloudformation:SignalResource` on `AWS::StackId`
        # to the host role, in the identity stack that owns the role: that stack, not this one.
        cfn_group = self.group.node.default_child
        if not isinstance(cfn_group, autoscaling.CfnAutoScalingGroup):
            raise RuntimeError("the Auto Scaling group has no CloudFormation resource")
        cfn_group.cfn_options.creation_policy = CfnCreationPolicy(
            resource_signal=CfnResourceSignal(count=config.host_count, timeout=SIGNAL_TIMEOUT.to_iso_string())
        )
        Tags.of(self.group).add(HOST_TAG_KEY, HOST_TAG_VALUE, apply_to_launched_instances=True)
        # Filled by the CloudWatch agent on each host (`cdk.host_logs`), one stream per instance.
        self.log_groups = {
            service: logs.LogGroup(
                self,
                f"{service.capitalize()}Logs",
                log_group_name=host_logs.LOG_GROUPS[service],
                retention=HOST_LOG_RETENTION,
            )
            for service in host_logs.SERVICE_LOGS
        }


class InternalTlsEndpoint(Construct):
    """Internal Application Load Balancer: HTTPS from the allowed client networks to the parent proxy."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        vpc: ec2.IVpc,
        fleet: EnclaveHostFleet,
        access_logs: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(
            self,
            "LoadBalancerSecurityGroup",
            vpc=vpc,
            description="WAIaaS internal load balancer: HTTPS from the allowed client networks",
            allow_all_outbound=False,
        )
        for cidr in config.allowed_client_cidrs:
            self.security_group.add_ingress_rule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(HTTPS_PORT), f"clients {cidr}")
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=False,
            vpc_subnets=host_subnets(config),
            security_group=self.security_group,
            drop_invalid_header_fields=True,
            deletion_protection=True,
        )
        self.load_balancer.log_access_logs(access_logs, ALB_LOG_PREFIX)
        listener = self.load_balancer.add_listener(
            "Https",
            port=HTTPS_PORT,
            protocol=elbv2.ApplicationProtocol.HTTPS,
            certificates=[elbv2.ListenerCertificate.from_arn(config.certificate_arn)],
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
            open=False,
        )
        self.target_group = listener.add_targets(
            "Proxy",
            port=PROXY_HTTP_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            targets=[fleet.group],
            health_check=elbv2.HealthCheck(
                path=PROXY_HEALTH_PATH,
                healthy_http_codes="200",
                interval=Duration.seconds(15),
                healthy_threshold_count=2,
                unhealthy_threshold_count=2,
            ),
            deregistration_delay=Duration.seconds(30),
        )
        listener.add_action(
            "MetricsNotForwarded",
            priority=METRICS_RULE_PRIORITY,
            conditions=[elbv2.ListenerCondition.path_patterns(list(METRICS_PATH_PATTERNS))],
            action=elbv2.ListenerAction.fixed_response(
                404, content_type="application/json", message_body=METRICS_NOT_FOUND
            ),
        )


class EnclaveHealthAlarms(Construct):
    """Alarms on enclave health: the hosts' heartbeat and the load balancer's view of the proxies."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        endpoint: InternalTlsEndpoint,
        notifications: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        action = cw_actions.SnsAction(notifications)
        heartbeat = cloudwatch.Metric(
            namespace=naming.METRIC_NAMESPACE,
            metric_name=naming.ENCLAVE_HEALTH_METRIC,
            statistic="Minimum",
            period=Duration.minutes(5),
        )
        alarms = [
            cloudwatch.Alarm(
                self,
                "EnclaveNotRunning",
                alarm_description="A WAIaaS host reported no running enclave, or no host reported at all",
                metric=heartbeat,
                threshold=1,
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            ),
            cloudwatch.Alarm(
                self,
                "TooFewHealthyHosts",
                alarm_description="Fewer healthy WAIaaS proxies (load balancer health check) than configured hosts",
                metric=endpoint.target_group.metrics.healthy_host_count(
                    statistic="Minimum", period=Duration.minutes(1)
                ),
                threshold=config.host_count,
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                evaluation_periods=3,
                treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            ),
        ]
        for alarm in alarms:
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)


class EnclaveHostsStack(Stack):
    """Deployable unit: the enclave hosts. Deploy last (needs network, identity, keys, state, monitoring)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        vpc: ec2.IVpc,
        instance_profile: iam.IInstanceProfile,
        access_logs: s3.IBucket,
        notifications: sns.ITopic,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            env=deployment_env(config),
            description="WAIaaS enclave hosts: Nitro Enclaves fleet behind an internal TLS load balancer",
        )
        self.fleet = EnclaveHostFleet(
            self, "Fleet", config=config, vpc=vpc, instance_profile=instance_profile, notifications=notifications
        )
        self.endpoint = InternalTlsEndpoint(
            self, "Endpoint", config=config, vpc=vpc, fleet=self.fleet, access_logs=access_logs
        )
        EnclaveHealthAlarms(self, "Health", config=config, endpoint=self.endpoint, notifications=notifications)
        # The export unit writes to the proxy's log file (`cdk.user_data`), so its lines are in the proxy's group.
        AuditExportAlarms(self, "AuditExport", log_group=self.fleet.log_groups["proxy"], notifications=notifications)
        CfnOutput(self, "EndpointDnsName", value=self.endpoint.load_balancer.load_balancer_dns_name)
