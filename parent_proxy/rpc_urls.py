"""Which Solana JSON-RPC endpoints may be used: https, or plain http to a loopback host only.

What an RPC node answers decides what the proxy checks at policy install (the multisig's conformance) and reads for
a request (pinned lookup tables), and what the owner's tools build and sign (a rotation copies the spending limits it
reads): the answers must not cross a network where a third party can rewrite them. Plain http is left for a node or
tunnel on this machine (``localhost``, ``127.0.0.0/8``, ``::1``), as the self-host local chain is. One rule for the
proxy's ``WAIAAS_CHAIN=rpc:<url>`` (`parent_proxy.settings`), ``waiaas selfhost up --rpc-url`` and the owner's
``--rpc-url`` (`parent_proxy.owner_cli_common`).
"""

from __future__ import annotations

import ipaddress

import httpx

PLAIN_HTTP_REFUSED = (
    "must be https (plain http only to localhost, 127.0.0.1 or ::1): the RPC's answers decide what is checked, built "
    "and signed, and anyone on the way could rewrite a plain http answer"
)


def rpc_url_refusal(url: str) -> str | None:
    """Why ``url`` may not be used as a Solana JSON-RPC endpoint (a phrase to follow the option's name), or None."""
    if not url.startswith(("https://", "http://")):
        return "must be an http(s) URL"
    if url.startswith("https://"):
        return None
    try:  # the host as the client that connects parses it
        host: str | None = httpx.URL(url).host
    except (httpx.InvalidURL, ValueError):
        host = None
    return None if _loopback(host) else PLAIN_HTTP_REFUSED


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
