"""Network stack: a VPC with private subnets for the hosts, endpoints for every AWS API the hosts use, flow logs.

The hosts reach AWS through interface endpoints (KMS, STS, SSM, SSM messages, EC2 messages, CloudWatch Logs and
metrics, CloudFormation) and gateway endpoints (S3, DynamoDB). The endpoints carry the policies of
`cdk.endpoint_policies`: this account's principals only, and the gateway endpoints limited to this deployment's
bucket and table and the package and agent repositories the hosts install from, so a taken-over host cannot use
them to move data to another bucket or account.

Everything else the proxy talks to (the Solana RPC endpoint, webhook receivers) depends on ``internetEgress``:
true puts NAT gateways in small public subnets (nothing else runs there, nothing gets a public address, no
ingress), and the hosts' private subnets route out through them; false keeps the VPC without any route out, and
the RPC endpoint and webhook receivers must then be reachable inside it (peering, PrivateLink). Either way the
hosts' security group lets out HTTPS only (see `cdk.hosts_stack`).
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
NAT_SUBNET_MASK = 28
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
    "CloudFormation": ec2.InterfaceVpcEndpointAwsService.CLOUDFORMATION,
}
"""Interface endpoints by construct id. Monitoring carries the hosts' enclave heartbeat metric; CloudFormation the
boot script's signal to the stack that creates or rolls out the hosts (`cdk.user_data`)."""


def _private_kind(config: DeploymentConfig) -> ec2.SubnetType:
    return ec2.SubnetType.PRIVATE_WITH_EGRESS if config.internet_egress else ec2.SubnetType.PRIVATE_ISOLATED


def host_subnets(config: DeploymentConfig) -> ec2.SubnetSelection:
    """Where the hosts, the load balancer and the interface endpoints go: the private subnets."""
    return ec2.SubnetSelection(subnet_type=_private_kind(config))


def subnet_layout(config: DeploymentConfig) -> list[ec2.SubnetConfiguration]:
    private = ec2.SubnetConfiguration(name="private", subnet_type=_private_kind(config), cidr_mask=SUBNET_MASK)
    if not config.internet_egress:
        return [private]
    # NAT gateways only: no instance is ever placed here, and none gets a public address.
    public = ec2.SubnetConfiguration(
        name="nat", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=NAT_SUBNET_MASK, map_public_ip_on_launch=False
    )
    return [public, private]


class PrivateNetwork(Construct):
    """The VPC, its endpoints and its flow logs."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(config.vpc_cidr),
            availability_zones=list(config.availability_zones),
            nat_gateways=len(config.availability_zones) if config.internet_egress else 0,
            subnet_configuration=subnet_layout(config),
            # The default security group is used by nothing; restricting it needs a Lambda-backed custom resource.
            restrict_default_security_group=False,
        )
        for subnet in [*self.vpc.public_subnets, *self.vpc.private_subnets, *self.vpc.isolated_subnets]:
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
        subnets = host_subnets(config)
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
            description="WAIaaS network: private VPC, AWS API endpoints, flow logs",
        )
        self.network = PrivateNetwork(self, "Network", config=config)

    @property
    def vpc(self) -> ec2.Vpc:
        return self.network.vpc
