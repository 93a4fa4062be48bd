"""The 500 path: an exception that no handler turned into an answer leaves as the uniform ``internal_error`` body
(`parent_proxy.app`), and the log gets one line with its type, never its message or traceback.

Why a layer of its own: Starlette's ``ServerErrorMiddleware``, the outermost layer of every Starlette (FastAPI) app,
answers such an exception with the app's handler for ``Exception`` and then raises it again ("so that servers can
log it"), and uvicorn logs it as "Exception in ASGI application" with the whole traceback: every message in the
chain, such as an adapter error that quotes its input (an agent token, a webhook URL with credentials). Review s21
reproduced an agent token reaching the proxy's log (CloudWatch, in the cloud) that way.

:class:`ProxyApi` builds its middleware stack as FastAPI does and wraps it in :class:`ContainedServerErrors`, which
takes the exception raised again, logs ``unexpected error: <type> (<method> <route template>)`` and returns: the
answer was already sent by then (or, if the failure came after the answer started, the connection is closed
unfinished, which uvicorn reports without any detail), and nothing reaches the server's logger. The route template
(``/v1/wallets/{wallet_id}``) rather than the path: a path carries ids, and a query string can carry anything.
There is no request id in this API to add.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("parent_proxy.app")


class ContainedServerErrors:
    """Pure ASGI middleware, outside Starlette's ``ServerErrorMiddleware``: an exception from an HTTP request is
    logged by type and route, and goes no further (module docstring). Other scopes (lifespan) pass through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            route = getattr(scope.get("route"), "path", "unmatched")
            logger.error("unexpected error: %s (%s %s)", type(exc).__name__, scope.get("method"), route)


class ProxyApi(FastAPI):
    """FastAPI with its middleware stack inside :class:`ContainedServerErrors`."""

    def build_middleware_stack(self) -> ASGIApp:
        return ContainedServerErrors(super().build_middleware_stack())
