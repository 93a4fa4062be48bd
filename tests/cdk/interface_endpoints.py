"""The synthesized network stack's interface endpoints: each one's policy document, by service."""

from __future__ import annotations

from typing import Any

from tests.cdk.policy_walk import resources_of_type

NETWORK = "WaiaasNetwork"


def endpoint_policies(templates: dict[str, Any], config: Any) -> dict[str, dict[str, Any] | None]:
    """Interface endpoint policy by service (`kms`, `sts`, ...), None for an endpoint without one."""
    prefix = f"com.amazonaws.{config.region}."
    found = {}
    for endpoint in resources_of_type(templates[NETWORK], "AWS::EC2::VPCEndpoint").values():
        props = endpoint["Properties"]
        if props.get("VpcEndpointType") == "Interface":
            assert props["ServiceName"].startswith(prefix)
            found[props["ServiceName"].removeprefix(prefix)] = props.get("PolicyDocument")
    return found
