"""Network stack: a VPC with private, isolated subnets only, endpoints for every AWS API the hosts use, flow logs.

There is no internet gateway and no NAT: the hosts reach AWS through interface endpoints (KMS, STS, SSM, SSM
messages, EC2 messages, CloudWatch Logs and metrics) and gateway endpoints (S3, DynamoDB). The endpoints carry
the policies of `cdk.endpoint_policies`: this account's principals only, and the gateway endpoints limited to this
deployment's bucket and table and the package and agent repositories the hosts install from, so a taken-over host
cannot use them to move data to another bucket or account.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk import endpoint_policies, naming
from cdk.config import DeploymentConfig
from cdk.stack_base import deployment_env

SUBNET_MASK = 24
HTTPS_PORT = 443
FLOW_LOG_RETENTION = logs.RetentionDays.ONE_YEAR

INTERFACE_ENDPOINTS = {
    "Kms": ec2.InterfaceVpcEndpointAwsService.KMS,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "Ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
    "SsmMessages": ec2.InterfaceVpcEndpointAwsService.SSM_MESSAGES,
    "Ec2Messages": ec2.InterfaceVpcEndpointAwsService.EC2_MESSAGES,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Monitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
}
"""Interface endpoints by construct id. Monitoring carries the hosts' enclave heartbeat metric."""


class PrivateNetwork(Construct):
    """The VPC, its endpoints and its flow logs."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(config.vpc_cidr),
            availability_zones=list(config.availability_zones),
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=SUBNET_MASK
                )
            ],
            # The default security group is used by nothing; restricting it needs a Lambda-backed custom resource.
            restrict_default_security_group=False,
        )
        for subnet in self.vpc.isolated_subnets:
            # Zones are pinned from context so that synthesis needs no AWS lookup (cfn-lint W3010 prefers
            # Fn::GetAZs, which would make the subnets' zones depend on the deploying account).
            cfn_subnet = subnet.node.default_child
            if isinstance(cfn_subnet, ec2.CfnSubnet):
                cfn_subnet.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3010"]}})
        flow_log_group = logs.LogGroup(
            self,
            "FlowLogGroup",
            log_group_name=f"{naming.LOG_GROUP_PREFIX}vpc-flow-logs",
            retention=FLOW_LOG_RETENTION,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )
        subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        self.endpoint_security_group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="WAIaaS interface endpoints: HTTPS from inside the VPC only",
            allow_all_outbound=False,
        )
        # The configured range as a literal (not the VPC's CidrBlock attribute), so the rule is checkable offline.
        self.endpoint_security_group.add_ingress_rule(
            ec2.Peer.ipv4(config.vpc_cidr), ec2.Port.tcp(HTTPS_PORT), "HTTPS from the VPC"
        )
        for endpoint_id, service in INTERFACE_ENDPOINTS.items():
            endpoint = self.vpc.add_interface_endpoint(
                endpoint_id,
                service=service,
                private_dns_enabled=True,
                subnets=subnets,
                security_groups=[self.endpoint_security_group],
                open=False,
            )
            for statement in endpoint_policies.interface_endpoint_statements(endpoint_id, config):
                endpoint.add_to_policy(statement)
        s3 = self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[subnets])
        for statement in endpoint_policies.s3_endpoint_statements(config):
            s3.add_to_policy(statement)
        dynamodb = self.vpc.add_gateway_endpoint(
            "DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB, subnets=[subnets]
        )
        dynamodb.add_to_policy(endpoint_policies.dynamodb_endpoint_statement(config))


class NetworkStack(Stack):
    """Deployable unit: the VPC. Deploy before the enclave-hosts stack."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(
            scope,
            construct_id,
            env=deployment_env(config),
            description="WAIaaS network: isolated VPC, AWS API endpoints, flow logs",
        )
        self.network = PrivateNetwork(self, "Network", config=config)

    @property
    def vpc(self) -> ec2.Vpc:
        return self.network.vpc
