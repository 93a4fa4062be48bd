"""Container healthchecks: ``python -m selfhost.healthcheck TARGET``, exit 0 when healthy, 1 when not.

- ``http://127.0.0.1:<port>/<path>`` (the proxy): healthy when the URL answers HTTP 200 within
  :data:`TIMEOUT_SECONDS`. Loopback HTTP only (it probes the service from inside its own container, never
  elsewhere); redirects are not followed. The image has no curl, hence this.
- ``unix:/path`` (the signer, which has no network): healthy when a protocol ping over the socket is answered
  and the enclave is not in the failed state. A socket file alone proves nothing: it survives the process on
  the shared volume.

Nothing from an answer is printed: only the status, or the kind of failure.
"""

from __future__ import annotations

import asyncio
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from urllib.parse import urlsplit

from enclave_app.client import EnclaveClient
from enclave_app.errors import EnclaveError
from enclave_app.protocol import EnclaveState

TIMEOUT_SECONDS = 3.0
"""Below the compose healthcheck's own timeout (5 s), so the probe reports instead of being killed."""

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


def check_url(url: str) -> None:
    """Raise :class:`ValueError` unless ``url`` is plain HTTP to a loopback address with an explicit port."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in _LOOPBACK_HOSTS or parts.port is None:
        raise ValueError("healthcheck URL must be http://<loopback>:<port>/<path>")


def probe(url: str, *, timeout: float = TIMEOUT_SECONDS) -> int:
    """Return the HTTP status of ``GET url`` (redirects are not followed); raise ``OSError`` if there is none."""
    check_url(url)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def _ping(address: str, timeout: float) -> EnclaveState:
    return (await EnclaveClient(address, timeout=timeout).ping()).state


def probe_signer(address: str, *, timeout: float = TIMEOUT_SECONDS) -> EnclaveState:
    """The enclave state reported over ``address`` (``unix:/path``); raises ``EnclaveError`` without an answer."""
    if not address.startswith("unix:/"):
        raise ValueError("signer healthcheck address must be unix:/<absolute path>")
    return asyncio.run(_ping(address, timeout))


def _main_signer(address: str) -> int:
    try:
        state = probe_signer(address)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except EnclaveError as exc:
        print(f"unhealthy: {type(exc).__name__}", file=sys.stderr)
        return 1
    if state is EnclaveState.FAILED:
        print("unhealthy: enclave in the failed state", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m selfhost.healthcheck http://127.0.0.1:<port>/<path> | unix:/<path>", file=sys.stderr)
        return 2
    if args[0].startswith("unix:"):
        return _main_signer(args[0])
    try:
        status = probe(args[0])
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"unhealthy: {type(exc).__name__}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
