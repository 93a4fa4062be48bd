"""Property-based fuzzing of the HTTP API with schemathesis, from the checked-in ``docs/openapi.json``.

Every operation of the contract gets generated requests, valid and invalid (generation mode ``all``; phases
examples and fuzzing; the coverage phase is off by default because it alone sends several hundred requests, see
``WAIAAS_FUZZ_COVERAGE``). They go in-process to the ASGI app of `tests.proxy.api_harness` (the real enclave app
over a Unix socket, a real SQLite store, the embedded LiteSVM chain: no network), which has one provisioned wallet
``w1`` with an agent token and the example policy.

Getting past authentication, so that the fuzzer reaches validation and the handlers. Generation hooks put
*markers* into about half the generated cases, and the test swaps each for the real value of the running harness
(by assignment, so that schemathesis re-checks whether the case is still a negative one):

- agent routes: ``Authorization`` becomes the harness's bearer token (the other half keep what schemathesis
  generated: mostly 401);
- every route with ``{wallet_id}``: the provisioned wallet (the other half: an unknown or impossible id, 404);
- ``POST .../transactions/sign``: ``transaction`` becomes a real transfer from the agent, allowed (200),
  escalated (202) or denied (403) by the example policy; ``POST .../messages/sign``: a real off-chain message;
  ``POST /v1/wallets``: ``owner_public_key`` becomes the harness owner key (the signer must be that key);
- owner routes: always signed. The signature covers the SHA-256 of the exact body bytes, so it is made where the
  final bytes exist: a ``requests`` auth object (`OwnerSigner`) that schemathesis' transport applies to the
  prepared request after serialization, adding the four ``WAIaaS-Owner-*`` headers with a fresh nonce. Owner
  *documents* inside bodies (policies, approvals, freeze orders) are not forged: the fuzzer cannot sign those, so
  on the owner side it reaches success only for token issue/revoke, wallet creation, approvals and the webhook.

Checks on every response (`make_checks`): the status code is one the operation documents, the content type, body
and documented headers match the contract for that status; invalid input is rejected with a 4xx; no 5xx other
than 503 with one of the documented dependency codes; no response carries an agent token (except the one-time
answer of ``POST .../tokens``, 201, with ``Cache-Control: no-store``), the harness token's secret, a bearer or
webhook secret sent in the request, or the enclave sealing secret.

Deterministic (derandomized, no example database, no network) and bounded: ``WAIAAS_FUZZ_EXAMPLES`` examples per
operation and phase (default 25). More, locally: ``WAIAAS_FUZZ_EXAMPLES=1000 WAIAAS_FUZZ_COVERAGE=1
.venv/bin/pytest tests/proxy/test_api_schemathesis.py`` (docs/api.md, "Fuzzing"). Its findings are regression
tests in tests/proxy/test_api_schemathesis_findings.py.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from solders.pubkey import Pubkey

from parent_proxy.owner_auth import OwnerRequest, owner_request_headers
from parent_proxy.store.tokens import parse_token
from tests.proxy.api_harness import LAMPORTS_PER_SOL, Harness, provision, running_harness
from tests.support.policies import BLOCKED, MERCHANT

Case = schemathesis.Case[Any]
OPENAPI_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
MAX_EXAMPLES = int(os.environ.get("WAIAAS_FUZZ_EXAMPLES", "25"))
COVERAGE_PHASE = os.environ.get("WAIAAS_FUZZ_COVERAGE", "") not in ("", "0")

SEALING_SECRET = "operator-secret-for-tests-only!!"  # the harness's LocalSealer secret
TOKEN_RE = re.compile(r"waiaas_[0-9a-f]{16}_([A-Za-z0-9_-]{43})")  # group 1: the secret (may contain "_")
BASE58_KEY = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")
DOCUMENTED_503_CODES = frozenset(
    {
        "enclave_unavailable",
        "attestation_refused",
        "attestation_inconsistent",
        "store_unavailable",
        "clock_unavailable",
        "chain_unavailable",
    }
)

# Markers the generation hooks insert and `substitute_markers` replaces with the running harness's real values.
WALLET = "fuzz-marker.provisioned-wallet"  # URL-safe: path parameters are percent-encoded before the test sees them
AGENT_TOKEN = "Bearer <agent token>"
OWNER_KEY = "<owner key>"
MESSAGE = "<off-chain message>"
TRANSFERS = {
    "<transfer allowed>": (1_000, MERCHANT),
    "<transfer escalated>": (2 * LAMPORTS_PER_SOL, MERCHANT),
    "<transfer denied>": (1_000, BLOCKED),
}

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


def _path(context: schemathesis.HookContext) -> str:
    return "" if context.operation is None else str(context.operation.path)


@SCHEMA.hook
def flatmap_headers(context: schemathesis.HookContext, headers: dict[str, Any] | None) -> Any:
    if not is_agent_operation(_path(context)):
        return st.just(headers)
    return st.sampled_from([headers, {**(headers or {}), "Authorization": AGENT_TOKEN}])


@SCHEMA.hook
def flatmap_path_parameters(context: schemathesis.HookContext, path_parameters: dict[str, Any] | None) -> Any:
    if not path_parameters or "wallet_id" not in path_parameters:
        return st.just(path_parameters)
    return st.sampled_from([path_parameters, {**path_parameters, "wallet_id": WALLET}])


@SCHEMA.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> Any:
    path = _path(context)
    if not isinstance(body, dict):
        return st.just(body)
    if path.endswith("/transactions/sign"):
        return st.sampled_from([body, *({**body, "transaction": marker} for marker in TRANSFERS)])
    if path.endswith("/messages/sign"):
        return st.sampled_from([body, {**body, "message": MESSAGE}])
    if path == "/v1/wallets":
        return st.sampled_from([body, {**body, "owner_public_key": OWNER_KEY}])
    return st.just(body)


def offchain_message(signer: Pubkey, text: str) -> bytes:
    """A version-0 Solana off-chain message, restricted ASCII (format 0), one signer."""
    body = text.encode("ascii")
    return (
        b"\xffsolana offchain" + b"\x00" + bytes(32) + b"\x00" + b"\x01" + bytes(signer)
        + len(body).to_bytes(2, "little") + body
    )  # fmt: skip


def substitute_markers(case: Case, harness: Harness) -> None:
    """Swap the markers for the running harness's real values. Assigned, not edited in place: schemathesis then
    re-checks whether the case is still negative (a negated field may have been replaced by a valid value)."""
    if case.path_parameters and case.path_parameters.get("wallet_id") == WALLET:
        case.path_parameters = {**case.path_parameters, "wallet_id": harness.wallet_id}
    if case.headers and case.headers.get("Authorization") == AGENT_TOKEN:
        headers = CaseInsensitiveDict(case.headers)
        headers["Authorization"] = f"Bearer {harness.token}"
        case.headers = headers
    if isinstance(case.body, dict):
        body = dict(case.body)
        if body.get("owner_public_key") == OWNER_KEY:
            body["owner_public_key"] = str(harness.owner_pub)
        if body.get("message") == MESSAGE:
            body["message"] = base64.b64encode(offchain_message(harness.agent, "fuzz")).decode()
        transfer = TRANSFERS.get(str(body.get("transaction")))
        if transfer is not None:
            body["transaction"] = base64.b64encode(harness.transfer(*transfer)).decode()
        if body != case.body:
            case.body = body


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
        signed = OwnerRequest(str(request.method), path, content, int(time.time()), secrets.token_hex(16))
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


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    for h in running_harness(tmp_path_factory.mktemp("fuzz"), rate=1_000_000.0):
        provision(h)
        yield h


@pytest.fixture(scope="module")
def checks(harness: Harness) -> list[Any]:
    return make_checks(harness)


def call_kwargs(case: Case, harness: Harness) -> dict[str, Any]:
    """In-process ASGI call of the harness's app; owner routes signed over the final request."""
    kwargs: dict[str, Any] = {"app": harness.client.app}
    if is_owner_operation(case.operation.path):
        kwargs["auth"] = OwnerSigner(harness)
    return kwargs


@SCHEMA.parametrize()
def test_api_conforms_to_its_contract(case: Case, harness: Harness, checks: list[Any]) -> None:
    substitute_markers(case, harness)
    case.call_and_validate(checks=checks, **call_kwargs(case, harness))


def test_fuzzing_left_the_harness_token_usable(harness: Harness) -> None:
    """The fuzzer revoked nothing it should not have: the agent token still reads its wallet. Runs after the
    fuzzing in this module (definition order)."""
    response = harness.client.get(
        f"/v1/wallets/{harness.wallet_id}", headers={"Authorization": f"Bearer {harness.token}"}
    )
    assert response.status_code == 200, response.text
