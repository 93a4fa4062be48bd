"""A wallet creation (``POST /v1/wallets``) replayed to another proxy process on the same store, or to a restarted
one, is refused as a replay (401 ``owner_request_replayed``), on SQLite and on DynamoDB (moto).

Before, a creation's nonce was kept in the memory of the process that accepted it (an existing wallet's owner
requests kept theirs in the store already): another process, or the same one restarted, accepted the captured
request again within the skew window. A replay of a creation that had succeeded then met the stored wallet (409);
a replay of one that had failed before anything was written (here: the enclave could not be reached) created the
wallet the owner had given up on (201). The owner's own retry is a new request with a new nonce and still works.

Each "process" is its own app, relay and store object over one backend (SQLite: the same file; DynamoDB: the same
table through its own client), in front of one real enclave app (development NSM, local sealer).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from solders.litesvm import LiteSVM

from enclave_app.client import WALLET_REQUEST_TIMEOUT_SECONDS
from enclave_app.transport import UnixAddress
from parent_proxy.api_errors import ApiError
from parent_proxy.app import create_app
from parent_proxy.auth import RateLimiter, attestation_limiter
from parent_proxy.chain import LiteSvmChain
from parent_proxy.clock import SystemClock
from parent_proxy.enclave_pool import PooledEnclaveClient
from parent_proxy.enclave_relay import EnclaveRelay
from parent_proxy.owner_auth import (
    MAX_SKEW_SECONDS,
    OwnerRequest,
    StoreNonceRegistry,
    owner_request_headers,
    verify_owner_request,
)
from parent_proxy.services import Services
from parent_proxy.store.protocol import Store
from tests.proxy.api_harness import HARNESS_ORIGIN, LoopThread, start_enclave
from tests.support.policies import owner_public_key

Creation = tuple[bytes, dict[str, str]]


@pytest.fixture
def enclave(tmp_path: Path) -> Iterator[tuple[LoopThread, Path]]:
    """The loop the enclave runs on and its socket path; the enclave is started by the test."""
    loop = LoopThread()
    try:
        yield loop, tmp_path / "enclave.sock"
    finally:
        loop.stop()


@contextmanager
def proxy(store: Store, socket: Path, owner: Ed25519PrivateKey) -> Iterator[TestClient]:
    """One proxy process: its own app, relay and nonce registry over ``store``, with ``owner`` configured."""
    services = Services(
        store=store,
        clock=SystemClock(),
        relay=EnclaveRelay(
            PooledEnclaveClient(UnixAddress(str(socket)), timeout=5.0, wallet_timeout=WALLET_REQUEST_TIMEOUT_SECONDS)
        ),
        chain=LiteSvmChain(LiteSVM()),
        rate_limiter=RateLimiter(1000.0, 1000),
        attestation_limiter=attestation_limiter(1000.0, 1000),
        nonces=StoreNonceRegistry(store),
        owner_keys=frozenset({owner_public_key(owner)}),
        public_origins=frozenset({HARNESS_ORIGIN}),
        owner_max_skew_seconds=300,
        max_body_bytes=16 * 1024,
        require_multisig=True,  # only wallets are created here
    )
    with TestClient(create_app(services), raise_server_exceptions=False) as client:
        yield client


def creation(owner: Ed25519PrivateKey, wallet_id: str) -> Creation:
    """A signed creation request (body and headers), as the owner CLI makes one: a fresh nonce each time."""
    body = json.dumps({"wallet_id": wallet_id, "owner_public_key": str(owner_public_key(owner))}).encode()
    request = OwnerRequest(
        "POST", "/v1/wallets", body, int(time.time()), secrets.token_urlsafe(24), audience=HARNESS_ORIGIN
    )
    headers = owner_request_headers(request, owner_public_key(owner), owner.sign)
    return body, {**headers, "Content-Type": "application/json"}


def send(client: TestClient, request: Creation) -> Any:
    return client.post("/v1/wallets", content=request[0], headers=request[1])


def outcome(response: Any) -> tuple[int, str | None]:
    """The status and the error code (None: not an error answer)."""
    error = response.json().get("error")
    return response.status_code, None if error is None else str(error["code"])


def wallet_created_records(store: Store) -> list[str | None]:
    return [r.wallet_id for r in store.audit_records(0, 1000) if r.event_type == "wallet.created"]


def test_a_creation_replayed_to_another_process_or_after_a_restart_is_refused(
    reopen_store: Callable[[], Store], enclave: tuple[LoopThread, Path]
) -> None:
    loop, socket = enclave
    server = start_enclave(loop, socket)
    owner = Ed25519PrivateKey.generate()
    first = creation(owner, "w1")
    try:
        with proxy(reopen_store(), socket, owner) as a, proxy(reopen_store(), socket, owner) as b:
            assert send(a, first).status_code == 201
            for client in (b, a):
                replay = send(client, first)
                assert outcome(replay) == (401, "owner_request_replayed")
        restarted = reopen_store()
        with proxy(restarted, socket, owner) as c:
            replay = send(c, first)
            assert outcome(replay) == (401, "owner_request_replayed")
            assert send(c, creation(owner, "w2")).status_code == 201  # a new request of the owner is not one
        assert wallet_created_records(restarted) == ["w1", "w2"]
    finally:
        server.close()


def test_a_failed_creation_replayed_is_refused_and_the_owners_retry_creates_it(
    reopen_store: Callable[[], Store], enclave: tuple[LoopThread, Path]
) -> None:
    """The creation fails before anything is written (no enclave to make the key): its nonce stays used, so the
    captured request cannot create the wallet later; the owner, who saw the 503, sends the creation again signed
    anew (a new nonce), which creates it."""
    loop, socket = enclave
    owner = Ed25519PrivateKey.generate()
    first = creation(owner, "w1")
    store = reopen_store()
    with proxy(store, socket, owner) as a:
        failed = send(a, first)
        assert outcome(failed) == (503, "enclave_unavailable")
    server = start_enclave(loop, socket)
    try:
        with proxy(reopen_store(), socket, owner) as b, proxy(store, socket, owner) as a:
            for client in (b, a):  # another process; the same store again (a restart of the first)
                replay = send(client, first)
                assert outcome(replay) == (401, "owner_request_replayed")
            assert wallet_created_records(store) == []
            retry = send(b, creation(owner, "w1"))
            assert retry.status_code == 201 and retry.json()["wallet_id"] == "w1"
        assert wallet_created_records(store) == ["w1"]
    finally:
        server.close()


@pytest.mark.parametrize("skew", [1, 300, MAX_SKEW_SECONDS])
def test_a_creation_nonce_holds_from_the_earliest_to_the_latest_accepted_time(store: Store, skew: int) -> None:
    """Claimed by one process at the earliest time its timestamp is accepted, replayed to another (its own registry
    on the same store) at the latest time, under the largest skew a process may have: still refused. Then, a second
    after no process accepts the timestamp, the request is stale, whatever the store holds."""
    owner = Ed25519PrivateKey.generate()
    timestamp = 1_700_000_000
    body = b'{"wallet_id": "w1"}'
    headers = owner_request_headers(
        OwnerRequest("POST", "/v1/wallets", body, timestamp, "n" * 32, audience=HARNESS_ORIGIN),
        owner_public_key(owner),
        owner.sign,
    )

    def verify(now: float, max_skew: float) -> None:
        verify_owner_request(
            headers, method="POST", path="/v1/wallets", body=body, allowed_keys=frozenset({owner_public_key(owner)}),
            audiences=frozenset({HARNESS_ORIGIN}), now=now, max_skew=max_skew, nonces=StoreNonceRegistry(store),
            scope=None,
        )  # fmt: skip

    verify(timestamp - skew, skew)
    for now in (timestamp, timestamp + MAX_SKEW_SECONDS):
        with pytest.raises(ApiError, match="nonce already used"):
            verify(now, MAX_SKEW_SECONDS)
    with pytest.raises(ApiError, match="outside the accepted window"):
        verify(timestamp + MAX_SKEW_SECONDS + 1, MAX_SKEW_SECONDS)
