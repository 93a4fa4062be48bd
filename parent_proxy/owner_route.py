"""What every owner route shares: the owner request verified before anything else (`OwnerRoute`, `owner_of`), the
verified wallet and key handed to the route (`verified_owner`, `verified_owner_key`), store calls with their errors
translated (`run_store`), and an owner envelope's bytes (`envelope_bytes`). The routes are in
`parent_proxy.api_owner`, `parent_proxy.api_orders`, `parent_proxy.api_agent_key` and `parent_proxy.api_multisig`.

`OwnerRoute` authenticates first: the owner request signature is verified over the raw body before FastAPI parses or
validates the body, so a caller who is not the owner gets 401 whatever the body. Then a body that repeats a key
within one JSON object is 400 ``bad_request`` (`refuse_repeated_keys`), before anything is read from it: FastAPI's
JSON reading keeps the last value, and `envelope_bytes` re-serializes what it kept, so the strict parser of the
signed documents (`policies.canonical`, which refuses repeated keys) would never see them. The agent's routes are
not owner routes: their hot path parses its body once, as FastAPI does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Path, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from solders.pubkey import Pubkey

from parent_proxy.api_agent import services_of
from parent_proxy.api_errors import ApiError, Code, owner_document_refused, translate
from parent_proxy.api_security import OWNER_SECURITY, declare
from parent_proxy.clock import read_clock
from parent_proxy.errors import NotFound, ProxyError
from parent_proxy.owner_auth import ForeignAudience, parse_owner_headers, verify_owner_request
from parent_proxy.schemas import WALLET_ID, EnvelopeBody
from parent_proxy.services import Services, canonical
from parent_proxy.store.model import Wallet
from policies.canonical import LONE_SURROGATE, DuplicateKey, no_duplicate_keys
from policies.errors import PolicyDocumentError, PolicyEngineError
from policies.identifiers import WALLET_ID_RULE

WalletId = Annotated[str, Path(pattern=WALLET_ID)]
OUTSIDE_THE_RULE = (
    f"not found: a wallet id is {WALLET_ID_RULE}; an id outside that rule (one an earlier build took, with ':' "
    "say) names no wallet this build can use"
)
"""The 404 of an owner route whose path names an id outside the rule, stored or not (so it says nothing about
which ids exist)."""


async def run_store(services: Services, function: Any, *args: Any) -> Any:
    try:
        return await services.run(function, *args)
    except (ProxyError, PolicyEngineError) as exc:
        raise translate(exc) from exc


async def owner_of(request: Request, services: Services, wallet_id: str | None) -> tuple[Wallet | None, Pubkey]:
    """Verify the owner request signature: by the wallet's owner key, or (no wallet yet) a configured owner key.
    Return the wallet (None when creating one) and the verified owner key, read from the headers by
    `parent_proxy.owner_auth` only (routes never read the owner headers themselves).
    Missing or malformed headers are refused before the wallet is looked up; a wallet id that cannot exist is 404.
    An unknown wallet is refused exactly as a wrong owner key is (401, same check, same message): an unauthenticated
    caller cannot learn which wallet ids exist. An owner's request signed for an origin this proxy does not list is
    refused as a bad signature too, and logged for the operator (`parent_proxy.owner_audience_log`)."""
    parse_owner_headers(request.headers)
    if wallet_id is not None and not re.fullmatch(WALLET_ID, wallet_id):
        raise ApiError(Code.NOT_FOUND, OUTSIDE_THE_RULE)
    body = await request.body()
    wallet = None if wallet_id is None else await run_store(services, wallet_or_none, services, wallet_id)
    allowed: frozenset[Pubkey]
    if wallet_id is None:
        allowed = services.owner_keys
    elif wallet is None:
        allowed = frozenset()  # no key can sign for a wallet that does not exist
    else:
        allowed = frozenset({Pubkey.from_bytes(wallet.owner_pubkey)})
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")

    def verify() -> Pubkey:
        return verify_owner_request(
            request.headers, method=request.method, path=path, body=body, allowed_keys=allowed,
            audiences=services.public_origins, now=read_clock(services.clock),
            max_skew=services.owner_max_skew_seconds, nonces=services.nonces, scope=wallet_id,
        )  # fmt: skip

    try:
        owner: Pubkey = await run_store(services, verify)
    except ForeignAudience as exc:  # an owner's request for an origin not configured: tell the operator, not them
        services.audience_log.note(exc.audience, len(services.public_origins))
        raise ApiError(exc.code, exc.message) from None
    return wallet, owner


def wallet_or_none(services: Services, wallet_id: str) -> Wallet | None:
    try:
        return services.store.get_wallet(wallet_id)
    except NotFound:
        return None


class OwnerRoute(APIRoute):
    """A route that verifies the owner request (`owner_of`) before FastAPI's own handler parses and validates it;
    its OpenAPI operation declares the owner's five signature headers (`parent_proxy.api_security`)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.openapi_extra = declare(self.openapi_extra, OWNER_SECURITY)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        validate_and_run = super().get_route_handler()

        async def authenticated(request: Request) -> Response:
            raw = request.path_params.get("wallet_id")
            wallet_id = None if raw is None else str(raw)
            wallet, owner = await owner_of(request, services_of(request), wallet_id)
            refuse_repeated_keys(await request.body())  # read once already, by owner_of: Starlette keeps it
            request.state.owner_wallet, request.state.owner_key = wallet, owner
            request.state.owner_verified = True
            return await validate_and_run(request)

        return authenticated


REPEATED_KEY = "the body repeats a key within one JSON object: each key may appear once"


def refuse_repeated_keys(body: bytes) -> None:
    """400 ``bad_request`` if ``body`` is JSON in which an object repeats a key (the key is not echoed). A body that
    is not JSON at all is left to FastAPI's own reading, which refuses it (`parent_proxy.app.not_json_body`)."""
    if not body:
        return
    try:
        json.loads(body, object_pairs_hook=no_duplicate_keys)
    except DuplicateKey:
        raise ApiError(Code.BAD_REQUEST, REPEATED_KEY) from None
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        return


def verified_owner(request: Request) -> Wallet | None:
    """The wallet whose owner `OwnerRoute` verified (None when creating one); 401 if nothing was verified."""
    if getattr(request.state, "owner_verified", False) is not True:
        raise ApiError(Code.OWNER_SIGNATURE_INVALID, "owner request not verified")
    wallet: Wallet | None = request.state.owner_wallet
    return wallet


def verified_owner_key(request: Request) -> Pubkey:
    """The owner key whose request signature `OwnerRoute` verified; 401 if nothing was verified."""
    verified_owner(request)
    key: Pubkey = request.state.owner_key
    return key


def assert_wallet(wallet: Wallet | None) -> Wallet:
    if wallet is None:  # pragma: no cover - owner_of returns the wallet whenever a wallet id is given
        raise ApiError(Code.NOT_FOUND, "not found")
    return wallet


def envelope_bytes(body: EnvelopeBody, what: str) -> bytes:
    """The envelope as checked, stored and sent to the enclave (`canonical`, UTF-8). A lone surrogate escape
    (``"\\ud800"``) has no UTF-8 form: 422 as any malformed owner document (`owner_document_refused`), nothing done."""
    try:
        return canonical(body.envelope.model_dump())
    except UnicodeEncodeError as exc:
        raise owner_document_refused(what, PolicyDocumentError("envelope", LONE_SURROGATE)) from exc
