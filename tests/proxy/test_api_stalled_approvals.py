"""An owner approval whose signing died with its process is pending again after `STALLED_APPROVAL_SECONDS`
(`parent_proxy.stalled_approvals`, run by the periodic prune), and a reopened approval's first signing, however
late, is never recorded nor handed out: one approval, one signature.

Before: a process killed between the approval's decision and its signing's record (SIGKILL, OOM, power loss) left it
approved with nothing reserved or signed, for ever: the owner's retry was 409, the approval was no longer listed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parent_proxy.__main__ import prune_store
from parent_proxy.stalled_approvals import STALLED_APPROVAL_SECONDS
from tests.proxy.api_harness import Harness, provisioned_harness, refused_records
from tests.proxy.harness_calls import ESCALATING, configure_webhook, escalate, queued


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with provisioned_harness(tmp_path, store_threads=2) as (harness, _, _):  # a second approve while one is held
        yield harness


def pending_ids(h: Harness) -> list[str]:
    return [p["approval_id"] for p in h.owner_call("GET", f"/v1/wallets/{h.wallet_id}/approvals").json()]


def sweep_later(h: Harness, seconds: float) -> None:
    """The periodic prune run ``seconds`` from now (the proxy's clock moved for it, then back)."""
    h.clock.offset = seconds
    try:
        prune_store(h.services)
    finally:
        h.clock.offset = 0.0


def last_record(h: Harness) -> tuple[str, dict[str, Any]]:
    head = h.store.audit_head()
    assert head is not None
    return head.event_type, json.loads(head.payload)


def test_an_approval_whose_signing_died_is_pending_again_after_the_grace(h: Harness) -> None:
    configure_webhook(h)
    approval_id, body, path = escalate(h)
    # The process dies after the decision: nothing reserved, and its give-back never runs (here: the reservation
    # fails, and the give-back's reopening is refused as if its process were gone).
    h.store.failing = {"reserve"}
    with refused_records(h, "approval.reopened"):
        assert h.owner_call("POST", path, body).status_code == 503
    h.store.failing = set()
    stuck = h.store.get_approval(approval_id)
    assert stuck.status == "approved" and stuck.signing is not None and pending_ids(h) == []
    assert h.owner_call("POST", path, body).status_code == 409
    sweep_later(h, STALLED_APPROVAL_SECONDS - 30)  # within the grace: a live signing is left alone
    assert pending_ids(h) == [] and "approval.reopened" not in h.audit_events()
    sweep_later(h, STALLED_APPROVAL_SECONDS + 1)
    assert pending_ids(h) == [approval_id]
    assert last_record(h) == (
        "approval.reopened", {"approval_id": approval_id, "request_id": stuck.signing, "reason": "stalled"}
    )  # fmt: skip
    assert queued(h) == ["approval.pending", "approval.reopened"]  # the owner is told it waits again
    signed = h.owner_call("POST", path, body)  # the owner's same approval now signs it, once
    assert signed.status_code == 200, signed.text
    assert h.spent() == ESCALATING and h.store.get_approval(approval_id).signing is None
    sweep_later(h, 10 * STALLED_APPROVAL_SECONDS)  # a finished signing is never reopened
    assert h.audit_events().count("approval.reopened") == 1 and h.audit_events().count("transaction.signed") == 1


def test_a_slow_signing_reopened_meanwhile_is_never_recorded(h: Harness) -> None:
    """The race the grace period alone does not rule out (a clock ahead, a stuck process): the first signing is
    in the enclave while the sweep reopens its approval and the owner approves again. The second signing is
    recorded; the first one's finish is refused whole: no second ``transaction.signed``, nothing spent twice."""
    approval_id, body, path = escalate(h)
    second: list[Any] = []

    def meanwhile() -> None:  # the first signing has its signature, before its record
        h.store.before.pop("finish_signing")
        sweep_later(h, STALLED_APPROVAL_SECONDS + 1)
        assert h.store.get_approval(approval_id).status == "pending"
        second.append(h.owner_call("POST", path, body))

    h.store.before["finish_signing"] = meanwhile
    first = h.owner_call("POST", path, body)
    assert first.status_code == 409 and "signed_transaction" not in first.text
    assert first.json()["error"]["message"].startswith("the approval was reopened while it was being signed")
    assert second[0].status_code == 200, second[0].text
    events = h.audit_events()
    assert events.count("transaction.signed") == 1 and events.count("approval.approved") == 2
    assert events[-1] == "transaction.failed"  # the first signing's, after the second's record
    assert h.spent() == ESCALATING and h.store.get_approval(approval_id).status == "approved"
    assert pending_ids(h) == []


def test_the_refused_give_back_of_a_reopened_signing_is_a_warning(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """The first signing's give-back tries to reopen an approval the sweep reopened and the owner approved again:
    refused, as it must be, and logged as the expected outcome it is (a warning), not as a failure with a trace."""
    approval_id, body, path = escalate(h)

    def meanwhile() -> None:
        h.store.before.pop("finish_signing")
        sweep_later(h, STALLED_APPROVAL_SECONDS + 1)
        h.owner_call("POST", path, body)

    h.store.before["finish_signing"] = meanwhile
    with caplog.at_level(logging.WARNING, logger="parent_proxy.give_back"):
        assert h.owner_call("POST", path, body).status_code == 409
    refusals = [r for r in caplog.records if r.name == "parent_proxy.give_back"]
    assert [(r.levelno, r.exc_info) for r in refusals] == [(logging.WARNING, None)]
    assert "no longer approved for this signing" in refusals[0].getMessage() and approval_id in refusals[0].getMessage()
