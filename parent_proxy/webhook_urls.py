"""Where a webhook may go: the URL checks made when it is configured, the address checks made before each
connection, and the redacted form of a URL that logs and audit records may carry.

A webhook URL is chosen by a wallet owner, and the proxy POSTs to it from inside the deployment, so without checks
it is a server-side request forgery: the instance metadata service (``169.254.169.254``, ``[fd00:ec2::254]``), the
proxy's own API on loopback, anything on the private network. The rules:

1. At configuration (`check_webhook_url`): the URL must parse as httpx parses it (it is what sends), be http or
   https with a port in 1-65535, and name its host either as a DNS name (letters, digits, ``-``, ``_``; no empty
   label) or as a canonical IP literal. Numeric hosts that resolvers read as IPv4 (``2130706433``,
   ``0x7f000001``, ``127.1``) are refused outright, as is any literal address that `check_address` refuses
   whatever the setting (below).
2. Before every connection (`check_address`, called by `parent_proxy.webhook_transport` on each resolved address):
   IPv4 addresses embedded in IPv6 (IPv4-mapped ``::ffff:a.b.c.d``, 6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``)
   are unwrapped first. Always refused: unspecified, multicast, reserved, link-local (which holds the IPv4
   metadata service) and the cloud metadata addresses of `METADATA_ADDRESSES`. Refused unless private
   destinations are allowed (``WAIAAS_WEBHOOK_ALLOW_PRIVATE``): every other address that is not globally routable
   (loopback, RFC 1918, shared 100.64/10, unique-local ``fc00::/7``, documentation ranges, ...), judged by Python's
   ``is_global`` and `NOT_GLOBAL_NETWORKS`, the ranges it misses (deprecated site-local ``fec0::/10``, ...).

Errors are `WebhookError`; their messages never contain the URL (it may carry credentials), only the part at fault
(a scheme, a port number, an IP address, a category).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit, urlunsplit

import httpx

from parent_proxy.errors import WebhookError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack (also link-local)
        ipaddress.ip_address("169.254.170.2"),  # ECS task metadata (also link-local)
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6 (unique-local: allowed-private would pass it)
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud (shared address space)
        ipaddress.ip_address("168.63.129.16"),  # Azure WireServer (a public address)
    }
)
"""Cloud instance-metadata endpoints: refused even when private destinations are allowed."""
NOT_GLOBAL_NETWORKS = (
    ipaddress.ip_network("fec0::/10"),  # site-local, deprecated (RFC 3879)
    ipaddress.ip_network("3fff::/20"),  # documentation (RFC 9637), as 2001:db8::/32 is
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments (RFC 6890), but for GLOBAL_EXCEPTIONS
)
"""Not globally routable (the IANA special-purpose registries), although Python 3.11's ``is_global`` calls them
global: refused unless private destinations are allowed."""
GLOBAL_EXCEPTIONS = frozenset({ipaddress.ip_address("192.0.0.9"), ipaddress.ip_address("192.0.0.10")})
"""Globally reachable anycast services inside `NOT_GLOBAL_NETWORKS` (PCP, TURN: RFC 7723, RFC 8155)."""
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"(?:0[xX][0-9A-Fa-f]*|[0-9]+)")
MAX_HOST_CHARS = 253
"""RFC 1035: the longest DNS name in text form."""


def embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address; any other address unchanged."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _describe(address: IPAddress) -> str:
    inner = embedded_ipv4(address)
    return str(address) if inner == address else f"{address} ({inner})"


def _always_refused(address: IPAddress) -> str | None:
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for refused, category in (
        (address.is_unspecified, "unspecified"),
        (address.is_multicast, "multicast"),
        (address.is_link_local, "link-local"),
        (address.is_reserved and not address.is_loopback, "reserved"),  # ::1 lies in the reserved ::/8
    ):
        if refused:
            return category
    return None


def _is_global(address: IPAddress) -> bool:
    """``is_global``, less `NOT_GLOBAL_NETWORKS` (Python's tables lag the registries)."""
    if address in GLOBAL_EXCEPTIONS:
        return True
    return address.is_global and not any(address in network for network in NOT_GLOBAL_NETWORKS)


def check_address(address: IPAddress, *, allow_private: bool) -> None:
    """Return if a webhook may connect to ``address``; else `WebhookError` naming the address and why not."""
    # 1. Judge the IPv4 address an IPv6 form carries, since that is where the packets end up.
    inner = embedded_ipv4(address)
    # 2. Never: addresses that are no destination at all, or that reach the host's cloud metadata.
    category = _always_refused(inner)
    # 3. Loopback and private networks only when the operator allowed them.
    if category is None and not allow_private and not _is_global(inner):
        category = "not globally routable (set WAIAAS_WEBHOOK_ALLOW_PRIVATE=true to allow private receivers)"
    if category is not None:
        raise WebhookError(f"webhook destination refused: {_describe(address)} is {category}")


def _check_host(host: str) -> None:
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if isinstance(literal, ipaddress.IPv6Address) and literal.scope_id:
        raise WebhookError("url: an IPv6 zone index is not allowed")
    if literal is not None:
        category = _always_refused(embedded_ipv4(literal))
        if category is not None:
            raise WebhookError(f"url: the host {_describe(literal)} is {category}")
        return
    labels = host.removesuffix(".").split(".")
    if len(host) > MAX_HOST_CHARS or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise WebhookError("url: the host must be a DNS name or an IP address")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):  # resolvers read "2130706433", "0x7f.1", "127.1" as IPv4
        raise WebhookError("url: a numeric host must be a dotted-quad IPv4 address")


def check_webhook_url(url: str) -> None:
    """Return if ``url`` may be configured as a webhook (rule 1 of the module docstring); else `WebhookError`."""
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise WebhookError("url: not a URL that can be sent to") from exc
    if parsed.scheme not in ("http", "https"):
        raise WebhookError("url: the scheme must be http or https")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise WebhookError(f"url: port {parsed.port} is outside 1-65535")
    if not host:
        raise WebhookError("url: the host is missing")
    _check_host(host)


def redact_url(url: str) -> str:
    """``url`` reduced to ``scheme://host[:port]`` for logs and audit records: no credentials, path, query or
    fragment (webhook services such as Slack and Discord put their token in the path). Never raises."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<unparseable url>"
    return urlunsplit((parts.scheme, netloc, "", "", ""))
