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
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from tests.proxy.api_contract_checks import SCHEMA, Case, call_kwargs, is_agent_operation, make_checks
from tests.proxy.api_harness import LAMPORTS_PER_SOL, Harness, provision, running_harness
from tests.support.offchain_messages import offchain_message
from tests.support.policies import BLOCKED, MERCHANT

BASE58_KEY = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")

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


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    for h in running_harness(tmp_path_factory.mktemp("fuzz"), rate=1_000_000.0):
        provision(h)
        yield h


@pytest.fixture(scope="module")
def checks(harness: Harness) -> list[Any]:
    return make_checks(harness)


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
