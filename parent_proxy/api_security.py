"""How the API's authentication is declared in its OpenAPI document (docs/openapi.json), so that a client generated
from it knows what each route requires: the agent's bearer token on the agent routes (`api_agent.AgentRoute`), the
owner's five request-signature headers, all together, on the owner routes (`owner_route.OwnerRoute`), nothing on the
public ones (health, readiness, metrics, attestation).

Declarations only: the route classes still authenticate before FastAPI reads anything else of the request (401
whatever the body). FastAPI's own security dependencies are not used for this: they run after the body is parsed
and validated, and FastAPI lists several of them as alternatives (OpenAPI's OR), where the owner's five headers are
one requirement (AND). So each route class adds its requirement to its operations (`declare`) and the app adds the
schemes to the document's components (`with_security_schemes`).
"""

from __future__ import annotations

import copy
from typing import Any

from parent_proxy.owner_auth import AUDIENCE_HEADER, KEY_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER

AGENT_SCHEME = "agentToken"
OWNER_SIGNATURE = (
    "One of the five headers of the owner's request signature, all five required on every owner request; a "
    "missing or malformed one is 401 owner_signature_invalid. How to sign: docs/api.md, 'The owner'."
)
OWNER_HEADERS: dict[str, tuple[str, str]] = {
    "ownerKey": (KEY_HEADER, "The owner's public key, base58: the wallet's owner key (to create a wallet, one of "
                 "the proxy's WAIAAS_OWNER_KEYS)."),
    "ownerTimestamp": (TIMESTAMP_HEADER, "Unix seconds when the request was signed, within the proxy's skew of its "
                       "clock (WAIAAS_OWNER_MAX_SKEW_SECONDS, 300 s by default); else 401 owner_request_replayed."),
    "ownerNonce": (NONCE_HEADER, "16-64 characters of A-Z a-z 0-9 _ -, new for every request (a reused one is 401 "
                   "owner_request_replayed)."),
    "ownerAudience": (AUDIENCE_HEADER, "The origin the request is sent to and signed for, scheme://host[:port] in "
                      "normal form: one of the proxy's WAIAAS_PUBLIC_ORIGINS (docs/api.md, 'The audience')."),
    "ownerSignature": (SIGNATURE_HEADER, "Base58 Ed25519 signature (64 bytes) by the owner key over this request: "
                       "its audience, method, path with query, the SHA-256 of the exact body bytes, timestamp and "
                       "nonce. A new value for every request, not a static key."),
}  # fmt: skip
"""Security scheme name -> (header, what it holds)."""

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    AGENT_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "waiaas_<token_id>_<secret>",
        "description": (
            "The agent token, bound to one wallet: Authorization: Bearer waiaas_<token_id: 16 hex>_<secret: 43 "
            "url-safe base64>, as POST /v1/wallets/{wallet_id}/tokens returns it once. Missing, malformed, "
            "unknown or revoked: 401 unauthorized; a token of another wallet: 404. docs/api.md, 'Agents'."
        ),
    },
    **{
        name: {"type": "apiKey", "in": "header", "name": header, "description": f"{what} {OWNER_SIGNATURE}"}
        for name, (header, what) in OWNER_HEADERS.items()
    },
}

AGENT_SECURITY: list[dict[str, list[str]]] = [{AGENT_SCHEME: []}]
OWNER_SECURITY: list[dict[str, list[str]]] = [{name: [] for name in OWNER_HEADERS}]
"""One requirement naming all five schemes: OpenAPI's AND."""


def declare(openapi_extra: dict[str, Any] | None, security: list[dict[str, list[str]]]) -> dict[str, Any]:
    """A route's ``openapi_extra`` with its security requirement added."""
    return {**(openapi_extra or {}), "security": security}


def with_security_schemes(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the schemes the requirements name in its components (changed in place, and returned)."""
    document.setdefault("components", {})["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    return document
