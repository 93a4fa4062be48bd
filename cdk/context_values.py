"""Parsers of single `waiaas:*` context values, for `cdk.config.load_config`.

Each takes the raw value (JSON from `cdk.json`, or a string from `cdk -c key=value`) and returns it parsed, or raises
ValueError with a short reason that `load_config` appends to the key's name. Checks that relate several values (zones
of the region, key administrators in the account) stay in `load_config`.
"""

from __future__ import annotations

import ipaddress
import json
import re

from solders.pubkey import Pubkey

from cdk import naming

PCR_HEX_CHARS = 96
"""A Nitro PCR is a SHA-384 digest: 48 bytes, 96 lowercase hex characters."""

_PCR_RE = re.compile(r"^[0-9a-f]{96}\Z")
_PRINCIPAL_RE = re.compile(r"^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:(role|user)/[A-Za-z0-9+=,.@_/-]{1,512}\Z")
_ROLE_ARN_RE = re.compile(r"^arn:[a-z-]+:iam::(?P<account>[0-9]{12}):role/(?:.*/)?(?P<name>[^/]+)\Z")
_RPC_URL_RE = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%/-]*)?\Z")
_ORIGIN_RE = re.compile(r"^https://(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?"
                        r"(?::(?P<port>[1-9][0-9]{0,4}))?\Z")  # fmt: skip


def string(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def integer(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value):
        return int(value)
    raise ValueError("must be an integer")


def boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if value == "true":
        return True
    if value == "false":
        return False
    raise ValueError("must be true or false")


def string_list(value: object, *, allow_empty: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError("must be a list (or a JSON-encoded list)") from exc
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValueError("must be a list of non-empty strings")
    if not value and not allow_empty:
        raise ValueError("must not be empty")
    if len(set(value)) != len(value):
        raise ValueError("must not repeat an entry")
    return tuple(value)


def pcr(value: object) -> str:
    text = string(value)
    if not _PCR_RE.fullmatch(text):
        raise ValueError(f"must be {PCR_HEX_CHARS} lowercase hex characters (a SHA-384 digest)")
    if set(text) == {"0"}:
        raise ValueError("is all zeros, which is what a debug-mode enclave reports; pin a real measurement")
    return text


def principals(value: object) -> tuple[str, ...]:
    arns = string_list(value, allow_empty=False)
    for arn in arns:
        if not _PRINCIPAL_RE.fullmatch(arn):
            raise ValueError(f"{arn!r} is not an IAM role or user ARN (account roots and wildcards are refused)")
    return arns


def own_roles_named(arns: tuple[str, ...], account: str) -> list[str]:
    """The ARNs among `arns` that name a role this app creates in `account` (IAM role names are unique in an
    account whatever their path, so the name alone identifies it)."""
    named = []
    for arn in arns:
        match = _ROLE_ARN_RE.fullmatch(arn)
        if match is not None and match["account"] == account and match["name"] in naming.OWN_ROLES:
            named.append(arn)
    return named


def owner_keys(value: object) -> tuple[str, ...]:
    keys = string_list(value, allow_empty=False)
    for key in keys:
        try:
            canonical = str(Pubkey.from_string(key))
        except ValueError as exc:
            raise ValueError(f"{key!r} is not a base58 Ed25519 public key (32 bytes)") from exc
        if canonical != key:
            raise ValueError(f"{key!r} is not in canonical base58 form ({canonical})")
    return keys


def origins(value: object) -> tuple[str, ...]:
    """Origins in the proxy's normal form (``parent_proxy.owner_auth.normalize_origin``, which this app may not
    import): https, a lowercase DNS name (the load balancer's, or a domain of yours: its certificate is the ACM
    one), no path, no :443. Checked here, since a typo would stop every proxy at start-up."""
    found = string_list(value, allow_empty=False)
    for origin in found:
        match = _ORIGIN_RE.fullmatch(origin)
        port = None if match is None else int(match["port"] or 1)  # no port: the default (443), written as none
        if port is None or port == 443 or port > 65535:
            raise ValueError(f"{origin!r} is not an https origin in normal form (https://<lowercase DNS name>[:port], "
                             "no path, no :443; e.g. https://wallets.example.com)")  # fmt: skip
    return found


def rpc_url(value: object) -> str:
    url = string(value)
    if not _RPC_URL_RE.fullmatch(url):
        raise ValueError("must be an https:// URL (host, optional port and path; no credentials or query)")
    return url


def private_cidrs(value: object) -> tuple[str, ...]:
    cidrs = string_list(value, allow_empty=False)
    for cidr in cidrs:
        try:
            network = ipaddress.IPv4Network(cidr, strict=True)
        except ValueError as exc:
            raise ValueError(f"{cidr!r} is not an IPv4 network") from exc
        if not network.is_private:
            raise ValueError(f"{cidr!r} is not a private network (no internet-facing ingress)")
    return cidrs
