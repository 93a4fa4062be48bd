"""The OpenAPI contract as schemathesis loads it, the checks every response gets, the owner-signed call."""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
import schemathesis
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from parent_proxy.owner_auth import OwnerRequest, owner_request_headers
from parent_proxy.store.tokens import parse_token
from tests.proxy.api_harness import Harness

Case = schemathesis.Case[Any]
OPENAPI_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
MAX_EXAMPLES = int(os.environ.get("WAIAAS_FUZZ_EXAMPLES", "25"))
COVERAGE_PHASE = os.environ.get("WAIAAS_FUZZ_COVERAGE", "") not in ("", "0")

SEALING_SECRET = "operator-secret-for-tests-only!!"  # the harness's LocalSealer secret
TOKEN_RE = re.compile(r"waiaas_[0-9a-f]{16}_([A-Za-z0-9_-]{43})")  # group 1: the secret (may contain "_")
DOCUMENTED_503_CODES = frozenset(
    {
        "enclave_unavailable",
        "attestation_refused",
        "attestation_inconsistent",
        "signer_secret_mismatch",
        "store_unavailable",
        "clock_unavailable",
        "chain_unavailable",
    }
)

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "phases": {"coverage": {"enabled": COVERAGE_PHASE}, "stateful": {"enabled": False}},
        # Invalid input may be refused with any 4xx: 413 (body over 16 KiB) is one too; schemathesis' default list
        # lacks it. Whether that 4xx is documented for the operation is `status_code_conformance`'s job.
        "checks": {"negative_data_rejection": {"expected-statuses": ["4XX"]}},
    }
)
SCHEMA = schemathesis.openapi.from_path(OPENAPI_PATH, config=CONFIG)


def is_agent_operation(path: str) -> bool:
    return path == "/v1/wallets/{wallet_id}" or path.endswith(("/transactions/sign", "/messages/sign"))


def is_owner_operation(path: str) -> bool:
    return path.startswith("/v1/wallets") and not is_agent_operation(path)


class OwnerSigner(requests.auth.AuthBase):
    """Signs the prepared request (final method, path and body bytes) as the owner, with a fresh nonce."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        assert isinstance(body, (bytes, str)), "schemathesis serializes JSON bodies to bytes"
        content = body.encode() if isinstance(body, str) else body
        url = urlsplit(str(request.url))
        # What the proxy verifies: the path as the ASGI server decodes it, and the raw query string.
        path = unquote(url.path) + (f"?{url.query}" if url.query else "")
        signed = OwnerRequest(
            str(request.method), path, content, int(time.time()), secrets.token_hex(16), audience=self.harness.origin
        )
        request.headers.update(owner_request_headers(signed, self.harness.owner_pub, self.harness.owner.sign))
        return request


def _response_text(response: schemathesis.Response) -> str:
    headers = "\n".join(f"{name}: {', '.join(values)}" for name, values in response.headers.items())
    return headers + "\n" + response.content.decode("utf-8", errors="replace")


def _request_secrets(case: Case) -> set[str]:
    """Secrets the request carried: the secret part of a bearer token, a webhook secret."""
    found: set[str] = set()
    authorization = case.headers.get("Authorization") if case.headers else None
    if isinstance(authorization, str):
        found.update(match.group(1) for match in TOKEN_RE.finditer(authorization))
    body: Any = case.body
    secret = body.get("secret") if isinstance(body, dict) else None
    if isinstance(secret, str) and len(secret) >= 16:
        found.add(secret)
    return found


def _error_code(response: schemathesis.Response) -> object:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def make_checks(harness: Harness) -> list[Any]:
    """Schemathesis' conformance checks, plus the server-error rule and the secret check of this API."""
    parsed = parse_token(harness.token)
    assert parsed is not None, "the harness issued a token"
    token_secret = parsed[1]

    def no_undocumented_server_error(_: object, response: schemathesis.Response, case: Case) -> None:
        if response.status_code >= 500:
            code = _error_code(response)
            assert response.status_code == 503 and code in DOCUMENTED_503_CODES, (
                f"{case.operation.label}: server error {response.status_code} {code!r}"
            )

    def no_secret_in_response(_: object, response: schemathesis.Response, case: Case) -> None:
        text = _response_text(response)
        tokens = [match.group(0) for match in TOKEN_RE.finditer(text)]
        if case.operation.path == "/v1/wallets/{wallet_id}/tokens" and response.status_code == 201:
            assert len(tokens) == 1, "a token issue answers exactly one token"
            assert response.headers.get("cache-control") == ["no-store"], "an issued token is never cacheable"
        else:
            assert not tokens, f"{case.operation.label}: a token in a {response.status_code} response"
        for secret in {token_secret, SEALING_SECRET, *_request_secrets(case)}:
            assert secret not in text, f"{case.operation.label}: a secret in a {response.status_code} response"

    return [
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
        negative_data_rejection,
        no_undocumented_server_error,
        no_secret_in_response,
    ]


def call_kwargs(case: Case, harness: Harness) -> dict[str, Any]:
    """In-process ASGI call of the harness's app; owner routes signed over the final request."""
    kwargs: dict[str, Any] = {"app": harness.client.app}
    if is_owner_operation(case.operation.path):
        kwargs["auth"] = OwnerSigner(harness)
    return kwargs
