"""A state-changing request runs to its end when its HTTP task is cancelled (`parent_proxy.completions`).

Before: a plain ``Task.cancel()`` arriving while the checks ran in the worker thread dropped the thread's result. The
reservation stayed pending and the idempotency key claimed: a retry with the same key was 409 for 15 minutes, and
nothing was signed, audited or notified. An owner approval cancelled the same way stayed consumed with nothing
signed. Here the app runs in the test's own event loop (httpx's ASGI transport runs it in the caller's task, so
cancelling the call cancels the request exactly as a server would), and the store holds the worker thread at the
chosen step until the request has been cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction

from parent_proxy.completions import Completions
from parent_proxy.owner_auth import OwnerRequest, owner_request_headers
from parent_proxy.sign_parts import message_hash
from policies.orders import approval_document
from policies.signing import sign_document
from tests.proxy.api_harness import Harness, LoopThread, build_harness, start_enclave
from tests.proxy.harness_calls import ESCALATING
from tests.support.policies import MERCHANT


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    loop = LoopThread()
    harness = build_harness(tmp_path, loop)
    server = start_enclave(loop, harness.socket)
    try:
        yield harness
    finally:
        server.close()
        loop.stop()


class Gate:
    """Holds the worker thread inside a store method until released; tells the test when it got there."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        if not self.release.wait(10):
            raise AssertionError("the gate was never released")


async def owner_call(client: httpx.AsyncClient, h: Harness, method: str, path: str, body: Any = None) -> Any:
    content = b"" if body is None else json.dumps(body).encode()
    request = OwnerRequest(method, path, content, int(time.time()), secrets.token_hex(16), audience=h.origin)
    headers = {**owner_request_headers(request, h.owner_pub, h.owner.sign), "Content-Type": "application/json"}
    return await client.request(method, path, content=content, headers=headers)


async def provision(client: httpx.AsyncClient, h: Harness) -> None:
    created = await owner_call(client, h, "POST", "/v1/wallets", {"wallet_id": h.wallet_id,
                                                                  "owner_public_key": str(h.owner_pub)})  # fmt: skip
    assert created.status_code == 201, created.text
    h.agent = Pubkey.from_string(created.json()["agent_public_key"])
    issued = await owner_call(client, h, "POST", f"/v1/wallets/{h.wallet_id}/tokens")
    h.token = issued.json()["token"]
    installed = await owner_call(client, h, "PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": h.policy()})
    assert installed.status_code == 200, installed.text


async def cancelled_while(h: Harness, method: str, send: Callable[[], Any]) -> None:
    """Start ``send()``, cancel it once the worker thread is held in store method ``method``, then let it go on."""
    gate = Gate()
    h.store.before[method] = gate
    task = asyncio.ensure_future(send())
    assert await asyncio.to_thread(gate.entered.wait, 10), f"the request never reached {method}"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del h.store.before[method]
    gate.release.set()


async def eventually(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


def run(h: Harness, scenario: Callable[[httpx.AsyncClient], Any]) -> None:
    async def main() -> None:
        transport = httpx.ASGITransport(app=h.client.app)
        async with httpx.AsyncClient(transport=transport, base_url=h.origin) as client:
            await provision(client, h)
            await scenario(client)

    asyncio.run(main())


def test_an_agent_request_cancelled_during_its_checks_is_signed_and_replays(h: Harness) -> None:
    path = f"/v1/wallets/{h.wallet_id}/transactions/sign"

    async def scenario(client: httpx.AsyncClient) -> None:  # the agent's key exists once provisioned
        tx = h.transfer(1_000, MERCHANT)
        body = {"transaction": base64.b64encode(tx).decode(), "idempotency_key": "cancelled-1"}
        auth = {"Authorization": f"Bearer {h.token}"}
        await cancelled_while(h, "begin_signing", lambda: client.post(path, json=body, headers=auth))
        await eventually(lambda: "transaction.signed" in h.audit_events(), "the cancelled request was signed")
        replay = await client.post(path, json=body, headers=auth)
        assert replay.status_code == 200, replay.text
        assert replay.headers.get("Idempotent-Replayed") == "true"
        answer = replay.json()
        signed = Transaction.from_bytes(base64.b64decode(answer["signed_transaction"]))
        assert Signature.from_string(answer["signature"]).verify(h.agent, bytes(signed.message_data()))
        assert h.store.reservation_status(h.wallet_id, answer["request_id"]).value == "committed"
        assert h.services.completions.running == 0

    run(h, scenario)
    assert h.spent() == 1_000


def test_an_owner_approval_cancelled_while_reserving_is_signed_not_lost(h: Harness) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        tx = h.transfer(ESCALATING, MERCHANT)
        auth = {"Authorization": f"Bearer {h.token}"}
        body = {"transaction": base64.b64encode(tx).decode(), "idempotency_key": "escalated-1"}
        escalated = await client.post(f"/v1/wallets/{h.wallet_id}/transactions/sign", json=body, headers=auth)
        assert escalated.status_code == 202, escalated.text
        approval_id = escalated.json()["approval_id"]
        document = approval_document(h.wallet_id, message_hash(tx), int(time.time()) + 600)
        approve = f"/v1/wallets/{h.wallet_id}/approvals/{approval_id}/approve"
        envelope = {"envelope": sign_document("approval", document, h.owner)}
        await cancelled_while(h, "reserve", lambda: owner_call(client, h, "POST", approve, envelope))
        await eventually(lambda: "transaction.signed" in h.audit_events(), "the approved request was signed")
        assert h.store.get_approval(approval_id).status.value == "approved"
        again = await owner_call(client, h, "POST", approve, envelope)
        assert again.status_code == 409, again.text  # signed once, never twice

    run(h, scenario)
    assert h.spent() == ESCALATING


def test_shutdown_waits_for_a_request_whose_caller_was_cancelled(h: Harness) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        app = h.client.app
        assert isinstance(app, FastAPI)
        async with app.router.lifespan_context(app):
            tx = h.transfer(1_000, MERCHANT)
            body = {"transaction": base64.b64encode(tx).decode(), "idempotency_key": "at-shutdown"}
            auth = {"Authorization": f"Bearer {h.token}"}
            path = f"/v1/wallets/{h.wallet_id}/transactions/sign"
            await cancelled_while(h, "begin_signing", lambda: client.post(path, json=body, headers=auth))
            assert h.services.completions.running == 1
        assert h.services.completions.running == 0  # the app's shutdown waited for it
        assert "transaction.signed" in h.audit_events()

    run(h, scenario)


def test_a_read_is_simply_cancelled(h: Harness) -> None:
    """GET requests change nothing, so they are not run to their end: the cancellation reaches them. The read runs
    in its caller's task, not as a completion; its store call ends (a worker thread is never interrupted) and the
    caller gets the cancellation, not the answer. The store call is let go once the cancel is sent: the caller waits
    for it (before, the gate held it until its own 10 s limit, whose error the cancellation then hid)."""

    async def scenario(client: httpx.AsyncClient) -> None:
        auth = {"Authorization": f"Bearer {h.token}"}
        gate = Gate()
        h.store.before["get_wallet"] = gate
        task = asyncio.ensure_future(client.get(f"/v1/wallets/{h.wallet_id}", headers=auth))
        assert await asyncio.to_thread(gate.entered.wait, 10), "the request never reached get_wallet"
        assert h.services.completions.running == 0  # held in the store: no completion runs it
        task.cancel()
        del h.store.before["get_wallet"]
        gate.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert h.services.completions.running == 0

    run(h, scenario)


# -- Completions itself -------------------------------------------------------------------------------------------


def test_completions_finish_the_work_of_a_cancelled_caller_and_drain_waits_for_it() -> None:
    async def main() -> None:
        completions = Completions()
        release, finished = asyncio.Event(), []

        async def work() -> str:
            await release.wait()
            finished.append(True)
            return "done"

        caller = asyncio.ensure_future(completions.run(work()))
        await asyncio.sleep(0)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert completions.running == 1 and not finished
        asyncio.get_running_loop().call_later(0.05, release.set)
        await completions.drain()
        assert finished == [True] and completions.running == 0

    asyncio.run(main())


def test_completions_pass_results_and_errors_through_and_leave_no_unretrieved_exception() -> None:
    reported: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: reported.append(context))
        completions = Completions()

        async def ok() -> int:
            return 7

        async def failing(after: asyncio.Event | None = None) -> None:
            if after is not None:
                await after.wait()
            raise ValueError("step failed")

        assert await completions.run(ok()) == 7
        with pytest.raises(ValueError, match="step failed"):
            await completions.run(failing())
        release = asyncio.Event()
        caller = asyncio.ensure_future(completions.run(failing(release)))
        await asyncio.sleep(0)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        release.set()
        await completions.drain()

    asyncio.run(main())
    import gc

    gc.collect()
    assert reported == []
