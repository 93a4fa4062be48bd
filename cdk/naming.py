"""Fixed names of the deployed resources, and the ARNs derived from them.

Names are deterministic so that key policies and role policies can name each other as plain strings: the synthesized
key policy then contains no CloudFormation tokens, which is what lets the test KMS evaluate it as is, and no stack
needs another stack's outputs to write a policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `cdk.context_values` reads the role names below to refuse them as configured principals
    from cdk.config import DeploymentConfig

NAME = "waiaas"

OWNER_ENTRY_ROLE = f"{NAME}-owner-entry"
"""Assumed by the configured owner principals (MFA, source identity); may only assume the owner-signer role."""

OWNER_SIGNER_ROLE = f"{NAME}-owner-signer"
"""The only principal the owner key's policy lets call kms:Sign; trusted only by the entry role."""

ENCLAVE_HOST_ROLE = f"{NAME}-enclave-host"
"""Instance role of the parent instances; its credentials reach the seal key only with an attestation document."""

OPERATOR_ROLE = f"{NAME}-operator"
"""SSM sessions to the hosts and read-only views of the deployment."""

OWNER_KEY_ADMIN_ROLE = f"{NAME}-owner-key-admin"
"""The owner's break-glass role: assumed by the configured owner principals directly (MFA, source identity), the
only principal the owner key's policy lets replace that policy. No identity policy; it cannot sign."""

OWN_ROLES = (OWNER_ENTRY_ROLE, OWNER_SIGNER_ROLE, OWNER_KEY_ADMIN_ROLE, ENCLAVE_HOST_ROLE, OPERATOR_ROLE)
"""Every role this app creates by name: none of them may be configured as an owner, operator or key administrator."""

OWNER_KEY_ALIAS = f"alias/{NAME}-owner"
SEAL_KEY_ALIAS = f"alias/{NAME}-seal"

HOSTS_STACK = "WaiaasEnclaveHosts"
"""The enclave-hosts stack, by name: its hosts signal their boot to it (`cdk.user_data`), and the host role may
signal this stack only (`cdk.identity_stack`)."""

STATE_TABLE = f"{NAME}-state"
TRAIL = f"{NAME}-trail"
LOG_GROUP_PREFIX = f"/{NAME}/"

RELEASES_PREFIX = "releases/"
"""Data-bucket prefix holding enclave images and parent-proxy wheelhouses, one folder per release."""
SEALED_PREFIX = "sealed/"
"""Data-bucket prefix holding sealed agent-key blobs."""
AUDIT_PREFIX = "audit/"
"""Data-bucket prefix holding audit-log exports."""

METRIC_NAMESPACE = "WAIaaS"
"""CloudWatch namespace of the metrics the hosts publish (enclave heartbeat): the only namespace the host role may
`PutMetricData` into (`cdk.identity_stack`)."""
AUDIT_EXPORT_METRIC_NAMESPACE = f"{METRIC_NAMESPACE}/AuditExport"
"""Metrics counted by metric filters from the audit export's lines (`cdk.audit_export_alarms`). Not the hosts'
namespace: a host that could publish `AuditExportSucceeded` itself (or a negative `AuditExportFailed`) would keep
both alarms quiet without exporting anything."""
TRAIL_METRIC_NAMESPACE = f"{METRIC_NAMESPACE}/CloudTrail"
"""Metrics counted by metric filters from the CloudTrail log group (`cdk.monitoring_stack`). Not the hosts'
namespace either: a host publishing large negative values would keep `RefusedAttestedUnwrap` (a `Sum` of at least
1) quiet while it tries the seal key without the pinned image."""
ENCLAVE_HEALTH_METRIC = "EnclaveHealthy"


def role_arn(config: DeploymentConfig, role_name: str) -> str:
    return f"arn:{config.partition}:iam::{config.account}:role/{role_name}"


def data_bucket_name(config: DeploymentConfig) -> str:
    return f"{NAME}-data-{config.account}-{config.region}"


def logs_bucket_name(config: DeploymentConfig) -> str:
    return f"{NAME}-logs-{config.account}-{config.region}"


def bucket_arn(config: DeploymentConfig, bucket_name: str) -> str:
    return f"arn:{config.partition}:s3:::{bucket_name}"


def table_arn(config: DeploymentConfig) -> str:
    return f"arn:{config.partition}:dynamodb:{config.region}:{config.account}:table/{STATE_TABLE}"


def log_group_arn(config: DeploymentConfig, log_group_name: str) -> str:
    return f"arn:{config.partition}:logs:{config.region}:{config.account}:log-group:{log_group_name}"


def trail_arn(config: DeploymentConfig) -> str:
    return f"arn:{config.partition}:cloudtrail:{config.region}:{config.account}:trail/{TRAIL}"


def stack_arn(config: DeploymentConfig, stack_name: str) -> str:
    """Every stack of that name in this account and Region (the ARN's last part is the stack's id, made at creation)."""
    return f"arn:{config.partition}:cloudformation:{config.region}:{config.account}:stack/{stack_name}/*"
