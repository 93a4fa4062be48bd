"""The OpenAPI document declares the authentication each route requires (`parent_proxy.api_security`), so that a
client generated from it can authenticate: the agent's bearer token, the owner's five signature headers as one
requirement, nothing on the public routes.

Which routes require what is learned from the running app, not from a list: every operation the app has is called
without credentials, and its answer says what it requires (401 ``unauthorized``: the agent token; 401
``owner_signature_invalid``: the owner's signature; anything else: nothing). Then each protected operation is called
again with credentials built only from what the document declares, and must get past authentication."""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from parent_proxy.openapi import openapi_document
from parent_proxy.owner_auth import OwnerRequest, owner_request_headers
from tests.proxy.api_harness import Harness

JSON = {"Content-Type": "application/json"}


def _operations(h: Harness) -> list[tuple[str, str]]:
    """(method, path template) of every operation the app serves and documents."""
    app: FastAPI = h.client.app  # type: ignore[assignment]
    routes = [r for r in iter_route_contexts(app.routes) if isinstance(r.original_route, APIRoute)]
    return sorted((m, str(r.path)) for r in routes if r.include_in_schema for m in r.methods or () if m != "HEAD")


def _fill(h: Harness, template: str) -> str:
    ids = {"{wallet_id}": h.wallet_id, "{approval_id}": "a1", "{token_id}": "0123456789abcdef"}
    for placeholder, value in ids.items():
        template = template.replace(placeholder, value)
    assert "{" not in template, template
    return template


def _call(h: Harness, method: str, path: str, headers: dict[str, str]) -> Any:
    content = None if method == "GET" else b"{}"
    return h.client.request(method, path, content=content, headers={**headers, **JSON})


def _required(answer: Any) -> str:
    """What the answer to a request without credentials says the operation requires."""
    if answer.status_code != 401:
        return "none"
    code = answer.json()["error"]["code"]
    return {"unauthorized": "agent", "owner_signature_invalid": "owner"}[code]


def _credentials(h: Harness, document: dict[str, Any], security: list[dict[str, Any]], method: str,
                 path: str) -> dict[str, str]:  # fmt: skip
    """The headers the operation's one security requirement declares, with the harness's real values: a bearer
    scheme gets the agent token; an API-key header gets the value of the header of that name the owner's signing
    tool sends (`owner_request_headers`, the one implementation of the owner's signature)."""
    assert len(security) == 1, security
    schemes = document["components"]["securitySchemes"]
    signed = OwnerRequest(method, path, b"" if method == "GET" else b"{}", int(time.time()), secrets.token_hex(16),
                          audience=h.origin)  # fmt: skip
    owner_headers = owner_request_headers(signed, h.owner_pub, h.owner.sign)
    headers = {}
    for name in security[0]:
        scheme = schemes[name]
        if scheme["type"] == "http":
            assert scheme["scheme"] == "bearer" and scheme["bearerFormat"].startswith("waiaas_")
            headers["Authorization"] = f"Bearer {h.token}"
        else:
            assert scheme["type"] == "apiKey" and scheme["in"] == "header", scheme
            headers[scheme["name"]] = owner_headers[scheme["name"]]
        assert "docs/api.md" in scheme["description"], name
    return headers


def test_the_document_declares_the_authentication_every_route_requires(provisioned: Harness) -> None:
    document = openapi_document()
    operations = _operations(provisioned)
    required = {}
    for method, template in operations:
        answer = _call(provisioned, method, _fill(provisioned, template), {})
        required[(method, template)] = _required(answer)
    # The app's own answers name all three kinds, so none of the checks below can pass by having nothing to check.
    assert set(required.values()) == {"agent", "owner", "none"}, required
    assert required[("GET", "/healthz")] == required[("GET", "/v1/attestation")] == "none"
    for (method, template), needs in required.items():
        operation = document["paths"][template][method.lower()]
        security = operation.get("security")
        declared = [p["name"].lower() for p in operation.get("parameters", ()) if p["in"] == "header"]
        assert "authorization" not in declared and not any(n.startswith("waiaas-owner") for n in declared), template
        if needs == "none":
            assert not security, (method, template)
            continue
        assert security, (method, template, needs)
        credentials = _credentials(provisioned, document, security, method, _fill(provisioned, template))
        assert set(credentials) == ({"Authorization"} if needs == "agent" else {
            "WAIaaS-Owner-Key", "WAIaaS-Owner-Timestamp", "WAIaaS-Owner-Nonce", "WAIaaS-Owner-Audience",
            "WAIaaS-Owner-Signature"}), (method, template)  # fmt: skip
        answer = _call(provisioned, method, _fill(provisioned, template), credentials)
        assert answer.status_code != 401, (method, template, answer.text)
    assert document.get("security") is None  # no default: the public routes need nothing


def test_the_served_document_is_the_generated_one(provisioned: Harness) -> None:
    """`/openapi.json` of the running app declares the same schemes as docs/openapi.json's generator."""
    served = provisioned.client.get("/openapi.json").json()
    assert served["components"]["securitySchemes"] == openapi_document()["components"]["securitySchemes"]
