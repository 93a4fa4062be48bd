"""Deployment settings: the `waiaas:*` CDK context, read once and validated into a frozen dataclass.

Every value is required; none has a default. The enclave measurements (PCR0 and, for a signed image, PCR8) pin
which image may unwrap agent keys, so a missing or malformed one stops synthesis with a message naming it.

Error hierarchy::

    ConfigError      one or more context values are missing or malformed (the message names each of them)

Context values arrive as JSON from `cdk.json` or as strings from `cdk -c key=value`; both forms are accepted for
numbers, booleans (strictly `true`/`false`) and lists (a JSON list, or a JSON-encoded list in a string). The
parsers of single values are in `cdk.context_values`; the checks that relate several values are here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from cdk import context_values as values

T = TypeVar("T")

PREFIX = "waiaas:"
"""Prefix of every context key this app reads."""

ENCLAVE_MIN_MEMORY_MIB = 512
"""Smallest enclave allocation accepted here (the image must fit in memory with room for the app)."""

ENCLAVE_MIN_CPUS = 2
"""Enclave vCPUs come in whole cores; on x86 a core is two vCPUs, and one core stays with the parent."""

_ACCOUNT_RE = re.compile(r"^[0-9]{12}\Z")
_REGION_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]\Z")
_INSTANCE_TYPE_RE = re.compile(r"^(?P<family>[a-z][a-z0-9-]*)\.(?P<size>[0-9]*x?large|metal(-[0-9]+xl)?)\Z")
_BURSTABLE_RE = re.compile(r"^t[0-9]")
_CERT_RE = re.compile(
    r"^arn:aws(-cn|-us-gov)?:acm:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):certificate/[0-9a-f-]{36}$"
)
_RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+\Z")


class ConfigError(ValueError):
    """The `waiaas:*` context is incomplete or malformed; the message names every offending key."""


@dataclass(frozen=True, kw_only=True)
class EnclaveMeasurements:
    """The pinned enclave image: PCR0 always, PCR8 when the image is signed (lowercase hex SHA-384)."""

    pcr0: str
    pcr8: str | None

    @property
    def image_signed(self) -> bool:
        return self.pcr8 is not None


@dataclass(frozen=True, kw_only=True)
class DeploymentConfig:
    """Everything the stacks need, validated. Built once in `cdk/app.py` (or a test) and passed down."""

    account: str
    region: str
    availability_zones: tuple[str, ...]
    vpc_cidr: str
    instance_type: str
    host_count: int
    enclave_memory_mib: int
    enclave_cpu_count: int
    enclave: EnclaveMeasurements
    release: str
    owner_principals: tuple[str, ...]
    operator_principals: tuple[str, ...]
    key_admin_principals: tuple[str, ...]
    certificate_arn: str
    allowed_client_cidrs: tuple[str, ...]
    alarm_emails: tuple[str, ...]
    owner_public_keys: tuple[str, ...]
    """Base58 Ed25519 public keys of the owners allowed to create wallets (the proxy's ``WAIAAS_OWNER_KEYS``)."""
    public_origins: tuple[str, ...]
    """The origins owners reach the API at (the proxy's ``WAIAAS_PUBLIC_ORIGINS``): owner requests signed for another
    origin are refused, so one sent to another deployment cannot be replayed to this one."""
    solana_rpc_url: str
    """The Solana JSON-RPC endpoint the proxies use (``WAIAAS_CHAIN=rpc:<url>``), https only."""
    internet_egress: bool
    """True: NAT gateways, and the hosts may open HTTPS connections to the internet (the RPC endpoint, webhooks).
    False: the VPC has no route out; the RPC endpoint and webhook receivers must be reachable inside it."""

    @property
    def partition(self) -> str:
        if self.region.startswith("cn-"):
            return "aws-cn"
        if self.region.startswith("us-gov-"):
            return "aws-us-gov"
        return "aws"


class _Reader:
    """Reads each key once, collecting every problem so that one run reports all of them."""

    def __init__(self, context: Mapping[str, object]) -> None:
        self._context = context
        self.errors: list[str] = []

    def has(self, key: str) -> bool:
        return self._context.get(PREFIX + key) is not None

    def get(self, key: str, parse: Callable[[object], T]) -> T | None:
        raw = self._context.get(PREFIX + key)
        if raw is None:
            self.errors.append(f"{PREFIX}{key} is missing")
            return None
        try:
            return parse(raw)
        except ValueError as exc:
            self.errors.append(f"{PREFIX}{key} {exc}")
            return None

    def fail(self, key: str, reason: str) -> None:
        self.errors.append(f"{PREFIX}{key} {reason}")


def load_config(context: Mapping[str, object]) -> DeploymentConfig:
    """Validate the `waiaas:*` context into a `DeploymentConfig`, or raise `ConfigError` naming every problem."""
    r = _Reader(context)
    account = r.get("account", values.string)
    if account is not None and not _ACCOUNT_RE.fullmatch(account):
        r.fail("account", "must be a 12-digit AWS account id")
    region = r.get("region", values.string)
    if region is not None and not _REGION_RE.fullmatch(region):
        r.fail("region", f"{region!r} is not an AWS region name")
    azs = r.get("availabilityZones", lambda v: values.string_list(v, allow_empty=False))
    if azs is not None and region is not None:
        if len(azs) < 2:
            r.fail("availabilityZones", "must list at least two zones (the hosts span zones)")
        if any(not re.fullmatch(re.escape(region) + r"[a-z]", az) for az in azs):
            r.fail("availabilityZones", f"must all be zones of {region} (e.g. {region}a)")
    vpc_cidr = r.get("vpcCidr", values.string)
    if vpc_cidr is not None:
        try:
            vpc_net = ipaddress.IPv4Network(vpc_cidr, strict=True)
            if not vpc_net.is_private or not 16 <= vpc_net.prefixlen <= 22:
                r.fail("vpcCidr", "must be a private IPv4 network between /16 and /22")
        except ValueError:
            r.fail("vpcCidr", f"{vpc_cidr!r} is not an IPv4 network")
    instance_type = r.get("instanceType", values.string)
    if instance_type is not None:
        match = _INSTANCE_TYPE_RE.fullmatch(instance_type)
        if match is None:
            r.fail("instanceType", f"{instance_type!r} is not an EC2 instance type")
        elif _BURSTABLE_RE.match(match["family"]) or match["size"] in ("large",):
            r.fail("instanceType", f"{instance_type!r} cannot host a Nitro Enclave (burstable, or too few vCPUs)")
    host_count = r.get("hostCount", values.integer)
    if host_count is not None and not 1 <= host_count <= 20:
        r.fail("hostCount", "must be between 1 and 20")
    memory = r.get("enclaveMemoryMiB", values.integer)
    if memory is not None and memory < ENCLAVE_MIN_MEMORY_MIB:
        r.fail("enclaveMemoryMiB", f"must be at least {ENCLAVE_MIN_MEMORY_MIB}")
    cpus = r.get("enclaveCpuCount", values.integer)
    if cpus is not None and (cpus < ENCLAVE_MIN_CPUS or cpus % 2):
        r.fail("enclaveCpuCount", f"must be an even number, at least {ENCLAVE_MIN_CPUS}")

    # The measurements: no defaults, and PCR8 is either pinned (signed image) or explicitly absent.
    pcr0 = r.get("enclavePcr0", values.pcr)
    signed = r.get("enclaveImageSigned", values.boolean)
    pcr8: str | None = None
    if signed is True:
        pcr8 = r.get("enclavePcr8", values.pcr)
    elif signed is False and r.has("enclavePcr8"):
        r.fail("enclavePcr8", "is set but enclaveImageSigned is false; remove one of them")

    release = r.get("release", values.string)
    if release is not None and not _RELEASE_RE.fullmatch(release):
        r.fail("release", "must be 1-64 characters of [A-Za-z0-9._-]")
    owners = r.get("ownerPrincipals", values.principals)
    operators = r.get("operatorPrincipals", values.principals)
    admins = r.get("keyAdminPrincipals", values.principals)
    if admins is not None and account is not None and any(f":iam::{account}:" not in a for a in admins):
        r.fail("keyAdminPrincipals", "must all belong to the deployment account")
    # The stack's own roles hold exactly the powers their policies give them: naming one here would hand the enclave
    # host (or the owner-signer, or the operator) the owner chain, the operator role or the keys' administration.
    for key, arns in (("ownerPrincipals", owners), ("operatorPrincipals", operators), ("keyAdminPrincipals", admins)):
        if arns is not None and account is not None:
            for arn in values.own_roles_named(arns, account):
                r.fail(key, f"names {arn}, a role this deployment creates; its own roles cannot be configured here")
    certificate = r.get("certificateArn", values.string)
    if certificate is not None:
        cert_match = _CERT_RE.fullmatch(certificate)
        if cert_match is None:
            r.fail("certificateArn", "is not an ACM certificate ARN")
        elif region is not None and cert_match["region"] != region:
            r.fail("certificateArn", f"must be a certificate in {region}")
    clients = r.get("allowedClientCidrs", values.private_cidrs)
    emails = r.get("alarmEmails", lambda v: values.string_list(v, allow_empty=True))
    if emails is not None and any(not _EMAIL_RE.fullmatch(e) for e in emails):
        r.fail("alarmEmails", "must be email addresses")
    owner_keys = r.get("ownerPublicKeys", values.owner_keys)
    origins = r.get("publicOrigins", values.origins)
    rpc_url = r.get("solanaRpcUrl", values.rpc_url)
    egress = r.get("internetEgress", values.boolean)

    if r.errors:
        raise ConfigError("invalid deployment context:\n  - " + "\n  - ".join(r.errors))
    # Every value below was checked above; the reader appended an error for any None.
    if (
        account is None
        or region is None
        or azs is None
        or vpc_cidr is None
        or instance_type is None
        or host_count is None
        or memory is None
        or cpus is None
        or pcr0 is None
        or release is None
        or owners is None
        or operators is None
        or admins is None
        or certificate is None
        or clients is None
        or emails is None
        or owner_keys is None
        or origins is None
        or rpc_url is None
        or egress is None
    ):
        raise ConfigError("invalid deployment context")  # unreachable: kept for the type checker
    return DeploymentConfig(
        account=account,
        region=region,
        availability_zones=azs,
        vpc_cidr=vpc_cidr,
        instance_type=instance_type,
        host_count=host_count,
        enclave_memory_mib=memory,
        enclave_cpu_count=cpus,
        enclave=EnclaveMeasurements(pcr0=pcr0, pcr8=pcr8),
        release=release,
        owner_principals=owners,
        operator_principals=operators,
        key_admin_principals=admins,
        certificate_arn=certificate,
        allowed_client_cidrs=clients,
        alarm_emails=emails,
        owner_public_keys=owner_keys,
        public_origins=origins,
        solana_rpc_url=rpc_url,
        internet_egress=egress,
    )


CONTEXT_KEYS = (
    "account",
    "region",
    "availabilityZones",
    "vpcCidr",
    "instanceType",
    "hostCount",
    "enclaveMemoryMiB",
    "enclaveCpuCount",
    "enclavePcr0",
    "enclaveImageSigned",
    "enclavePcr8",
    "release",
    "ownerPrincipals",
    "operatorPrincipals",
    "keyAdminPrincipals",
    "certificateArn",
    "allowedClientCidrs",
    "alarmEmails",
    "ownerPublicKeys",
    "publicOrigins",
    "solanaRpcUrl",
    "internetEgress",
)
"""Every context key this app reads (without the `waiaas:` prefix)."""
