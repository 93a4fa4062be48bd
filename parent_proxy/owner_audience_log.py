"""The operator's warning when owners sign their requests for an origin this proxy is not configured with.

A ``WAIAAS_PUBLIC_ORIGINS`` that does not list the origin the owners' tools reach the proxy at (the load balancer's
name instead of the custom domain, ``http`` behind a proxy that terminates TLS, a port) refuses every owner request
with the answer of a bad signature (401 ``owner_signature_invalid``, `parent_proxy.owner_auth`, step 2): the caller
learns nothing from it, on purpose. The operator should, so the proxy logs a warning naming the audience the request
was signed for and how many origins are configured. Only for a request that is otherwise an owner's
(`parent_proxy.owner_auth.ForeignAudience`: signed over this very request for that audience, under a key the route
expects), so an anonymous caller cannot write to the log, and only for an audience in the normal form
(`parent_proxy.owner_auth.normalize_origin`: lowercase letters, digits, ``.-:/[]``), which is not secret and cannot
forge log lines. Never the signature, the key or anything else of the request.

Bounded (`ForeignAudienceLog`): one warning per distinct audience per `WINDOW_SECONDS`, at most
`MAX_AUDIENCES_PER_WINDOW` audiences remembered (and warned about) per window, then one line saying the rest are not
named until the window ends. Per process, like the rate limits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 3600.0
"""How long a warned audience is not warned about again (ours: a reminder an hour, not a line a request)."""
MAX_AUDIENCES_PER_WINDOW = 32
"""Distinct audiences named per window (ours: a deployment has a handful of origins; more is noise or abuse)."""


class ForeignAudienceLog:
    """`note` logs the warning of the module docstring, within its bounds. Thread-safe. ``clock``: seconds, for the
    window only (monotonic by default: the wall clock is not needed to space log lines)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start: float | None = None
        self._warned: set[str] = set()
        self._suppressed = False

    def note(self, audience: str, configured: int) -> None:
        """A request otherwise an owner's was signed for ``audience`` (normal form), which is not among the
        ``configured`` public origins."""
        now = self._clock()
        with self._lock:
            if self._window_start is None or not 0 <= now - self._window_start < WINDOW_SECONDS:
                self._window_start, self._warned, self._suppressed = now, set(), False
            if audience in self._warned:
                return
            if len(self._warned) >= MAX_AUDIENCES_PER_WINDOW:
                first_suppressed, self._suppressed = not self._suppressed, True
                if first_suppressed:
                    logger.warning(
                        "owner requests signed for further audiences not in WAIAAS_PUBLIC_ORIGINS were refused; "
                        "%d were named this hour, the others are not until it ends",
                        MAX_AUDIENCES_PER_WINDOW,
                    )
                return
            self._warned.add(audience)
        logger.warning(
            "an owner request signed by an expected owner key for audience %s was refused (401 "
            "owner_signature_invalid, as any bad signature): that origin is not among the %d in "
            "WAIAAS_PUBLIC_ORIGINS. If owners reach this proxy at %s, add it there (warned once an hour per audience)",
            audience, configured, audience,
        )  # fmt: skip
