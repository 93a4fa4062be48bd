"""Authentication comes before any parsing or validation of the request (`AgentRoute`, `OwnerRoute`): a caller
without valid credentials gets 401 whatever the body, so it cannot probe the request schema; an authenticated
caller still gets 400/422 for the same bodies."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey
from starlette.requests import Request

from parent_proxy import owner_auth
from parent_proxy.api_agent import agent_of
from parent_proxy.api_errors import ApiError
from parent_proxy.owner_auth import OwnerRequest, owner_request_headers
from parent_proxy.owner_route import verified_owner
from policies.signing import verify_owner_signature
from tests.proxy.api_harness import Harness
from tests.support.policies import owner_public_key

BAD_BODIES = (b"{not json", b"[]", b'{"admin": true}', b'{"transaction": 5, "envelope": "x", "url": 7}')
AGENT_ROUTES = (
    ("POST", "/v1/wallets/{w}/transactions/sign"),
    ("POST", "/v1/wallets/{w}/messages/sign"),
    ("GET", "/v1/wallets/{w}"),
)
OWNER_ROUTES = (
    ("POST", "/v1/wallets"),
    ("POST", "/v1/wallets/{w}/tokens"),
    ("DELETE", "/v1/wallets/{w}/tokens/0123456789abcdef"),
    ("PUT", "/v1/wallets/{w}/policy"),
    ("GET", "/v1/wallets/{w}/approvals"),
    ("POST", "/v1/wallets/{w}/approvals/a1/approve"),
    ("POST", "/v1/wallets/{w}/approvals/a1/reject"),
    ("POST", "/v1/wallets/{w}/freeze"),
    ("POST", "/v1/wallets/{w}/unfreeze"),
    ("PUT", "/v1/wallets/{w}/webhook"),
)
JSON = {"Content-Type": "application/json"}


def error(response: Any) -> tuple[int, str]:
    return response.status_code, str(response.json()["error"]["code"])


def owner_headers(h: Harness, method: str, path: str, content: bytes, key: Ed25519PrivateKey) -> dict[str, str]:
    request = OwnerRequest(method, path, content, int(time.time()), secrets.token_hex(16), audience=h.origin)
    return {**owner_request_headers(request, owner_public_key(key), key.sign), **JSON}


@pytest.mark.parametrize(("method", "route"), AGENT_ROUTES)
def test_agent_routes_refuse_bad_credentials_before_reading_the_body(
    provisioned: Harness, method: str, route: str
) -> None:
    path = route.format(w=provisioned.wallet_id)
    forged = provisioned.token[:-4] + ("AAAA" if not provisioned.token.endswith("AAAA") else "BBBB")
    for body in BAD_BODIES:
        for auth in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer garbage"},
                     {"Authorization": f"Bearer {forged}"}):  # fmt: skip
            response = provisioned.client.request(method, path, content=body, headers={**auth, **JSON})
            assert error(response) == (401, "unauthorized"), (body, auth)
        valid = {"Authorization": f"Bearer {provisioned.token}", **JSON}
        for other in ("other", "not a wallet id"):  # a valid token on a path it is not bound to: 404 first
            response = provisioned.client.request(method, route.format(w=other), content=body, headers=valid)
            assert error(response) == (404, "not_found"), (body, other)
        if method == "POST":  # the token is good: now the body is validated
            assert error(provisioned.client.post(path, content=body, headers=valid)) in {
                (400, "bad_request"),
                (422, "invalid_request"),
            }


@pytest.mark.parametrize(("method", "route"), OWNER_ROUTES)
def test_owner_routes_refuse_bad_credentials_before_reading_the_body(
    provisioned: Harness, method: str, route: str
) -> None:
    path = route.format(w=provisioned.wallet_id)
    stranger = Ed25519PrivateKey.generate()
    for body in BAD_BODIES:
        response = provisioned.client.request(method, path, content=body, headers=JSON)
        assert error(response) == (401, "owner_signature_invalid"), body
        response = provisioned.client.request(
            method, path, content=body, headers=owner_headers(provisioned, method, path, body, stranger)
        )
        assert error(response) == (401, "owner_signature_invalid"), body
        # the owner's signature over another body
        tampered = owner_headers(provisioned, method, path, b"{}", provisioned.owner)
        response = provisioned.client.request(method, path, content=body, headers=tampered)
        assert error(response) == (401, "owner_signature_invalid"), body
        if "{w}" in route:  # well-formed headers on a wallet id that cannot exist: 404, the body still unread
            bad_path = route.format(w="not a wallet id")
            signed = owner_headers(provisioned, method, bad_path, body, provisioned.owner)
            response = provisioned.client.request(method, bad_path, content=body, headers=signed)
            assert error(response) == (404, "not_found"), body
    if route != "/v1/wallets/{w}/tokens" and method in {"POST", "PUT"} and "reject" not in route:
        body = b"{not json"  # the owner's own request: now the body is parsed (and refused)
        response = provisioned.client.request(
            method, path, content=body, headers=owner_headers(provisioned, method, path, body, provisioned.owner)
        )
        assert error(response) == (400, "bad_request")


@pytest.mark.parametrize(("method", "route"), [r for r in OWNER_ROUTES if "{w}" in r[1]])
def test_owner_routes_do_not_reveal_which_wallets_exist(
    provisioned: Harness, method: str, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown wallet id answers byte for byte as a known wallet with the wrong owner key does, after the same
    work: one Ed25519 verification each (timing then does not tell an existing wallet and its owner key apart)."""
    stranger = Ed25519PrivateKey.generate()
    verified: list[Pubkey] = []
    real = verify_owner_signature

    def counted(payload: bytes, signature: bytes, owner: Pubkey) -> None:
        verified.append(owner)
        real(payload, signature, owner)

    monkeypatch.setattr(owner_auth, "verify_owner_signature", counted)
    answers = []
    for wallet_id, key in (
        ("no-such-wallet", provisioned.owner),
        ("no-such-wallet", stranger),
        (provisioned.wallet_id, stranger),
    ):
        path = route.format(w=wallet_id)
        response = provisioned.client.request(
            method, path, content=b"{}", headers=owner_headers(provisioned, method, path, b"{}", key)
        )
        answers.append((response.status_code, response.json()))
    assert answers[0] == answers[1] == answers[2]
    assert verified == [owner_public_key(provisioned.owner), owner_public_key(stranger), owner_public_key(stranger)]
    assert answers[0][0] == 401 and answers[0][1]["error"]["code"] == "owner_signature_invalid"


def _bare_request() -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""})


def test_handlers_refuse_a_request_no_route_authenticated() -> None:
    """Fail safe: a handler reached without `AgentRoute` / `OwnerRoute` (a wiring mistake) refuses."""
    with pytest.raises(ApiError, match="missing bearer token") as agent:
        agent_of(_bare_request())
    assert agent.value.code == "unauthorized"
    with pytest.raises(ApiError, match="owner request not verified") as owner:
        verified_owner(_bare_request())
    assert owner.value.code == "owner_signature_invalid"
