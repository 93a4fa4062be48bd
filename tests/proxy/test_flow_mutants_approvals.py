"""Owner decisions that `parent_proxy.approvals` refuses, scopes or records, each found untested by mutation testing
(twenty-fourth session: a mutant of the approval flow that no test killed).

- step 2 of an approve: a wallet frozen since the escalation is 403 ``wallet_frozen``, and a policy that now denies
  the request (a new one installed since) is 403 ``policy_denied`` with an ``approval.refused`` record; either way
  nothing is approved, reserved or relayed, and the approval stays pending;
- an approval is only reachable under its own wallet: named under another wallet of the same owner it is 404, for
  an approve and a reject alike, and stays pending;
- the ``approval.approved`` and ``approval.rejected`` records belong to the wallet and name the approval and the
  request;
- a rejection of an approval whose stored request does not name the agent's digest is decided all the same, and
  the agent's 202 stays.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from parent_proxy.services import canonical
from tests.proxy.api_harness import Harness, pending_approval_ids, provision, spy_calls
from tests.proxy.harness_calls import escalate, order, records, send
from tests.support.policies import BLOCKED, MERCHANT, TREASURY


@pytest.fixture
def h(provisioned: Harness) -> Harness:
    """The conftest's provisioned harness, under the name these tests use."""
    return provisioned


def last_record(h: Harness, event: str) -> tuple[str | None, dict[str, Any]]:
    """The wallet and payload of the newest record of ``event``."""
    record = [r for r in records(h) if r.event_type == event][-1]
    return record.wallet_id, json.loads(record.payload)


def escalated_request_id(h: Harness, approval_id: str) -> str:
    """The request id of the agent request that made ``approval_id`` (its ``transaction.escalated`` record)."""
    escalations = [json.loads(r.payload) for r in records(h) if r.event_type == "transaction.escalated"]
    (request_id,) = [e["request_id"] for e in escalations if e["approval_id"] == approval_id]
    return str(request_id)


def test_an_approval_on_a_wallet_frozen_since_is_403_and_stays_pending(h: Harness) -> None:
    approval_id, body, path = escalate(h)
    send(h, order(h, 1))
    relayed = spy_calls(h.services.relay, "sign_transaction")

    answer = h.owner_call("POST", path, body)

    assert answer.status_code == 403 and answer.json()["error"]["code"] == "wallet_frozen", answer.text
    assert pending_approval_ids(h) == [approval_id]
    assert "approval.approved" not in h.audit_events() and relayed == [] and h.spent() == 0


def test_an_approval_the_policy_now_denies_is_403_recorded_and_stays_pending(h: Harness) -> None:
    approval_id, body, path = escalate(h)
    denying = h.policy(2, destinations={"allow": [str(TREASURY)], "deny": [str(BLOCKED), str(MERCHANT)]})
    installed = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": denying})
    assert installed.status_code == 200, installed.text
    relayed = spy_calls(h.services.relay, "sign_transaction")

    answer = h.owner_call("POST", path, body)

    assert answer.status_code == 403 and answer.json()["error"]["code"] == "policy_denied", answer.text
    assert pending_approval_ids(h) == [approval_id]
    assert "approval.approved" not in h.audit_events() and relayed == [] and h.spent() == 0
    wallet_id, refused = last_record(h, "approval.refused")
    assert wallet_id == h.wallet_id
    assert refused["approval_id"] == approval_id and refused["request_id"] == escalated_request_id(h, approval_id)
    assert refused["decision"]["verdict"] == "deny"


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_an_approval_named_under_another_wallet_is_404_and_untouched(h: Harness, decision: str) -> None:
    approval_id, body, _path = escalate(h)
    first = h.wallet_id
    h.wallet_id = "w2"  # a second wallet of the same owner
    provision(h)

    answer = h.owner_call("POST", f"/v1/wallets/w2/approvals/{approval_id}/{decision}", body)

    assert answer.status_code == 404, answer.text
    h.wallet_id = first
    assert pending_approval_ids(h) == [approval_id]
    assert not {"approval.approved", "approval.rejected"} & set(h.audit_events())


def test_a_rejection_is_recorded_for_its_wallet_naming_the_approval_and_request(h: Harness) -> None:
    approval_id, _body, path = escalate(h)

    answer = h.owner_call("POST", path.removesuffix("/approve") + "/reject")

    assert answer.status_code == 200, answer.text
    wallet_id, payload = last_record(h, "approval.rejected")
    assert wallet_id == h.wallet_id
    assert payload == {"approval_id": approval_id, "request_id": escalated_request_id(h, approval_id)}


def test_an_approval_is_recorded_for_its_wallet_naming_the_approval_and_its_signing(h: Harness) -> None:
    approval_id, body, path = escalate(h)

    answer = h.owner_call("POST", path, body)

    assert answer.status_code == 200, answer.text
    wallet_id, payload = last_record(h, "approval.approved")
    assert wallet_id == h.wallet_id
    assert payload == {"approval_id": approval_id, "request_id": escalated_request_id(h, approval_id)}


def test_a_rejection_of_an_approval_naming_no_digest_is_decided_and_keeps_the_202(h: Harness) -> None:
    approval_id, _body, path = escalate(h)
    conn = h.store.inner._conn()
    (payload,) = conn.execute("SELECT request_payload FROM approvals WHERE approval_id = ?", (approval_id,)).fetchone()
    stored = json.loads(payload)
    del stored["request_sha256"]
    conn.execute("UPDATE approvals SET request_payload = ? WHERE approval_id = ?", (canonical(stored), approval_id))
    tx_key = stored["request"]["idempotency_key"]
    before = conn.execute("SELECT response FROM idempotency WHERE key = ?", (f"agent:{tx_key}",)).fetchone()

    answer = h.owner_call("POST", path.removesuffix("/approve") + "/reject")

    assert answer.status_code == 200 and answer.json()["status"] == "rejected", answer.text
    assert pending_approval_ids(h) == []
    after = conn.execute("SELECT response FROM idempotency WHERE key = ?", (f"agent:{tx_key}",)).fetchone()
    assert after == before and json.loads(after[0])["status_code"] == 202
