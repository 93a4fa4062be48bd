"""Failure behaviour (DESIGN.md section 12): enclave down, slow or answering nonsense, store down, clock failure.

Each case: a 503 (or 403) with a stable code, nothing signed, no reservation left pending, the audit record written
(when the store can still take it), and the idempotency key free for the caller's own retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave_app.framing import encode_frame
from parent_proxy.store.validation import IDEMPOTENCY_STALE_SECONDS
from tests.proxy.api_harness import (
    Harness,
    LoopThread,
    fresh_relay,
    provision,
    provisioned_harness,
    start_answering_server,
    start_enclave,
    start_raw_server,
    stop_enclave,
)
from tests.proxy.harness_calls import pending_reservations, sign_message
from tests.support.policies import MERCHANT


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Harness, LoopThread]]:
    """A provisioned wallet whose enclave is then replaced (the test decides by what). The proxy keeps the harness's
    time limits: the tests that restart the real enclave reload the wallet, an Argon2id unsealing that outlasts a
    short limit on a loaded machine; the slow-enclave test takes its short limit itself."""
    with provisioned_harness(tmp_path) as (h, loop, servers):
        stop_enclave(h, loop, servers[0])
        h.services.relay.forget()
        yield h, loop


def assert_nothing_signed(h: Harness, response: object, status: int, error: str) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.json()["error"]["code"] == error  # type: ignore[attr-defined]
    assert "signed_transaction" not in response.text  # type: ignore[attr-defined]
    assert pending_reservations(h) == []
    assert h.spent() == 0
    assert "transaction.signed" not in h.audit_events()


def test_enclave_down_is_503_released_and_audited(setup: tuple[Harness, LoopThread]) -> None:
    h, _ = setup
    response = h.sign(h.transfer(1000, MERCHANT), key="retry-me")
    assert_nothing_signed(h, response, 503, "enclave_unavailable")
    assert h.audit_events()[-1] == "transaction.failed"
    assert h.client.get("/readyz").status_code == 503
    # the key was abandoned: the caller may retry it once the enclave is back
    again = h.sign(h.transfer(1000, MERCHANT), key="retry-me")
    assert again.json()["error"]["code"] == "enclave_unavailable"


def test_enclave_slow_is_503_after_the_timeout(setup: tuple[Harness, LoopThread]) -> None:
    h, loop = setup

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.sleep(5)
        finally:
            writer.close()

    server = start_raw_server(loop, h.socket, never_answers)
    fresh_relay(h, timeout=0.5)
    try:
        response = h.sign(h.transfer(1000, MERCHANT))
        assert_nothing_signed(h, response, 503, "enclave_unavailable")
        assert h.audit_events()[-1] == "transaction.failed"
    finally:
        server.close()
        loop.run(server.wait_closed())


@pytest.mark.parametrize(
    "answer",
    [
        b"\x00\x00\x00\x02\xff\xff",  # not CBOR
        encode_frame({"v": 1, "type": "status", "state": "ready"}),  # a message with missing fields
        encode_frame({"v": 1, "type": "attestation", "document": b"x"}),  # the wrong message type
        b"\xff\xff\xff\xff",  # a frame announcing 4 GiB
    ],
)
def test_malformed_enclave_answer_is_503(setup: tuple[Harness, LoopThread], answer: bytes) -> None:
    h, loop = setup
    server = start_answering_server(loop, h.socket, answer)
    try:
        # the wallet must look loaded, so that the nonsense answers the signing request itself
        h.services.relay._loaded[h.wallet_id] = 1
        response = h.sign(h.transfer(1000, MERCHANT))
        assert_nothing_signed(h, response, 503, "enclave_unavailable")
        assert h.audit_events()[-1] == "transaction.failed"
    finally:
        server.close()
        loop.run(server.wait_closed())


def test_enclave_answer_signed_but_not_allowed_is_refused(setup: tuple[Harness, LoopThread]) -> None:
    """A lying or broken enclave answer (a signature with no signed transaction) counts as unsigned."""
    h, loop = setup
    from enclave_app.protocol import TransactionDecisionResponse

    lie = TransactionDecisionResponse(
        decision={"verdict": "allow", "reasons": []}, signature=bytes(64), signed_transaction=None,
        receipt=b"r", receipt_signature=bytes(64),
    )  # fmt: skip
    server = start_answering_server(loop, h.socket, encode_frame(lie.to_wire()))
    try:
        h.services.relay._loaded[h.wallet_id] = 1
        response = h.sign(h.transfer(1000, MERCHANT))
        assert_nothing_signed(h, response, 503, "enclave_unavailable")
    finally:
        server.close()
        loop.run(server.wait_closed())


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Harness]:
    from tests.proxy.api_harness import running_harness

    for harness in running_harness(tmp_path):
        provision(harness)
        yield harness


def test_store_down_at_reservation_is_503_and_audited(live: Harness) -> None:
    live.store.failing = {"reserve", "begin_signing"}
    response = live.sign(live.transfer(1000, MERCHANT))
    live.store.failing = set()
    assert_nothing_signed(live, response, 503, "store_unavailable")
    assert live.audit_events()[-1] == "transaction.failed"


def test_store_down_at_commit_hands_out_no_signature(live: Harness) -> None:
    live.store.failing = {"append_audit", "finish_signing"}
    response = live.sign(live.transfer(1000, MERCHANT), key="after-the-outage")
    live.store.failing = set()
    assert_nothing_signed(live, response, 503, "store_unavailable")
    again = live.sign(live.transfer(1000, MERCHANT), key="after-the-outage")  # the key is free again
    assert again.status_code == 200, again.text


def test_store_down_entirely_is_503(live: Harness) -> None:
    live.store.failing = {"authenticate_token", "audit_head"}
    response = live.sign(live.transfer(1000, MERCHANT))
    assert response.status_code == 503 and response.json()["error"]["code"] == "store_unavailable"
    assert live.client.get("/readyz").json()["error"]["code"] == "store_unavailable"
    live.store.failing = set()


def test_clock_failure_is_503_and_nothing_signed(live: Harness) -> None:
    live.clock.broken = True
    response = live.sign(live.transfer(1000, MERCHANT))
    live.clock.broken = False
    assert_nothing_signed(live, response, 503, "clock_unavailable")


def test_enclave_restart_is_one_503_then_reload(setup: tuple[Harness, LoopThread]) -> None:
    """A restarted enclave knows no wallet: the first request fails (it is never re-sent), the next reloads it."""
    h, loop = setup
    h.services.relay._loaded[h.wallet_id] = 1  # the proxy believes the old enclave session still holds it
    server = start_enclave(loop, h.socket)
    try:
        first = h.sign(h.transfer(1000, MERCHANT))
        assert_nothing_signed(h, first, 503, "enclave_unavailable")
        second = h.sign(h.transfer(1000, MERCHANT))
        assert second.status_code == 200, second.text
    finally:
        server.close()
        loop.run(server.wait_closed())


def test_a_message_after_an_enclave_restart_is_one_503_then_reload(setup: tuple[Harness, LoopThread]) -> None:
    """Off-chain messages follow the same rule: the first request fails unsigned and forgets what was loaded, the next
    loads the wallet again and is signed."""
    h, loop = setup
    h.services.relay._loaded[h.wallet_id] = 1
    server = start_enclave(loop, h.socket)
    try:
        first = sign_message(h)
        assert first.status_code == 503 and first.json()["error"]["code"] == "enclave_unavailable"
        assert "signature" not in first.json()
        second = sign_message(h)
        assert second.status_code == 200, second.text
    finally:
        server.close()
        loop.run(server.wait_closed())


def test_a_key_left_in_progress_by_a_dead_request_is_free_after_the_stale_period(live: Harness) -> None:
    """A request that died holding its idempotency claim (here: the store fails at the commit and at the abandon,
    which leaves the claim as a crash would) blocks its key with 409 only until the claim is stale; then the retry
    is served."""
    tx = live.transfer(1000, MERCHANT)
    live.store.failing = {"finish_signing", "abandon_idempotent"}
    first = live.sign(tx, key="crashed")
    live.store.failing = set()
    assert first.status_code == 503 and "signed_transaction" not in first.text
    blocked = live.sign(tx, key="crashed")
    assert blocked.status_code == 409 and blocked.json()["error"]["code"] == "idempotency_in_progress"
    live.clock.offset = IDEMPOTENCY_STALE_SECONDS + 1
    served = live.sign(tx, key="crashed")
    assert served.status_code == 200, served.text
