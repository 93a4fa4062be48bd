"""``GET /metrics`` under ``WAIAAS_METRICS=loopback`` (what the CDK hosts write): served to a scraper on the host,
404 to anyone whose request comes through the load balancer.

Before, ``/metrics`` was served to every client that reached the proxy, and through the cloud load balancer any
allowed client watched every wallet's decisions and every owner's approvals as they happened. The load balancer
now answers 404 for the path itself (`cdk.hosts_stack`, tested in tests/cdk); the proxy's own check also covers
what a path rule may not see: the proxy decodes percent-escapes, so ``/%6Detrics`` is ``/metrics`` to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from parent_proxy.metrics import served_to
from parent_proxy.settings import SettingsError, load_settings
from tests.proxy.api_harness import Harness, provision, running_harness
from tests.proxy.minimal_settings import BASE
from tests.support.policies import BLOCKED

ALB = ("10.0.1.17", 41234)  # a load balancer node's address in the VPC
RELAYED = {"X-Forwarded-For": "10.20.0.9", "X-Forwarded-Proto": "https", "X-Forwarded-Port": "443"}
NOT_FOUND = {"error": {"code": "not_found", "message": "not found"}}


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    for harness in running_harness(tmp_path):
        provision(harness)
        harness.sign(harness.transfer(1000, BLOCKED))  # a denial: something to count
        yield harness


def client_at(h: Harness, address: tuple[str, int]) -> TestClient:
    return TestClient(h.client.app, base_url=h.origin, client=address)


def test_loopback_serves_the_host_and_refuses_what_comes_through_the_load_balancer(h: Harness) -> None:
    h.services.metrics_access = "loopback"
    through_lb = client_at(h, ALB)
    for path in ("/metrics", "/%6Detrics", "/metrics?format=text"):
        refused = through_lb.get(path, headers=RELAYED)
        assert (refused.status_code, refused.json()) == (404, NOT_FOUND), path
        assert "waiaas_decisions_total" not in refused.text
    assert through_lb.get("/metrics").status_code == 404  # no forwarding header: the address alone decides
    for host in ("127.0.0.1", "::1"):
        scraped = client_at(h, (host, 50000)).get("/metrics")
        assert scraped.status_code == 200, host
        assert 'waiaas_decisions_total{stage="proxy",verdict="deny"} 1' in scraped.text
    # On the host, but relayed (a local reverse proxy, or a forged header that a server trusting it would
    # have turned into the client's address): not served.
    relayed_locally = client_at(h, ("127.0.0.1", 50000)).get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert relayed_locally.status_code == 404
    assert h.client.get("/healthz").status_code == 200  # nothing else changes


def test_any_serves_every_client_as_before(h: Harness) -> None:
    assert h.services.metrics_access == "any"
    served = client_at(h, ALB).get("/metrics", headers=RELAYED)
    assert served.status_code == 200 and "waiaas_decisions_total" in served.text


@pytest.mark.parametrize(
    ("host", "headers", "served"),
    [
        ("127.0.0.1", [], True),
        ("127.8.9.10", [b"accept"], True),
        ("::1", [], True),
        ("::ffff:127.0.0.1", [], True),
        ("10.0.1.17", [], False),
        ("::ffff:10.0.1.17", [], False),
        ("testclient", [], False),
        (None, [], False),
        ("127.0.0.1", [b"X-Forwarded-For"], False),
        ("127.0.0.1", [b"forwarded"], False),
        ("127.0.0.1", [b"x-real-ip"], False),
    ],
)
def test_served_to_under_loopback(host: str | None, headers: list[bytes], served: bool) -> None:
    assert served_to("loopback", host, headers) is served
    assert served_to("any", host, headers) is True
    assert served_to("nobody", host, headers) is False


def test_the_setting_is_parsed_strictly() -> None:
    env: dict[str, Any] = dict(BASE)
    assert load_settings(env).metrics_access == "any"
    assert load_settings({**env, "WAIAAS_METRICS": " Loopback "}).metrics_access == "loopback"
    for bad in ("local", "", "true", "127.0.0.1"):
        with pytest.raises(SettingsError, match="WAIAAS_METRICS must be any or loopback"):
            load_settings({**env, "WAIAAS_METRICS": bad})
