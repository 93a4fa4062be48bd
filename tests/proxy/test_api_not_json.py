"""A body that is not JSON is 400 ``bad_request`` on every route that takes a JSON body, whatever its content type
(docs/api.md, Errors); JSON that fails validation stays 422 ``invalid_request``.

Before, only a body sent as ``application/json`` that did not parse was 400: FastAPI reads a body as JSON only
under a JSON content type, so the same bytes as ``text/plain`` or with no content type, and any empty body, failed
validation as "not an object" / "field required" and were answered 422 ``invalid_request``.

Both kinds of caller are checked through the real proxy (its route classes authenticate first): the agent with its
token, the owner with a request signature over the very bytes and content type sent. Nothing is recorded.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from parent_proxy.owner_auth import OwnerRequest, owner_request_headers
from tests.proxy.api_harness import Harness, provision, running_harness
from tests.support.policies import owner_public_key

NOT_JSON = (b"hello", b"{", b"", b"   ", b'{"transaction": "AAAA"', b"\xff\xfe")
AGENT_ROUTES = ("/transactions/sign", "/messages/sign")
CONTENT_TYPES = ("application/json", "text/plain", "application/x-www-form-urlencoded", None)


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    for harness in running_harness(tmp_path_factory.mktemp("not-json")):
        provision(harness)
        yield harness


def json_routes(h: Harness) -> list[tuple[str, str]]:
    """Every route of the app that takes a JSON body (method, path template), from its OpenAPI description."""
    paths = h.client.app.openapi()["paths"]  # type: ignore[attr-defined]
    routes = [(m.upper(), p) for p, item in paths.items() for m, op in item.items() if "requestBody" in op]
    assert len(routes) >= 9  # agent: 2 sign routes; owner: creation, policy, approve, freeze, unfreeze, webhook, keys
    return routes


def send(h: Harness, route: tuple[str, str], content: bytes, content_type: str | None) -> Any:
    method, template = route
    path = template.format(wallet_id=h.wallet_id, approval_id="a1")
    headers = {} if content_type is None else {"Content-Type": content_type}
    if template.endswith(AGENT_ROUTES):
        headers["Authorization"] = f"Bearer {h.token}"
    else:
        request = OwnerRequest(method, path, content, int(time.time()), secrets.token_hex(16), audience=h.origin)
        headers.update(owner_request_headers(request, owner_public_key(h.owner), h.owner.sign))
    return h.client.request(method, path, content=content, headers=headers)


def test_a_body_that_is_not_json_is_400_on_every_json_route(h: Harness) -> None:
    before = (len(h.store.audit_records(0, 10_000)), h.store.get_wallet(h.wallet_id))
    answers = {}
    for route in json_routes(h):
        for content_type in CONTENT_TYPES:
            for content in NOT_JSON:
                response = send(h, route, content, content_type)
                answers[(route, content_type, content)] = (response.status_code, response.json()["error"]["code"])
    wrong = {k: v for k, v in answers.items() if v != (400, "bad_request")}
    assert wrong == {}
    assert (len(h.store.audit_records(0, 10_000)), h.store.get_wallet(h.wallet_id)) == before


def test_json_under_another_content_type_is_400_naming_it(h: Harness) -> None:
    """Valid JSON sent as text/plain (or with no content type) is not read as JSON (FastAPI's strict content type,
    which keeps a browser's simple cross-site request out): 400 saying which content type to send."""
    route = next(r for r in json_routes(h) if r[1].endswith("/transactions/sign"))
    for content_type in ("text/plain", None):
        response = send(h, route, b'{"transaction": "AAAA", "idempotency_key": "k"}', content_type)
        assert response.status_code == 400, response.text
        assert "Content-Type: application/json" in response.json()["error"]["message"]


def test_json_that_fails_validation_is_still_422(h: Harness) -> None:
    for route in json_routes(h):
        for content in (b"[]", b'"hello"', b"5", b'{"unknown": true}'):
            response = send(h, route, content, "application/json")
            assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_request"), (
                route,
                content,
                response.text,
            )
