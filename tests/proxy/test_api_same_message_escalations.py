"""The same transaction escalated again while its approval is open is answered with that approval (202, its
``approval_id`` and ``request_id``), on both stores: no second approval, no second ``approval.pending`` webhook,
so the owner's one approval signs it once and counts it once (`sign_outcomes.join`). An approval the owner rejects
between the store naming it and the join's write is not joined: the request escalates anew.

Before (review s1, s6): two escalations of one transaction (two idempotency keys, or an agent polling its key after
the key's day) made two approvals; approving both counted 4 SOL for one 2 SOL transfer and wrote two
``transaction.signed`` records. Before (review s21): a decision in that gap left the key holding, and replaying for
its day, a 202 naming the decided approval.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from parent_proxy.store.validation import IDEMPOTENCY_RETENTION_SECONDS
from tests.proxy.api_harness import Harness, pending_approval_ids
from tests.proxy.conftest import provisioned_on_store
from tests.proxy.escalation_calls import approve, decide_during_joins, escalations
from tests.proxy.harness_calls import ESCALATING, configure_webhook, queued
from tests.support.policies import MERCHANT


@pytest.fixture(params=["sqlite", "dynamodb"])
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """A provisioned wallet on each store, with two store threads: the owner decides while a request is held in
    the store."""
    yield from provisioned_on_store(request, tmp_path, store_threads=2)


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


def test_an_approval_rejected_before_the_join_is_written_is_not_joined(h: Harness) -> None:
    """(One approved and signed in that moment answers with its signature: test_api_signed_approval_joins.py.)"""
    tx = h.transfer(ESCALATING, MERCHANT)
    first = h.sign(tx, key="k-a").json()["approval_id"]
    decided = decide_during_joins(h, tx, "reject", times=1)
    second = h.sign(tx, key="k-b")
    assert decided == [first]
    assert second.status_code == 202, second.text
    fresh = second.json()["approval_id"]
    assert fresh != first  # before: the decided approval's 202, under k-b for its day
    assert pending_approval_ids(h) == [fresh]
    assert [(e["approval_id"], e.get("joined")) for e in escalations(h)] == [(first, None), (fresh, None)]
    replay = h.sign(tx, key="k-b")
    assert replay.headers.get("Idempotent-Replayed") == "true" and replay.json()["approval_id"] == fresh
    assert h.sign(tx, key="k-c").json()["approval_id"] == fresh  # the new approval is the one joined now
    assert h.audit_events().count("transaction.signed") == 0


def test_joins_refused_three_times_answer_503_and_give_the_key_back(h: Harness) -> None:
    tx = h.transfer(ESCALATING, MERCHANT)
    h.sign(tx, key="k-a")
    decided = decide_during_joins(h, tx, "reject", times=3)
    refused = h.sign(tx, key="k-b")
    assert len(decided) == 3 and len(set(decided)) == 3
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "store_unavailable", refused.text
    assert not any(e.get("joined") for e in escalations(h))  # no join written, no approval made by k-b
    assert pending_approval_ids(h) == []
    again = h.sign(tx, key="k-b")  # the key was given back: the retry escalates anew
    assert again.status_code == 202 and again.headers.get("Idempotent-Replayed") is None
    assert pending_approval_ids(h) == [again.json()["approval_id"]]
