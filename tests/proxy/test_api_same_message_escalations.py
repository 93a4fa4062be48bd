"""The same transaction escalated again while its approval is open is answered with that approval (202, its
``approval_id`` and ``request_id``), on both stores: no second approval, no second ``approval.pending`` webhook,
so the owner's one approval signs it once and counts it once (`sign_outcomes.join`).

Before (review s1, s6): two escalations of one transaction (two idempotency keys, or an agent polling its key after
the key's day) made two approvals; approving both counted 4 SOL for one 2 SOL transfer and wrote two
``transaction.signed`` records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parent_proxy.sign_parts import message_hash
from parent_proxy.store.validation import IDEMPOTENCY_RETENTION_SECONDS
from policies.orders import approval_document
from policies.signing import sign_document
from tests.proxy.api_harness import Harness, pending_approval_ids, provision, running_harness
from tests.proxy.conftest import moto_dynamo_store
from tests.proxy.harness_calls import ESCALATING, configure_webhook, queued, records
from tests.support.policies import MERCHANT


@pytest.fixture(params=["sqlite", "dynamodb"])
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "sqlite":
        for harness in running_harness(tmp_path):
            provision(harness)
            yield harness
        return
    request.getfixturevalue("aws_env")
    with moto_dynamo_store(lambda client: client) as (store, _):
        for harness in running_harness(tmp_path, store=store):
            provision(harness)
            yield harness


def approve(h: Harness, approval_id: str, tx: bytes, *, now: float | None = None) -> Any:
    at = int(time.time() if now is None else now)
    envelope = sign_document("approval", approval_document(h.wallet_id, message_hash(tx), at + 600), h.owner)
    path = f"/v1/wallets/{h.wallet_id}/approvals/{approval_id}/approve"
    return h.owner_call("POST", path, {"envelope": envelope}, timestamp=at)


def escalations(h: Harness) -> list[dict[str, Any]]:
    return [json.loads(r.payload) for r in records(h) if r.event_type == "transaction.escalated"]


def test_a_second_escalation_of_a_transaction_joins_its_open_approval(h: Harness) -> None:
    sqlite = not hasattr(h.store.inner, "_table")
    if sqlite:
        configure_webhook(h)
    tx = h.transfer(ESCALATING, MERCHANT)
    first, second = h.sign(tx, key="k-a"), h.sign(tx, key="k-b")
    assert (first.status_code, second.status_code) == (202, 202), second.text
    assert second.json() == first.json()  # the open approval's own 202: its approval id and request id
    approval_id = first.json()["approval_id"]
    assert pending_approval_ids(h) == [approval_id]
    joined = escalations(h)[1]
    assert (joined["approval_id"], joined["joined"]) == (approval_id, True)
    assert joined["request_id"] != first.json()["request_id"]  # the second request's own record
    if sqlite:
        assert queued(h) == ["approval.pending"]  # the owner is told once
    signed = approve(h, approval_id, tx)
    assert signed.status_code == 200, signed.text
    assert h.spent() == ESCALATING and h.audit_events().count("transaction.signed") == 1
    assert approve(h, approval_id, tx).status_code == 409  # decided once
    assert h.sign(tx, key="k-a").json()["status"] == "signed"  # the approval's key replays the outcome
    assert h.sign(tx, key="k-b").status_code == 202  # another key keeps the 202 (the outcome: webhook, first key)


def test_a_poll_after_the_keys_day_joins_it_and_replays_the_outcome(h: Harness) -> None:
    tx = h.transfer(ESCALATING, MERCHANT)
    first = h.sign(tx, key="k")
    h.clock.offset = IDEMPOTENCY_RETENTION_SECONDS + 60  # the proxy's and the enclave's clocks, a day later
    poll = h.sign(tx, key="k")  # the key expired: a new request, escalated again
    assert poll.status_code == 202 and poll.headers.get("Idempotent-Replayed") is None
    assert poll.json() == first.json()
    later = time.time() + h.clock.offset
    listed = h.owner_call("GET", f"/v1/wallets/{h.wallet_id}/approvals", timestamp=int(later))
    assert [a["approval_id"] for a in listed.json()] == [first.json()["approval_id"]]
    signed = approve(h, first.json()["approval_id"], tx, now=later)
    assert signed.status_code == 200, signed.text
    replay = h.sign(tx, key="k")  # the 202 stored by the poll is the approval's own: replaced by the outcome
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json()["signature"] == signed.json()["transaction"]["signature"]
    assert h.audit_events().count("transaction.signed") == 1


def test_a_transaction_whose_approval_was_rejected_escalates_anew(h: Harness) -> None:
    tx = h.transfer(ESCALATING, MERCHANT)
    first = h.sign(tx, key="k-a").json()["approval_id"]
    rejected = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/approvals/{first}/reject")
    assert rejected.status_code == 200, rejected.text
    again = h.sign(tx, key="k-b")
    assert again.status_code == 202 and again.json()["approval_id"] != first
    assert pending_approval_ids(h) == [again.json()["approval_id"]]
