"""A command-line tool's HTTP exchange with a proxy it does not trust to be honest: the answer is read whole only up to
a byte cap and a deadline, uncompressed.

The owner's and the agent's commands (`parent_proxy.owner_cli`, `parent_proxy.agent_cli`) ask a parent proxy for
answers they then check; a taken-over parent could instead answer with gigabytes, a compressed bomb, or one byte a
minute. `bounded_request` reads the answer as a stream: more than ``limit`` bytes (or a ``Content-Length`` announcing
more), a ``Content-Encoding`` other than identity, or an exchange still running after ``deadline`` seconds is an
`ExchangeFailed` ("refused: ..."), and the rest is never read; so is no answer at all ("failed: <httpx error's
type>", named by type only: a message could quote the URL). The deadline is checked between reads, so an exchange
ends at most one read timeout (the client's) after it. The proxy's own chain client bounds its RPC answers the
same way, with asyncio (`parent_proxy.chain`).
"""

from __future__ import annotations

import time
from typing import Any

import httpx


class ExchangeFailed(Exception):
    """No answer came, or it was too large, compressed, or too slow; nothing of it is used."""


def bounded_request(
    http: httpx.Client, method: str, url: str, *, limit: int, deadline: float, **kwargs: Any
) -> httpx.Response:
    """``http.request(method, url, **kwargs)`` with its answer read whole within ``limit`` bytes and ``deadline``
    seconds; `ExchangeFailed` if there was none, or past a bound (see the module docstring)."""
    started = time.monotonic()
    headers = {**kwargs.pop("headers", {}), "Accept-Encoding": "identity"}
    try:
        with http.stream(method, url, headers=headers, **kwargs) as response:
            if response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
                raise ExchangeFailed("refused: the answer is compressed (asked for identity)")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > limit:
                raise ExchangeFailed(f"refused: the answer is larger than {limit} bytes")
            received = bytearray()
            for chunk in response.iter_bytes():  # no Content-Encoding (above): the bytes received
                received += chunk
                if len(received) > limit:
                    raise ExchangeFailed(f"refused: the answer is larger than {limit} bytes")
                if time.monotonic() - started > deadline:
                    raise ExchangeFailed(f"refused: no whole answer within {deadline:g} s")
    except httpx.HTTPError as exc:
        raise ExchangeFailed(f"failed: {type(exc).__name__}") from exc
    return httpx.Response(
        response.status_code, headers=response.headers, content=bytes(received), request=response.request
    )
