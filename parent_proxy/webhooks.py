"""Signed webhook notifications from a persistent outbox, delivered at least once.

Each POST carries these headers (the scheme follows Stripe's: an HMAC over the timestamp and the body, so a
captured request cannot be replayed later with a new timestamp):

    WAIaaS-Timestamp: <unix seconds, integer>
    WAIaaS-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>
    WAIaaS-Event-Id:  <event id, a copy of the body's "id">
    WAIaaS-Event-Type: <event type, a copy of the body's "type">

The body (`event_item`) carries the event's id, type and wallet, so the HMAC covers them; the two event headers
are not signed (routing conveniences only). Receivers call `verify_webhook_signature` (or do the same): recompute
the HMAC, compare in constant time, refuse timestamps outside their tolerance, and refuse event headers that differ
from the signed body. Then they de-duplicate (delivery is at least once) and dispatch on the signed body's ``id``
and ``type``, never on a header alone. The worker claims due items with a lease; an item whose worker crashed
between claim and mark is claimed again when the lease expires. A claim takes at most one item per wallet and none
of a wallet with a delivery in flight (`Store.claim_webhooks`), and the claimed items are POSTed concurrently, so
a receiver that accepts and never answers holds up only its own wallet: `run_once` is one round (it returns when
every POST of its batch has), `run_until` keeps `LANES` POSTs going, refilling a lane as soon as it is free.

Nor do many such receivers hold up the rest: a wallet whose POST took `SLOW_POST_SECONDS` or more (whatever its
outcome; every POST that runs into the deadline) is slow for `SLOW_FOR_SECONDS`, and slow wallets share at most
`SLOW_LANES` lanes (`parent_proxy.webhook_lanes`), so the other wallets always have the rest. Which wallets are slow
is the worker's memory, per process: each process learns it on its own (a wallet's first slow POST there takes an
ordinary lane) and a restart forgets it. The wallet pause below does not do this: it lasts a minute at most, and a
slow POST that succeeds sets none.

On stop, `run_until` claims nothing more and gives the POSTs in flight `SHUTDOWN_GRACE_SECONDS` to finish and be
recorded, then returns; a POST still under way is left to its lane (a daemon thread, which does not hold up the
process's exit) and its item keeps its lease, to be sent again when the lease ends: at least once, as ever.

Only a 2xx status delivers; the response body is never read. Every other outcome is a failed attempt recorded in the
delivery log: an HTTP status, a transport error, a refused destination (`parent_proxy.webhook_urls`), a URL the
client cannot use. Failures back off exponentially
with jitter, capped at an hour, for `MAX_ATTEMPTS` claims (at least 24 hours of receiver downtime, at most about
48), then the item is marked dead; so is an item claimed with its attempts already used up. A failed attempt also
pauses its wallet (the store does it with the attempt's outcome: `validation_outbox.wallet_pause_until`): none of the
wallet's items is claimed until the item's retry time, at most `WALLET_PAUSE_CAP_SECONDS` (a minute) after the
attempt, so a receiver that fails at once is sent one attempt per pause, not each queued event back to back, and an
event it keeps rejecting delays the wallet's others by at most a minute per retry. A delivery or a give-up leaves no
pause. Errors are logged by type: never the URL (it may carry credentials), a secret or a signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import httpx

from parent_proxy.clock import Clock, read_clock
from parent_proxy.errors import LeaseLost, WebhookError
from parent_proxy.store.model import OutboxItem
from parent_proxy.store.protocol import Store
from parent_proxy.store.validation import check_id
from parent_proxy.webhook_lanes import Lanes, SlowWallets, lane_claims
from parent_proxy.webhook_transport import POST_DEADLINE_SECONDS

logger = logging.getLogger(__name__)

TIMESTAMP_HEADER = "WAIaaS-Timestamp"
SIGNATURE_HEADER = "WAIaaS-Signature"
EVENT_ID_HEADER = "WAIaaS-Event-Id"
EVENT_TYPE_HEADER = "WAIaaS-Event-Type"
SIGNATURE_VERSION = "v1"

MAX_ATTEMPTS = 59
"""Claims per item before it is marked dead: with the backoff below, the last one comes between 24 and 48 hours
after the first (the sum of the first 58 delays, each between half and all of its nominal value)."""
BACKOFF_BASE_SECONDS = 2.0
"""Delay before the second attempt; doubles each attempt up to the cap."""
BACKOFF_MAX_SECONDS = 3600.0
"""A receiver back from an outage gets its events within an hour."""
LANES = 10
"""Most POSTs in flight at once in one worker, each for a different wallet."""
SLOW_LANES = LANES // 2
"""Most of them for wallets whose receivers were slow lately: the other half stays for the rest, however many
receivers hang."""
SLOW_POST_SECONDS = POST_DEADLINE_SECONDS / 2
"""A POST that takes this long, whatever its outcome (every one that runs into the deadline), makes its wallet
slow."""
SLOW_FOR_SECONDS = 2 * BACKOFF_MAX_SECONDS
"""How long a wallet stays slow after its last slow POST: longer than the longest backoff, so a receiver that keeps
hanging is still known as slow at its next retry."""
CLAIM_BATCH = LANES
"""Most items `run_once` claims (and POSTs concurrently)."""
LEASE_SECONDS = POST_DEADLINE_SECONDS + 30.0
"""Every claimed item's POST starts at once (a lane is free for it) and ends within POST_DEADLINE_SECONDS, so a
live worker keeps the lease through the POST and the mark that follows."""
SHUTDOWN_GRACE_SECONDS = POST_DEADLINE_SECONDS / 2
"""At shutdown, how long the POSTs in flight get to finish and be recorded (at most POST_DEADLINE_SECONDS): a
receiver that answers within it is not sent the event again. A POST still under way then keeps its lease and is sent
again when the lease ends. Half the deadline leaves uvicorn time to stop within a 10 s stop timeout (docker's
default)."""
MAX_TIMESTAMP_DIGITS = 12
"""A ``WAIaaS-Timestamp`` is unix seconds: ten digits until the year 2286, twelve until the year 33658."""
_TIMESTAMP = re.compile(f"[0-9]{{1,{MAX_TIMESTAMP_DIGITS}}}", re.ASCII)
DEFAULT_TOLERANCE_SECONDS = 300
"""Receivers' default window for accepting a timestamp (Stripe uses the same five minutes)."""


def sign_webhook(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``WAIaaS-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


def verify_webhook_signature(
    secret: bytes,
    *,
    timestamp: str,
    signature: str,
    body: bytes,
    event_id: str,
    event_type: str,
    now: float,
    tolerance: float,
) -> None:
    """Return if the signature is valid, the timestamp within ``tolerance`` of ``now``, and the event headers
    (``event_id``, ``event_type``) those of the signed body; else `WebhookError`. The caller still de-duplicates on
    the body's ``id`` (a request resent within the tolerance verifies again)."""
    # 1. The timestamp must be 1-12 ASCII digits (not str.isdigit(): it takes "²" and other scripts' digits, some of
    #    which int() reads) within the tolerance (stops replays of old requests).
    if _TIMESTAMP.fullmatch(timestamp) is None or abs(now - int(timestamp)) > tolerance:
        raise WebhookError("webhook timestamp is missing or outside the tolerance")
    # 2. The signature must match, compared in constant time; the error says nothing about why. A header that is not
    #    ASCII (any sender can send latin-1 bytes) cannot match, and compare_digest raises TypeError on such a str.
    if not signature.isascii() or not hmac.compare_digest(sign_webhook(secret, int(timestamp), body), signature):
        raise WebhookError("webhook signature is invalid")
    # 3. The unsigned event headers must repeat the signed body's id and type (a replay may rewrite headers).
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):  # signed, so only a holder of the secret could have sent it
        envelope = None
    if not isinstance(envelope, dict) or (envelope.get("id"), envelope.get("type")) != (event_id, event_type):
        raise WebhookError("webhook event id or type header does not match the signed body")


def backoff_delay(attempts: int, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": half the capped delay fixed, half random."""
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** min(attempts - 1, 64))
    return delay / 2 + rng.uniform(0, delay / 2)


def event_item(clock: Clock, wallet_id: str, event_type: str, data: object) -> OutboxItem:
    """One notification for the outbox; the body is canonical JSON with the event's id, type, wallet, time."""
    check_id("event_type", event_type)
    now = read_clock(clock)
    event_id = uuid.uuid4().hex
    envelope = {"id": event_id, "type": event_type, "wallet_id": wallet_id, "created_at": now, "data": data}
    body = json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return OutboxItem(event_id, wallet_id, event_type, body, created_at=now, next_attempt_at=now)


def enqueue_event(store: Store, clock: Clock, wallet_id: str, event_type: str, data: object) -> OutboxItem:
    """Put one notification (`event_item`) in the outbox."""
    item = event_item(clock, wallet_id, event_type, data)
    store.enqueue_webhook(item)
    return item


class WebhookWorker:
    """Claims due outbox items and POSTs them. ``client`` comes from
    `parent_proxy.webhook_transport.webhook_client` (vetted destinations, a deadline per POST); its transport is
    the seam. ``slow_post_seconds``: `SLOW_POST_SECONDS` for the client's deadline, `POST_DEADLINE_SECONDS`."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        client: httpx.Client,
        rng: random.Random,
        *,
        slow_post_seconds: float = SLOW_POST_SECONDS,
    ) -> None:
        self._store = store
        self._clock = clock
        self._client = client
        self._rng = rng
        self._slow = SlowWallets(slow_seconds=slow_post_seconds, remember_seconds=SLOW_FOR_SECONDS)

    def run_once(self) -> int:
        """Deliver what is due now (up to `CLAIM_BATCH` wallets, concurrently); return how many were delivered."""
        items = self._claim(CLAIM_BATCH)
        if not items:
            return 0
        with ThreadPoolExecutor(len(items), thread_name_prefix="webhook-post") as pool:
            return sum(pool.map(self._deliver, items))

    def run_until(
        self,
        stop: threading.Event,
        *,
        poll_seconds: float,
        tick: Callable[[], None],
        grace_seconds: float = SHUTDOWN_GRACE_SECONDS,
    ) -> None:
        """Deliver until ``stop`` is set, up to `LANES` POSTs at a time, at most `SLOW_LANES` of them for wallets
        whose receivers were slow lately; a free lane is filled at once if anything is due, else within
        ``poll_seconds``. ``tick`` runs at each wake-up (the caller's housekeeping; it must not raise). An error is
        logged and the loop goes on. ``stop`` is seen within ``poll_seconds``: nothing more is claimed, and the POSTs
        in flight get ``grace_seconds`` to finish and be recorded; this returns then, leaving any POST still under
        way to its lane (a daemon thread) and its item to be sent again when its lease ends."""
        running: dict[Future[bool], tuple[str, bool]] = {}  # each POST in flight: its wallet, slow when claimed
        lanes: Lanes[OutboxItem, bool] = Lanes(LANES, self._deliver, name="webhook-post")
        try:
            while not stop.is_set():
                self._fill(lanes, running)
                if running:
                    done, _ = wait(running, timeout=poll_seconds, return_when=FIRST_COMPLETED)
                    _collect(done, running)
                else:
                    stop.wait(poll_seconds)
                tick()
            done, _ = wait(running, timeout=grace_seconds)
            _collect(done, running)
            if running:
                logger.warning(
                    "%d webhook POSTs still under way after the %g s shutdown grace: each is sent again when its "
                    "lease ends", len(running), grace_seconds,
                )  # fmt: skip
        finally:
            lanes.close()

    def _fill(self, lanes: Lanes[OutboxItem, bool], running: dict[Future[bool], tuple[str, bool]]) -> None:
        """Claim for the free lanes (`lane_claims`: slow wallets get what is left of their `SLOW_LANES`). An item
        counts as slow if its wallet is slow once claimed; only a POST in flight can make a wallet slow."""
        in_flight = frozenset(wallet_id for wallet_id, _ in running.values())
        maybe_slow = self._slow.current(time.monotonic()) | in_flight
        free, slow_free = LANES - len(running), SLOW_LANES - sum(slow for _, slow in running.values())
        try:
            for item in lane_claims(self._claim, free=free, slow_free=slow_free, maybe_slow=maybe_slow):
                slow = self._slow.is_slow(item.wallet_id, time.monotonic())
                running[lanes.submit(item)] = (item.wallet_id, slow)
        except Exception:
            logger.exception("claiming webhooks failed")

    def _claim(self, limit: int, skip_wallets: frozenset[str] = frozenset()) -> list[OutboxItem]:
        now = read_clock(self._clock)
        return self._store.claim_webhooks(now, LEASE_SECONDS, limit, skip_wallets=skip_wallets)

    def _deliver(self, item: OutboxItem) -> bool:
        lease = item.lease_id
        if lease is None:
            raise WebhookError(f"outbox item {item.event_id} was returned without a lease")
        if item.attempts > MAX_ATTEMPTS:  # claimed again after a lease expired on its last attempt
            self._fail(item, lease, "no attempts left", None, retry=False)
            return False
        config = self._store.get_webhook(item.wallet_id)
        if config is None:
            self._fail(item, lease, "no webhook configured for the wallet", None, retry=False)
            return False
        timestamp = int(read_clock(self._clock))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign_webhook(config.secret, timestamp, item.body),
            EVENT_ID_HEADER: item.event_id,
            EVENT_TYPE_HEADER: item.event_type,
        }
        started = time.monotonic()
        outcome = self._post(config.url, item.body, headers)
        ended = time.monotonic()
        self._slow.record(item.wallet_id, took=ended - started, now=ended)
        if isinstance(outcome, str):
            self._fail(item, lease, outcome, None, retry=True)
            return False
        if 200 <= outcome < 300:
            return self._delivered(item, lease, outcome)
        self._fail(item, lease, f"HTTP {outcome}", outcome, retry=True)
        return False

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int | str:
        """One POST: the response's status, or what stopped it (by kind, never with the URL)."""
        try:
            with self._client.stream("POST", url, content=body, headers=headers) as response:
                return response.status_code  # the body is never read: closing drops the connection
        except WebhookError as exc:  # a refused destination; the message names the address, never the URL
            return str(exc)
        except httpx.HTTPError as exc:
            return f"transport error: {type(exc).__name__}"
        except Exception as exc:  # a URL the client cannot use (InvalidURL, UnicodeError, ...): also an attempt
            return f"request error: {type(exc).__name__}"

    def _delivered(self, item: OutboxItem, lease: str, status: int) -> bool:
        try:
            self._store.mark_delivered(item.event_id, lease, now=read_clock(self._clock), status_code=status)
        except LeaseLost:
            logger.warning("webhook %s delivered after its lease was taken over", item.event_id)
            return False
        logger.info("webhook %s delivered (attempt %d)", item.event_id, item.attempts)
        return True

    def _fail(self, item: OutboxItem, lease: str, error: str, status: int | None, *, retry: bool) -> None:
        now = read_clock(self._clock)
        give_up = not retry or item.attempts >= MAX_ATTEMPTS
        next_at = None if give_up else now + backoff_delay(item.attempts, self._rng)
        try:
            self._store.mark_failed(
                item.event_id, lease, now=now, error=error, status_code=status, next_attempt_at=next_at
            )
        except LeaseLost:
            logger.warning("webhook %s failed after its lease was taken over", item.event_id)
            return
        if give_up:
            logger.error("webhook %s dead after %d attempts: %s", item.event_id, item.attempts, error)
        else:
            logger.warning("webhook %s attempt %d failed: %s", item.event_id, item.attempts, error)


def _collect(done: set[Future[bool]], running: dict[Future[bool], tuple[str, bool]]) -> None:
    """Take the finished POSTs off ``running``; log any that raised (a store failure while recording it)."""
    for future in done:
        del running[future]
        if future.exception() is not None:
            logger.error("webhook delivery failed", exc_info=future.exception())
