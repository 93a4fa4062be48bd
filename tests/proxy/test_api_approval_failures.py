"""An owner approval whose signing fails before a signature leaves the proxy is pending again (DESIGN.md section 12:
nothing lost on failure); an enclave refusal is a decision and consumes it.

Before: the approval was marked approved before the relay, and a 503 (enclave down, store down at commit) left it
approved with nothing signed; the owner's decision was lost and the agent had to send the request again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxy.api_harness import (
    Harness,
    LoopThread,
    new_session_key,
    provisioned_harness,
    refused_records,
    stand_in_refusal,
    start_enclave,
    start_stand_in_enclave,
)
from tests.proxy.harness_calls import ESCALATING, configure_webhook, escalate, queued


@pytest.fixture
def h(tmp_path: Path) -> Iterator[tuple[Harness, LoopThread]]:
    with provisioned_harness(tmp_path) as (harness, loop, _):
        yield harness, loop


def pending_ids(h: Harness) -> list[str]:
    return [p["approval_id"] for p in h.owner_call("GET", f"/v1/wallets/{h.wallet_id}/approvals").json()]


def stop_enclave(h: Harness, loop: LoopThread) -> None:
    loop.run(h.services.relay.close())
    h.socket.unlink(missing_ok=True)
    h.services.relay.forget()


def test_enclave_down_returns_the_approval_to_pending(h: tuple[Harness, LoopThread]) -> None:
    harness, loop = h
    configure_webhook(harness)
    approval_id, body, path = escalate(harness)
    stop_enclave(harness, loop)
    failed = harness.owner_call("POST", path, body)
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "enclave_unavailable"
    assert harness.spent() == 0
    assert pending_ids(harness) == [approval_id]
    assert harness.audit_events()[-2:] == ["transaction.failed", "approval.reopened"]
    assert queued(harness) == ["approval.pending", "approval.reopened"]  # the owner is told it waits again
    # the enclave is back: the owner's same approval signs it, once
    server = start_enclave(loop, harness.socket)
    try:
        signed = harness.owner_call("POST", path, body)
        assert signed.status_code == 200, signed.text
        assert signed.json()["transaction"]["status"] == "signed"
        assert harness.spent() == ESCALATING and pending_ids(harness) == []
        again = harness.owner_call("POST", path, body)
        assert again.status_code == 409
    finally:
        server.close()


@pytest.mark.parametrize("failing", ["reserve", "finish_signing"], ids=["at the reservation", "at the commit"])
def test_store_down_returns_the_approval_to_pending(h: tuple[Harness, LoopThread], failing: str) -> None:
    harness, _ = h
    approval_id, body, path = escalate(harness)
    harness.store.failing = {failing}
    failed = harness.owner_call("POST", path, body)
    harness.store.failing = set()
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "store_unavailable"
    assert "signed_transaction" not in failed.text
    assert harness.spent() == 0 and pending_ids(harness) == [approval_id]
    signed = harness.owner_call("POST", path, body)
    assert signed.status_code == 200, signed.text


def test_reopen_failing_too_leaves_the_approval_consumed_never_signed(h: tuple[Harness, LoopThread]) -> None:
    """If the store cannot reopen it with its record (one transaction), the approval stays approved (fail safe: it
    is never signed twice, and never changes without its record). Before, the reopening was its own write: with the
    record refused, the approval was pending again and nothing said why."""
    harness, loop = h
    approval_id, body, path = escalate(harness)
    stop_enclave(harness, loop)
    with refused_records(harness, "approval.reopened"):
        failed = harness.owner_call("POST", path, body)
    assert failed.status_code == 503
    assert pending_ids(harness) == [] and harness.store.get_approval(approval_id).status == "approved"
    assert "approval.reopened" not in harness.audit_events() and harness.spent() == 0


def test_enclave_refusal_consumes_the_approval(h: tuple[Harness, LoopThread]) -> None:
    harness, loop = h
    approval_id, body, path = escalate(harness)
    stop_enclave(harness, loop)
    session = new_session_key()
    server = start_stand_in_enclave(loop, harness.socket, session, stand_in_refusal(session, harness.wallet_id))
    try:
        harness.services.relay._loaded[harness.wallet_id] = 1  # the refusal answers the signing request itself
        refused = harness.owner_call("POST", path, body)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "enclave_refused"
        assert pending_ids(harness) == [] and harness.store.get_approval(approval_id).status == "approved"
        assert "approval.reopened" not in harness.audit_events() and harness.spent() == 0
    finally:
        server.close()
