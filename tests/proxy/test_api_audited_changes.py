"""A state change that an audited event describes is written in the same store transaction as its audit record and
webhook item (`Store.apply_audited`): when the audit part cannot be written the request answers 503 and the change
is not there either (a rejection stays pending, a freeze does not happen, no denial or request is counted, no
approval is created); the retry then writes all of it.

Before: the change was its own write ahead of the audit record: a failing audit write answered 503 but left the
change behind, unaudited and unnotified (the approval rejected with no record and no webhook to the agent, the wallet
frozen with no record). The failures are real ones of the SQLite store: its audit or outbox table is renamed away.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey
from solders.system_program import AssignParams, assign

from tests.proxy.api_harness import LAMPORTS_PER_SOL, Harness, provision, running_harness, unwritable
from tests.proxy.harness_calls import configure_webhook, freeze_order, queued, sign_message
from tests.support.policies import BLOCKED, MERCHANT

TABLES = ["audit_log", "outbox"]
"""The audit record's table, and the webhook item's (written in the same transaction as the record)."""


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    for harness in running_harness(tmp_path):
        provision(harness)
        configure_webhook(harness)
        yield harness


def assert_store_unavailable(response: Any) -> None:
    assert response.status_code == 503 and response.json()["error"]["code"] == "store_unavailable", response.text
    assert "signed_transaction" not in response.text


def counters(h: Harness) -> tuple[list[float], list[float]]:
    return h.store.recent_requests(h.wallet_id, 0.0), h.store.recent_denials(h.wallet_id, 0.0)


@pytest.mark.parametrize("table", TABLES)
def test_a_rejection_that_cannot_be_audited_stays_pending(h: Harness, table: str) -> None:
    escalated = h.sign(h.transfer(2 * LAMPORTS_PER_SOL, MERCHANT))
    assert escalated.status_code == 202, escalated.text
    approval_id = escalated.json()["approval_id"]
    path = f"/v1/wallets/{h.wallet_id}/approvals/{approval_id}/reject"
    with unwritable(h, table):
        failed = h.owner_call("POST", path)
    assert_store_unavailable(failed)
    assert h.store.get_approval(approval_id).status == "pending"
    assert "approval.rejected" not in h.audit_events()
    assert queued(h) == ["approval.pending"]
    rejected = h.owner_call("POST", path)  # the retry decides, records and notifies
    assert rejected.status_code == 200, rejected.text
    assert h.store.get_approval(approval_id).status == "rejected"
    assert h.audit_events()[-1] == "approval.rejected"
    assert queued(h) == ["approval.pending", "approval.rejected"]


@pytest.mark.parametrize("table", TABLES)
def test_an_owner_freeze_that_cannot_be_audited_does_not_freeze(h: Harness, table: str) -> None:
    with unwritable(h, table):
        failed = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/freeze", freeze_order(h, 1))
    assert_store_unavailable(failed)
    assert not h.store.get_wallet(h.wallet_id).frozen
    assert "wallet.frozen" not in h.audit_events() and queued(h) == []
    assert h.sign(h.transfer(1000, MERCHANT)).status_code == 200  # not frozen: still signs


@pytest.mark.parametrize("table", TABLES)
def test_an_owner_unfreeze_that_cannot_be_audited_leaves_the_wallet_frozen(h: Harness, table: str) -> None:
    frozen = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/freeze", freeze_order(h, 1))
    assert frozen.status_code == 200, frozen.text
    with unwritable(h, table):
        failed = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/unfreeze", freeze_order(h, 2, freeze=False))
    assert_store_unavailable(failed)
    assert h.store.get_wallet(h.wallet_id).frozen
    assert "wallet.unfrozen" not in h.audit_events() and queued(h) == ["wallet.frozen"]
    refused = h.sign(h.transfer(1000, MERCHANT))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "wallet_frozen"


@pytest.mark.parametrize("table", TABLES)
def test_a_policy_freeze_that_cannot_be_audited_freezes_and_counts_nothing(h: Harness, table: str) -> None:
    attack = assign(AssignParams(pubkey=h.agent, owner=Pubkey.new_unique()))  # hand the wallet away: FREEZE
    tx = h.transfer(1, MERCHANT, instructions=(attack,))
    before = counters(h)
    with unwritable(h, table):
        failed = h.sign(tx, key="attack")
    assert_store_unavailable(failed)
    assert not h.store.get_wallet(h.wallet_id).frozen
    assert counters(h) == before and h.spent() == 0
    assert "transaction.frozen" not in h.audit_events() and queued(h) == []
    retried = h.sign(tx, key="attack")  # the key was given back: the retry freezes, records and notifies
    assert retried.status_code == 403 and retried.json()["error"]["code"] == "wallet_frozen", retried.text
    assert h.store.get_wallet(h.wallet_id).frozen
    assert h.audit_events()[-1] == "transaction.frozen" and queued(h) == ["wallet.frozen"]


@pytest.mark.parametrize("table", TABLES)
def test_a_denial_that_cannot_be_audited_counts_no_request_and_no_denial(h: Harness, table: str) -> None:
    before = counters(h)
    with unwritable(h, table):
        failed = h.sign(h.transfer(1000, BLOCKED), key="denied")
    assert_store_unavailable(failed)
    assert counters(h) == before  # the denial burst freeze and the request rate count what was recorded only
    retried = h.sign(h.transfer(1000, BLOCKED), key="denied-again")
    assert retried.status_code == 403, retried.text
    requests, denials = counters(h)
    assert (len(requests), len(denials)) == (len(before[0]) + 1, len(before[1]) + 1)


@pytest.mark.parametrize("table", TABLES)
def test_an_escalation_that_cannot_be_audited_creates_no_approval(h: Harness, table: str) -> None:
    tx = h.transfer(2 * LAMPORTS_PER_SOL, MERCHANT)
    before = counters(h)
    with unwritable(h, table):
        failed = h.sign(tx, key="escalate")
    assert_store_unavailable(failed)
    assert h.store.pending_approvals(h.wallet_id) == [] and counters(h) == before
    assert "transaction.escalated" not in h.audit_events() and queued(h) == []
    retried = h.sign(tx, key="escalate")
    assert retried.status_code == 202, retried.text
    assert [a.approval_id for a in h.store.pending_approvals(h.wallet_id)] == [retried.json()["approval_id"]]
    assert queued(h) == ["approval.pending"]


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Harness]:
    yield from running_harness(tmp_path)


@pytest.mark.parametrize("table", TABLES)
def test_a_message_denial_burst_freeze_that_cannot_be_audited_freezes_nothing(bare: Harness, table: str) -> None:
    h = bare
    freeze = {"on_authority_change": True, "on_delegate_approval": True, "on_close_to_stranger": True,
              "denials": {"count": 2, "window_seconds": 600}}  # fmt: skip
    provision(h, h.policy(1, offchain_messages={"allowed": True}, rate={"max_requests": 1, "window_seconds": 600},
                          freeze=freeze))  # fmt: skip
    configure_webhook(h)
    assert sign_message(h, "first").status_code == 200
    assert sign_message(h, "denied").json()["error"]["code"] == "policy_denied"
    before = counters(h)
    with unwritable(h, table):
        failed = sign_message(h, "would freeze")
    assert_store_unavailable(failed)
    assert not h.store.get_wallet(h.wallet_id).frozen and counters(h) == before
    assert "message.frozen" not in h.audit_events() and "wallet.frozen" not in queued(h)
    assert sign_message(h, "freezes").json()["error"]["code"] == "wallet_frozen"
    assert h.store.get_wallet(h.wallet_id).frozen and h.audit_events()[-1] == "message.frozen"
