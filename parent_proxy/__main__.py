"""``python -m parent_proxy``: run the parent proxy's HTTP API under uvicorn, configured from the environment.

Start-up order: settings (`parent_proxy.settings`; a missing or malformed value exits with status 2 and a one-line
message naming the variable), the sealed-keys directory when ``WAIAAS_SEALED_KEYS_DIR`` names one (it must exist and
be writable, else status 2 and a message naming it; `parent_proxy.sealed_directory.check_directory`), no core dumps
from here on (`parent_proxy.core_dumps`; a step that fails exits 1, in each ``WAIAAS_WORKERS`` process too), the
state store, the chain adapter, the enclave relay, then the listener, whose start starts the webhook delivery thread.
The enclave need not be up yet: /readyz says when it is.

Shutdown (SIGTERM or SIGINT, handled by uvicorn, in each worker process when ``WAIAAS_WORKERS`` > 1): uvicorn stops
accepting, lets the requests in flight finish, then runs the app's shutdown (`with_webhook_delivery`), which tells
the webhook thread to stop claiming and waits for it, at most `WEBHOOK_STOP_SECONDS`: the POSTs in flight get
`parent_proxy.webhooks.SHUTDOWN_GRACE_SECONDS` to finish and be recorded, and then closes the state store (for
SQLite: the last connection to close checkpoints the write-ahead log into ``waiaas.db`` and removes it). Before,
nothing waited: the POSTs in flight were cut off unrecorded and sent again when their lease ended.

Only then does uvicorn raise the signal again, to the handler that was in place before it started. In the single
process that is `main`'s (`serve`), so ``main`` returns and the process exits with status 0; before, SIGTERM's
default action ended the process there, and ``main``'s own clean-up never ran (the store was never closed, the
whole state left in ``waiaas.db-wal``). A worker process of ``WAIAAS_WORKERS`` > 1 still ends by the signal, its
store closed by the shutdown above; the supervisor exits with status 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import boto3
import httpx
import uvicorn
from fastapi import FastAPI
from solders.litesvm import LiteSVM

from enclave_app.client import WALLET_REQUEST_TIMEOUT_SECONDS
from parent_proxy import stalled_approvals
from parent_proxy.app import create_app
from parent_proxy.auth import RateLimiter, attestation_limiter
from parent_proxy.chain import Chain, LiteSvmChain, RpcChain
from parent_proxy.clock import SystemClock, read_clock
from parent_proxy.core_dumps import forbid_core_dumps
from parent_proxy.data_bucket import DataBucket, s3_client
from parent_proxy.enclave_pool import PooledEnclaveClient
from parent_proxy.enclave_relay import EnclaveRelay
from parent_proxy.errors import CoreDumpError
from parent_proxy.host_credentials import HostAwsCredentials
from parent_proxy.owner_auth import StoreNonceRegistry
from parent_proxy.sealed_copies import SealedCopies
from parent_proxy.sealed_directory import DirectoryUnavailable, SealedDirectory, check_directory
from parent_proxy.services import Services
from parent_proxy.settings import DynamoState, Settings, SettingsError, load_settings
from parent_proxy.store.dynamodb import DynamoStore
from parent_proxy.store.protocol import Store
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.webhook_transport import webhook_client
from parent_proxy.webhooks import SHUTDOWN_GRACE_SECONDS, WebhookWorker

logger = logging.getLogger("parent_proxy")
WEBHOOK_POLL_SECONDS = 1.0
WEBHOOK_STOP_SECONDS = WEBHOOK_POLL_SECONDS + SHUTDOWN_GRACE_SECONDS + 2.0
"""Longest a stopping proxy waits for its webhook thread: the poll under way, the POSTs' shutdown grace, and a
claim, record or prune still under way (2 s). Then it goes on stopping regardless."""
PRUNE_EVERY_SECONDS = 300.0
QUIET_LOGGERS = ("httpx", "httpcore")
"""Libraries that log each request's full URL at INFO or below (webhook URLs may carry credentials)."""


def open_store(settings: Settings) -> Store:
    if isinstance(settings.state, DynamoState):
        client = boto3.client("dynamodb", region_name=settings.state.region)
        return DynamoStore(client, settings.state.table)
    return SqliteStore(settings.state.path)


def open_chain(settings: Settings) -> Chain:
    if settings.chain == "litesvm":
        return LiteSvmChain(LiteSVM())
    return RpcChain(httpx.AsyncClient(), settings.chain.removeprefix("rpc:"))


def open_sealed_copies(settings: Settings) -> SealedCopies | None:
    """The copy target of the settings (at most one: `parent_proxy.settings` refuses both), or None."""
    bucket = settings.data_bucket
    if bucket is not None:
        return SealedCopies.in_bucket(DataBucket(s3_client(bucket.region), bucket.name))
    if settings.sealed_keys_dir is not None:
        return SealedCopies.in_directory(SealedDirectory(Path(settings.sealed_keys_dir)))
    return None


def build_services(settings: Settings) -> Services:
    if not settings.require_multisig:
        logger.warning(
            "WAIAAS_REQUIRE_MULTISIG=false: policies that declare no Squads multisig are installed; the agent key "
            "of such a wallet holds its funds and nothing on chain bounds it (meant only for a chain without the "
            "Squads program, such as the self-host local chain)"
        )
    store = open_store(settings)
    return Services(
        store=store,
        clock=SystemClock(),
        relay=EnclaveRelay(
            PooledEnclaveClient(
                settings.enclave,
                timeout=settings.enclave_timeout_seconds,
                wallet_timeout=WALLET_REQUEST_TIMEOUT_SECONDS,  # sealing outlasts a signature; see there
                aws_credentials=HostAwsCredentials() if settings.enclave_kms_credentials == "host" else None,
            )
        ),
        chain=open_chain(settings),
        rate_limiter=RateLimiter(settings.rate_per_second, settings.rate_burst),
        attestation_limiter=attestation_limiter(settings.attestation_rate_per_second, settings.attestation_burst),
        nonces=StoreNonceRegistry(store),
        owner_keys=settings.owner_keys,
        public_origins=settings.public_origins,
        owner_max_skew_seconds=settings.owner_max_skew_seconds,
        max_body_bytes=settings.max_body_bytes,
        require_multisig=settings.require_multisig,
        metrics_access=settings.metrics_access,
        sealed_copies=open_sealed_copies(settings),
    )


def prune_store(services: Services) -> None:
    """Delete aged-out state (`Store.prune`), then reopen the owner approvals whose signing died with its process
    (`stalled_approvals.reopen_stalled`); a failure of either is logged (the next run tries again)."""
    try:
        services.store.prune(read_clock(services.clock))
    except Exception:
        logger.exception("pruning the state store failed")
    try:
        stalled_approvals.reopen_stalled(services)
    except Exception:
        logger.exception("reopening stalled approvals failed")


def start_webhook_thread(services: Services, stop: threading.Event, *, allow_private: bool) -> threading.Thread:
    """The background thread: webhook delivery (`WebhookWorker.run_until`: what is due is claimed at once while a
    lane is free, else within `WEBHOOK_POLL_SECONDS`), pruning every `PRUNE_EVERY_SECONDS`. It ends once ``stop``
    is set and the POSTs in flight are done or their shutdown grace is over (`with_webhook_delivery` waits for it).
    ``allow_private``: `Settings.webhook_allow_private`."""

    def loop() -> None:
        next_prune = time.monotonic()

        def tick() -> None:
            nonlocal next_prune
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
                prune_store(services)

        with webhook_client(allow_private=allow_private) as client:
            worker = WebhookWorker(services.store, services.clock, client, random.SystemRandom())
            worker.run_until(stop, poll_seconds=WEBHOOK_POLL_SECONDS, tick=tick)

    thread = threading.Thread(target=loop, name="webhooks", daemon=True)
    thread.start()
    return thread


def with_webhook_delivery(app: FastAPI, services: Services, *, allow_private: bool) -> FastAPI:
    """``app``, its lifespan extended by the webhook thread (`start_webhook_thread`): started when the server starts;
    at shutdown told to stop claiming while the app's own shutdown lets the requests in flight finish, then waited
    for, at most `WEBHOOK_STOP_SECONDS`; then the store is closed, unless the thread is still running (it may be
    inside a store call). The same in the single process and in each ``WAIAAS_WORKERS`` process, which ends by the
    signal uvicorn raises again after this shutdown, so this is the last moment its store can be closed."""
    app_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncIterator[Any]:
        stop = threading.Event()
        thread = start_webhook_thread(services, stop, allow_private=allow_private)
        try:
            async with app_lifespan(served) as state:
                yield state
                stop.set()
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, WEBHOOK_STOP_SECONDS)
            if thread.is_alive():
                logger.warning(
                    "the webhook thread did not stop within %g s; the state store is left open", WEBHOOK_STOP_SECONDS
                )
            else:
                services.store.close()

    app.router.lifespan_context = lifespan
    return app


def build_app(env: Mapping[str, str]) -> tuple[Settings, FastAPI, Services]:
    settings = load_settings(env)
    services = build_services(settings)
    return settings, create_app(services), services


def no_core_dumps() -> None:
    """`parent_proxy.core_dumps.forbid_core_dumps`, logging when only the core-file limit applies (no prctl);
    `CoreDumpError` when a step failed."""
    if not forbid_core_dumps():
        logger.warning("no prctl on this platform: core dumps are off by the core-file limit alone")


def app_from_environment() -> FastAPI:
    """The uvicorn factory for each worker process (``WAIAAS_WORKERS`` > 1): settings, no core dumps (the dumpable
    flag does not survive the worker's ``execve``), services, webhook thread."""
    settings = load_settings(os.environ)
    no_core_dumps()
    services = build_services(settings)
    app = create_app(services)
    return with_webhook_delivery(app, services, allow_private=settings.webhook_allow_private)


def configure_logging() -> None:
    """INFO to stderr, except `QUIET_LOGGERS`, which only get through from WARNING up."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class Terminated(BaseException):
    """SIGTERM reached `serve`'s handler: uvicorn has finished its graceful shutdown, or had not started serving."""


def _terminated(_signum: int, _frame: FrameType | None) -> None:
    raise Terminated


def serve(app: FastAPI, settings: Settings, **uvicorn_options: Any) -> None:
    """``uvicorn.run`` in this process until SIGTERM or SIGINT, then return. While it serves, uvicorn handles both
    signals itself (graceful shutdown, the app's lifespan shutdown included), then restores the handlers that were
    in place and raises the signal again (``uvicorn.Server.capture_signals``). The handler put in place here turns
    SIGTERM into `Terminated`, caught below, instead of the default action that ended the process on the spot; a
    SIGTERM before uvicorn took over ends the run the same way. SIGINT needs nothing: its default handler raises
    KeyboardInterrupt, which ``uvicorn.run`` catches. Outside the main thread (no signal handlers there) it is plain
    ``uvicorn.run``."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main_thread else None
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, access_log=False, log_level="warning",
                    **uvicorn_options)  # fmt: skip
    except Terminated:
        logger.info("stopped by SIGTERM")
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def main(env: Mapping[str, str] | None = None, **uvicorn_options: Any) -> int:
    configure_logging()
    try:
        settings = load_settings(os.environ if env is None else env)
    except SettingsError as exc:
        sys.stderr.write(f"parent_proxy: {exc}\n")
        return 2
    if settings.sealed_keys_dir is not None:
        try:
            check_directory(Path(settings.sealed_keys_dir), now=time.time())
        except DirectoryUnavailable as exc:
            sys.stderr.write(f"parent_proxy: WAIAAS_SEALED_KEYS_DIR {exc}\n")
            return 2
    try:
        no_core_dumps()
    except CoreDumpError as exc:
        sys.stderr.write(f"parent_proxy: refusing to start: {exc}\n")
        return 1
    if settings.workers > 1:  # each worker builds its own services from the same environment
        uvicorn.run(
            "parent_proxy.__main__:app_from_environment", factory=True, workers=settings.workers,
            host=settings.host, port=settings.port, access_log=False, log_level="warning", **uvicorn_options,
        )  # fmt: skip
        return 0
    services = build_services(settings)
    app = with_webhook_delivery(create_app(services), services, allow_private=settings.webhook_allow_private)
    try:
        serve(app, settings, **uvicorn_options)
    finally:
        services.store.close()  # again (a no-op) after the app's shutdown; or if the server never started
    return 0


if __name__ == "__main__":
    sys.exit(main())
