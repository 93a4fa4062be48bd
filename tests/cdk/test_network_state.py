"""Network (isolated VPC, endpoints, flow logs) and state (table, buckets)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from aws_cdk.assertions import Match

from cdk import naming
from tests.cdk.policy_walk import as_list, resources_of_type

NETWORK = "WaiaasNetwork"
STATE = "WaiaasState"


def _routes(template: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Route-table logical id -> its routes."""
    tables: dict[str, list[dict[str, Any]]] = {rt: [] for rt in resources_of_type(template, "AWS::EC2::RouteTable")}
    for route in resources_of_type(template, "AWS::EC2::Route").values():
        tables[route["Properties"]["RouteTableId"]["Ref"]].append(route["Properties"])
    return tables


def _subnet_tables(template: dict[str, Any]) -> dict[str, str]:
    """Subnet logical id -> its route table's logical id."""
    return {
        a["Properties"]["SubnetId"]["Ref"]: a["Properties"]["RouteTableId"]["Ref"]
        for a in resources_of_type(template, "AWS::EC2::SubnetRouteTableAssociation").values()
    }


def test_with_internet_egress_only_nat_gateways_face_the_internet(templates: dict[str, Any], config: Any) -> None:
    assert config.internet_egress  # the committed context
    network = templates[NETWORK]
    nats = resources_of_type(network, "AWS::EC2::NatGateway")
    assert len(nats) == len(config.availability_zones)
    assert len(resources_of_type(network, "AWS::EC2::InternetGateway")) == 1
    eips = resources_of_type(network, "AWS::EC2::EIP")
    assert {nat["Properties"]["AllocationId"]["Fn::GetAtt"][0] for nat in nats.values()} == set(eips)
    for other in (t for name, t in templates.items() if name != NETWORK):
        for kind in ("AWS::EC2::InternetGateway", "AWS::EC2::NatGateway", "AWS::EC2::EIP"):
            assert resources_of_type(other, kind) == {}
    subnets = resources_of_type(network, "AWS::EC2::Subnet")
    assert all(subnet["Properties"]["MapPublicIpOnLaunch"] is False for subnet in subnets.values())
    routes, tables = _routes(network), _subnet_tables(network)
    nat_subnets = {nat["Properties"]["SubnetId"]["Ref"] for nat in nats.values()}
    for subnet_id in subnets:
        (default,) = [r for r in routes[tables[subnet_id]] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
        if subnet_id in nat_subnets:
            assert "GatewayId" in default  # the NAT subnets: out through the internet gateway
        else:
            assert "NatGatewayId" in default and "GatewayId" not in default  # the rest: out through NAT only
    # Nothing else is placed in the NAT subnets: no endpoint, host or load balancer.
    for endpoint in resources_of_type(network, "AWS::EC2::VPCEndpoint").values():
        assert not {ref["Ref"] for ref in endpoint["Properties"].get("SubnetIds", [])} & nat_subnets
    for name in nat_subnets:
        assert name.startswith("NetworkVpcnat")
    hosts = templates["WaiaasEnclaveHosts"]
    placed = [*resources_of_type(hosts, "AWS::AutoScaling::AutoScalingGroup").values(),
              *resources_of_type(hosts, "AWS::ElasticLoadBalancingV2::LoadBalancer").values()]  # fmt: skip
    for resource in placed:
        subnet_refs = resource["Properties"].get("VPCZoneIdentifier") or resource["Properties"]["Subnets"]
        for ref in subnet_refs:
            imported = ref["Fn::ImportValue"]
            assert "Vpcprivate" in imported and "Vpcnat" not in imported, imported


def test_without_internet_egress_the_vpc_has_no_route_out(config: Any) -> None:
    from aws_cdk import App
    from aws_cdk.assertions import Template

    from cdk.network_stack import NetworkStack

    stack = NetworkStack(App(), "Isolated", config=dataclasses.replace(config, internet_egress=False))
    template = Template.from_stack(stack).to_json()
    for forbidden in (
        "AWS::EC2::InternetGateway",
        "AWS::EC2::NatGateway",
        "AWS::EC2::EIP",
        "AWS::EC2::EgressOnlyInternetGateway",
        "AWS::EC2::VPCGatewayAttachment",
    ):
        assert resources_of_type(template, forbidden) == {}
    for subnet in resources_of_type(template, "AWS::EC2::Subnet").values():
        assert subnet["Properties"]["MapPublicIpOnLaunch"] is False
    for routes in _routes(template).values():
        assert not [r for r in routes if r.get("DestinationCidrBlock") == "0.0.0.0/0"]


def test_subnets_use_the_configured_zones(templates: dict[str, Any], config: Any) -> None:
    zones = {
        s["Properties"]["AvailabilityZone"] for s in resources_of_type(templates[NETWORK], "AWS::EC2::Subnet").values()
    }
    assert zones == set(config.availability_zones)


def test_interface_endpoints_for_every_api_the_hosts_call(templates: dict[str, Any], template_of: Any) -> None:
    services = set()
    for endpoint in resources_of_type(templates[NETWORK], "AWS::EC2::VPCEndpoint").values():
        props = endpoint["Properties"]
        name = props["ServiceName"]
        services.add(name if isinstance(name, str) else str(name))
        if props.get("VpcEndpointType") == "Interface":
            assert props["PrivateDnsEnabled"] is True
    for service in ("kms", "sts", "ssm", "ssmmessages", "ec2messages", "logs"):
        assert f"com.amazonaws.eu-west-1.{service}" in services
    template_of(NETWORK).has_resource_properties(
        "AWS::EC2::SecurityGroup",
        {
            "GroupDescription": Match.string_like_regexp("interface endpoints"),
            "SecurityGroupIngress": [Match.object_like({"CidrIp": "10.40.0.0/20", "FromPort": 443, "ToPort": 443})],
        },
    )


def test_gateway_endpoints_are_limited_to_this_deployment(templates: dict[str, Any], config: Any) -> None:
    gateways = [
        e["Properties"]
        for e in resources_of_type(templates[NETWORK], "AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType") == "Gateway"
    ]
    assert len(gateways) == 2
    text = str(gateways)
    assert "s3" in text and "dynamodb" in text
    for gateway in gateways:
        for statement in gateway["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            assert not [a for a in as_list(statement["Action"]) if "*" in a]
            assert "*" not in as_list(statement["Resource"])
    assert naming.data_bucket_name(config) in text and naming.STATE_TABLE in text


def test_flow_logs_capture_all_traffic(template_of: Any) -> None:
    template_of(NETWORK).has_resource_properties(
        "AWS::EC2::FlowLog", {"ResourceType": "VPC", "TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs"}
    )


def test_state_table_pitr_encryption_deletion_protection(template_of: Any) -> None:
    template_of(STATE).has_resource(
        "AWS::DynamoDB::GlobalTable",
        {
            "DeletionPolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "TableName": naming.STATE_TABLE,
                    "KeySchema": [
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"},
                    ],
                    "SSESpecification": Match.object_like({"SSEEnabled": True}),
                    "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
                    "Replicas": [
                        Match.object_like(
                            {
                                "DeletionProtectionEnabled": True,
                                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                            }
                        )
                    ],
                }
            ),
        },
    )


def test_data_bucket_versioned_locked_private_and_retained(template_of: Any, config: Any) -> None:
    template_of(STATE).has_resource(
        "AWS::S3::Bucket",
        {
            "DeletionPolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "BucketName": naming.data_bucket_name(config),
                    "VersioningConfiguration": {"Status": "Enabled"},
                    "ObjectLockEnabled": True,
                    "ObjectLockConfiguration": Match.object_like({"ObjectLockEnabled": "Enabled"}),
                    "PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": True,
                        "BlockPublicPolicy": True,
                        "IgnorePublicAcls": True,
                        "RestrictPublicBuckets": True,
                    },
                    "BucketEncryption": Match.any_value(),
                    "LoggingConfiguration": Match.object_like({"LogFilePrefix": "s3-access/data/"}),
                }
            ),
        },
    )


def test_every_bucket_is_tls_only_and_private(templates: dict[str, Any]) -> None:
    buckets = resources_of_type(templates[STATE], "AWS::S3::Bucket")
    policies = resources_of_type(templates[STATE], "AWS::S3::BucketPolicy").values()
    assert buckets
    for bucket_id, bucket in buckets.items():
        assert bucket["Properties"]["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"] is True
        (policy,) = [p for p in policies if p["Properties"]["Bucket"] == {"Ref": bucket_id}]
        assert {
            "Action": "s3:*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Resource": [
                {"Fn::GetAtt": [bucket_id, "Arn"]},
                {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
            ],
        } in policy["Properties"]["PolicyDocument"]["Statement"]


def test_cloudtrail_may_write_to_the_log_bucket_only_for_this_trail(templates: dict[str, Any], config: Any) -> None:
    statements = [
        s
        for p in resources_of_type(templates[STATE], "AWS::S3::BucketPolicy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s.get("Principal") == {"Service": "cloudtrail.amazonaws.com"}
    ]
    assert len(statements) == 2
    for statement in statements:
        assert statement["Condition"]["StringEquals"]["aws:SourceArn"] == naming.trail_arn(config)
