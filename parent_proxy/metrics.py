"""Prometheus metrics in the text exposition format (version 0.0.4), without a client library.

Counters with labels and one latency histogram per route. Label values are ours (route templates, status codes,
verdicts), never request data, so the label set is bounded and nothing secret can appear.

They still tell one wallet's (and its owner's) activity as it happens, to whoever may read them: who may is
``WAIAAS_METRICS`` (`served_to`). The CDK hosts say ``loopback`` (on-host scraping only; their load balancer also
answers 404 for the path itself: `cdk.hosts_stack`).
"""

from __future__ import annotations

import bisect
import ipaddress
import threading
from collections import defaultdict
from collections.abc import Iterable

BUCKETS_SECONDS = (0.001, 0.002, 0.003, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]

ACCESS_CHOICES = ("any", "loopback")
"""``WAIAAS_METRICS``: ``any`` serves ``GET /metrics`` to every client that reaches the proxy's port; ``loopback``
only to one on this host (`served_to`)."""
FORWARDING_HEADERS = frozenset({b"forwarded", b"x-forwarded-for", b"x-real-ip"})
"""Headers a proxy in front adds: a request carrying one was relayed, whatever address it comes from."""


def served_to(access: str, client_host: str | None, header_names: Iterable[bytes]) -> bool:
    """Whether ``GET /metrics`` is served to this request under ``access`` (`ACCESS_CHOICES`). ``loopback``: the
    connection comes from a loopback address (127.0.0.0/8, ::1, IPv4-mapped ::ffff:127.x) and the request carries
    no forwarding header (`FORWARDING_HEADERS`), so neither a load balancer's nor a local reverse proxy's relayed
    requests are served, nor one whose relayed address a server trusting those headers took for the client's.
    Anything else (another address, a Unix socket, no address, an unknown ``access``) is not served."""
    if access == "any":
        return True
    if access != "loopback" or client_host is None:
        return False
    if any(name.lower() in FORWARDING_HEADERS for name in header_names):
        return False
    try:
        address = ipaddress.ip_address(client_host)
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels)
    return "{" + inner + "}"


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._hist: dict[Labels, list[int]] = {}
        self._hist_sum: dict[Labels, float] = defaultdict(float)

    def count(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + amount

    def observe(self, seconds: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            buckets = self._hist.setdefault(key, [0] * (len(BUCKETS_SECONDS) + 1))
            buckets[bisect.bisect_left(BUCKETS_SECONDS, seconds)] += 1
            self._hist_sum[key] += seconds

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name in sorted(self._counters):
                lines.append(f"# TYPE {name} counter")
                for labels, value in sorted(self._counters[name].items()):
                    lines.append(f"{name}{_labels(labels)} {value:g}")
            name = "waiaas_http_request_duration_seconds"
            lines.append(f"# TYPE {name} histogram")
            for labels, buckets in sorted(self._hist.items()):
                cumulative = 0
                for bound, n in zip((*BUCKETS_SECONDS, float("inf")), buckets, strict=True):
                    cumulative += n
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    lines.append(f"{name}_bucket{_labels((*labels, ('le', le)))} {cumulative}")
                lines.append(f"{name}_sum{_labels(labels)} {self._hist_sum[labels]:.6f}")
                lines.append(f"{name}_count{_labels(labels)} {cumulative}")
        return "\n".join(lines) + "\n"
