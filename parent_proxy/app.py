"""The FastAPI application: factory, error handlers, size limit and metrics middleware, public routes.

Routes for agents are in `parent_proxy.api_agent`, for the owner in `parent_proxy.api_owner`. Every error, from
any layer, leaves as the uniform body of `parent_proxy.api_errors` (validation errors included); an unexpected one
is logged by its type alone and goes no further (`parent_proxy.server_errors`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parent_proxy import api_agent, api_agent_key, api_multisig, api_orders, api_owner
from parent_proxy.api_errors import ApiError, Code
from parent_proxy.api_security import with_security_schemes
from parent_proxy.attestation import NonceQuery, SessionKeyQuery, attest, attest_session
from parent_proxy.metrics import CONTENT_TYPE, served_to
from parent_proxy.schemas import AttestationView, ErrorBody, Health, Readiness
from parent_proxy.server_errors import ProxyApi
from parent_proxy.services import Services

API_VERSION = "1.0.0"
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": "uniform error body"}
    for status in (400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 503)
}


HTTP_CODES = {405: Code.METHOD_NOT_ALLOWED, 413: Code.PAYLOAD_TOO_LARGE}
"""The codes of Starlette's and FastAPI's own refusals by status (404 aside); any other is ``bad_request``."""


class _Api(ProxyApi):
    """The proxy's app: its OpenAPI document also names the security schemes its routes require
    (`parent_proxy.api_security`)."""

    def openapi(self) -> dict[str, Any]:
        return with_security_schemes(super().openapi())  # FastAPI's document, cached by FastAPI


class _TooLarge(StarletteHTTPException):
    """A body outgrew the limit while it was read. An ``HTTPException`` on purpose: FastAPI's body parsing passes
    those on (any other exception it answers 400 ``bad_request``), to the handler that answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


class LimitsAndMetrics:
    """Pure ASGI middleware: refuse bodies over ``max_body_bytes`` (413, by Content-Length before reading and by
    counting while reading) and a Content-Length that is no number (400), run every request but GET and HEAD to its
    end in its own task (`parent_proxy.completions`), and time every request into the metrics by route template and
    status."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.services.max_body_bytes
        started = time.perf_counter()
        status = {"code": 500, "sent": False}
        try:
            _check_content_length(scope, limit)
        except ApiError as refused:
            await _send_error(send, refused)
            self._observe(scope, refused.status, started)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
            await send(message)

        # A body over the limit without Content-Length (chunked) stops at `_TooLarge`, answered 413 by the app's
        # handler of HTTP exceptions (`create_app`) whichever route was reading it.
        if scope["method"] in ("GET", "HEAD"):
            await self.app(scope, counting_receive, tracking_send)
        else:  # state-changing: runs to its end even if this task is cancelled (`parent_proxy.completions`)
            await self.services.completions.run(self.app(scope, counting_receive, tracking_send))
        self._observe(scope, int(status["code"]), started)

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics = self.services.metrics
        metrics.observe(time.perf_counter() - started, route=path)
        metrics.count("waiaas_http_requests_total", route=path, status=str(status))


def _check_content_length(scope: Scope, limit: int) -> None:
    """Every ``Content-Length`` is a decimal number (spaces and tabs around it ignored: uvicorn's httptools parser
    keeps trailing ones), else 400 ``bad_request``; none above ``limit``, else 413. The servers refuse most malformed
    values first (uvicorn with h11 or httptools: a plain-text 400 of their own); this answers any that arrive."""
    for name, value in scope.get("headers", ()):
        if name != b"content-length":
            continue
        digits = value.strip(b" \t")
        if not digits.isdigit():  # ASCII digits only (bytes)
            raise ApiError(Code.BAD_REQUEST, "Content-Length must be a decimal number of bytes")
        significant = digits.lstrip(b"0")
        # Compared by length first: no huge integer is built from a long header (int() refuses over 4300 digits).
        if len(significant) > len(str(limit)) or int(significant or b"0") > limit:
            raise ApiError(Code.PAYLOAD_TOO_LARGE, f"request body over {limit} bytes")


async def _send_error(send: Send, error: ApiError) -> None:
    response = JSONResponse(error.body(), status_code=error.status)
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def not_json_body(exc: RequestValidationError) -> str | None:
    """Why a route that takes a JSON body got none (400 ``bad_request``), or None when it got JSON that fails
    validation (422 ``invalid_request``). FastAPI parses a body as JSON only under a JSON content type
    (``application/json`` or ``+json``; with none at all neither: its ``strict_content_type``) and hands any other
    on as bytes, which then fail validation as "not an object"; an empty body (or JSON ``null``) fails as "field
    required" on the body itself. Both are a body that is not JSON, as is one that does not parse."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return "the body is not valid JSON"
    if isinstance(exc.body, bytes | bytearray):
        return "the body is not JSON: send it with Content-Type: application/json"
    if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
        return "the body is missing: a JSON object is required"
    return None


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers={"Cache-Control": "no-store"})


def create_app(services: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await services.completions.drain()  # requests whose connection was dropped still finish

    app = _Api(
        lifespan=lifespan,
        title="WAIaaS parent proxy",
        version=API_VERSION,
        description="Policy-checked signing for AI agents on Solana. See docs/api.md.",
        responses=ERROR_RESPONSES,
        redirect_slashes=False,  # a path with a trailing slash is 404, not a redirect built from the Host header
    )
    app.state.services = services

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        not_json = not_json_body(exc)
        if not_json is not None:
            return error_response(ApiError(Code.BAD_REQUEST, not_json))
        # Location and message only: the rejected input is never echoed back.
        errors = exc.errors()
        parts = [".".join(str(p) for p in e.get("loc", ())) + ": " + str(e.get("msg", "")) for e in errors[:10]]
        return error_response(ApiError(Code.INVALID_REQUEST, "; ".join(parts)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's and FastAPI's own refusals (no route, a method the path lacks, a body that cannot be read or
        is over the limit) in the uniform body; their headers kept (a 405's ``Allow``)."""
        if exc.status_code == 404:
            return error_response(ApiError(Code.NOT_FOUND, "not found"))
        code = HTTP_CODES.get(exc.status_code, Code.BAD_REQUEST)
        response = error_response(ApiError(code, str(exc.detail)))
        response.status_code = exc.status_code
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        """The answer only: Starlette raises ``exc`` again once it is sent, and `ContainedServerErrors` logs its type
        (`parent_proxy.server_errors`: never its message or traceback)."""
        del exc
        return error_response(ApiError(Code.INTERNAL, "internal error; nothing was signed"))

    @app.get("/healthz", response_model=Health, tags=["public"])
    async def healthz() -> Health:
        """The process is up (no dependency is checked)."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Readiness, tags=["public"])
    async def readyz() -> Readiness:
        """Ready when the enclave answers a ping in a usable state, the store answers a read, and the enclave's
        session opens a stored wallet, if there is one (`parent_proxy.signer_secret`: once per enclave session;
        503 ``signer_secret_mismatch`` when it opens none)."""
        status = await services.relay.ping()
        if status.state.value == "failed":
            raise ApiError(Code.ENCLAVE_UNAVAILABLE, "the enclave is in the failed state")
        try:
            await services.run(services.store.audit_head)
        except Exception as exc:
            raise ApiError(Code.STORE_UNAVAILABLE, "the state store is unavailable") from exc
        await services.signer_secret.ensure(services)
        return Readiness(status="ready", enclave=status.state.value, store="ok")

    @app.get("/metrics", response_class=PlainTextResponse, tags=["public"])
    async def metrics(request: Request) -> PlainTextResponse:
        """Prometheus text exposition. With ``WAIAAS_METRICS=loopback`` (the CDK hosts) only to a client on this
        host (`parent_proxy.metrics.served_to`); any other gets 404 ``not_found``, as for a path that does not
        exist."""
        client = request.client
        names = (name for name, _ in request.headers.raw)
        if not served_to(services.metrics_access, None if client is None else client.host, names):
            raise ApiError(Code.NOT_FOUND, "not found")
        return PlainTextResponse(services.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/attestation", response_model=AttestationView, tags=["public"])
    async def attestation(nonce: NonceQuery, session_public_key: SessionKeyQuery = None) -> AttestationView:
        """The enclave's attestation document over the caller's nonce, and the session public key from that same
        answer (self-hosted without a Nitro Enclave: mode none, no document, and the reason). 503
        ``attestation_inconsistent`` if the answer contradicts itself (`parent_proxy.attestation`). 429
        ``rate_limited`` over the process's attestation limit (`parent_proxy.auth.attestation_limiter`). With
        ``session_public_key``: only from the host whose enclave has that key, else 404 ``session_key_not_here``
        (ask again: `parent_proxy.attestation.attest_session`)."""
        if session_public_key is not None:
            return await attest_session(services, nonce, session_public_key)
        return await attest(services, nonce, owner=None)

    app.include_router(api_agent.router)
    app.include_router(api_owner.router)
    app.include_router(api_orders.router)
    app.include_router(api_agent_key.router)
    app.include_router(api_multisig.router)
    app.add_middleware(LimitsAndMetrics, services=services)
    return app
