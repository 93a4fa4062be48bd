"""What `parent_proxy.sign_flow` does that mutation testing found untested (twenty-fourth session: a mutant of the
sign flow that no test killed).

- a frozen wallet's request is refused by the proxy's own check (its ``transaction.refused`` record says so), never
  relayed; if that refusal cannot be recorded, the key is freed (503, then the retry is refused as it should be,
  not 409);
- decisions are counted in ``waiaas_decisions_total`` at both stages, the proxy's and the enclave's;
- a signed answer has exactly its documented fields, and its ``transaction.signed`` record names its request id;
- a denial's and an escalation's records carry the request's decision and token id, and an escalation counts the
  request for the rate rule;
- an owner approval whose approval ceiling a concurrent request took between the check and the reservation is 403
  ``limit_exceeded`` (recorded under the signing's request id), nothing relayed, and the approval pending again;
  an agent request whose automatic threshold a concurrent request took is 403 ``limit_exceeded`` with its reasons,
  stored under its key (`sign_outcomes.limit_refusal` with a claim);
- a refusal stored under its key is not given back afterwards (no "could not be abandoned" error logged);
- a join of an open approval is recorded for its wallet;
- a request the enclave could not answer is recorded as ``transaction.failed`` with its request id, stage and error
  only (no ``reason`` unless one is given).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.api_harness import (
    LAMPORTS_PER_SOL,
    Harness,
    pending_approval_ids,
    provisioned_harness,
    spy_calls,
    stop_enclave,
)
from tests.proxy.harness_calls import ESCALATING, escalate, order, records, send
from tests.support.policies import BLOCKED, MERCHANT

DAY = 86_400
DAILY_CEILING = 20 * LAMPORTS_PER_SOL  # the example policy's daily SOL approval ceiling


@pytest.fixture
def h(provisioned: Harness) -> Harness:
    """The conftest's provisioned harness, under the name these tests use."""
    return provisioned


def payloads(h: Harness, event: str) -> list[dict[str, Any]]:
    return [json.loads(r.payload) for r in records(h) if r.event_type == event]


def test_a_frozen_wallets_request_is_refused_by_the_proxy_and_never_relayed(h: Harness) -> None:
    send(h, order(h, 1))
    relayed = spy_calls(h.services.relay, "sign_transaction")

    answer = h.sign(h.transfer(1000, MERCHANT), key="k")

    assert answer.status_code == 403 and answer.json()["error"]["code"] == "wallet_frozen", answer.text
    assert relayed == []
    (record,) = [r for r in records(h) if r.event_type == "transaction.refused"]
    refused = json.loads(record.payload)
    assert record.wallet_id == h.wallet_id
    assert refused["reason"] == "wallet frozen" and refused["token_id"] == h.token_id


def test_a_frozen_wallets_refusal_that_cannot_be_recorded_frees_the_key(h: Harness) -> None:
    send(h, order(h, 1))
    tx = h.transfer(1000, MERCHANT)
    h.store.failing.add("apply_audited")  # the refusal's one store transaction fails
    failed = h.sign(tx, key="k")
    h.store.failing.clear()
    assert failed.status_code == 503, failed.text

    retried = h.sign(tx, key="k")  # the key was given back: decided now, not 409 "in progress"

    assert retried.status_code == 403 and retried.json()["error"]["code"] == "wallet_frozen", retried.text
    assert retried.headers.get("Idempotent-Replayed") is None


def test_decisions_are_counted_at_the_proxy_and_at_the_enclave(h: Harness) -> None:
    signed = h.sign(h.transfer(1000, MERCHANT))
    assert signed.status_code == 200, signed.text

    scraped = h.client.get("/metrics").text

    assert 'waiaas_decisions_total{stage="proxy",verdict="allow"} 1' in scraped
    assert 'waiaas_decisions_total{stage="enclave",verdict="allow"} 1' in scraped


def test_a_signed_answer_has_its_fields_and_its_record_names_its_request(h: Harness) -> None:
    signed = h.sign(h.transfer(1000, MERCHANT))
    assert signed.status_code == 200, signed.text
    body = signed.json()

    assert set(body) == {"status", "request_id", "signature", "signed_transaction", "decision", "receipt", "submission"}
    assert body["status"] == "signed" and body["submission"] is None
    assert set(body["receipt"]) == {"receipt", "signature", "session_public_key"}
    (record,) = payloads(h, "transaction.signed")
    assert record["request_id"] == body["request_id"]


def test_a_denials_record_carries_its_decision_and_token(h: Harness) -> None:
    denied = h.sign(h.transfer(1000, BLOCKED))
    assert denied.status_code == 403, denied.text

    (record,) = payloads(h, "transaction.denied")

    assert record["decision"]["verdict"] == "deny" and record["token_id"] == h.token_id


def test_an_escalation_counts_the_request_and_its_record_carries_the_decision(h: Harness) -> None:
    before = h.store.count_requests(h.wallet_id, 0.0)

    approval_id, _body, _path = escalate(h)

    assert h.store.count_requests(h.wallet_id, 0.0) == before + 1  # for the rate rule, as any request
    (escalation,) = [r for r in records(h) if r.event_type == "transaction.escalated"]
    record = json.loads(escalation.payload)
    assert escalation.wallet_id == h.wallet_id
    assert record["approval_id"] == approval_id and record["token_id"] == h.token_id
    assert record["decision"]["verdict"] == "escalate"


def test_an_approval_whose_ceiling_a_concurrent_request_took_is_403_and_pending_again(h: Harness) -> None:
    approval_id, body, path = escalate(h)

    def concurrent_request_takes_the_ceiling() -> None:
        h.store.before.pop("reserve")
        amounts = {"SOL": DAILY_CEILING - ESCALATING + 1}
        h.store.inner.reserve(h.wallet_id, "concurrent", amounts, {("SOL", DAY): DAILY_CEILING}, time.time())

    h.store.before["reserve"] = concurrent_request_takes_the_ceiling
    relayed = spy_calls(h.services.relay, "sign_transaction")

    answer = h.owner_call("POST", path, body)

    assert answer.status_code == 403 and answer.json()["error"]["code"] == "limit_exceeded", answer.text
    assert relayed == [] and pending_approval_ids(h) == [approval_id]
    (reopened,) = payloads(h, "approval.reopened")
    (denied,) = payloads(h, "transaction.denied")
    (escalated,) = payloads(h, "transaction.escalated")
    assert denied["request_id"] == reopened["request_id"] != escalated["request_id"]  # the signing's
    assert denied["approval_id"] == approval_id and denied["reservation"][0]["rule"] == "reservation"
    assert [r.wallet_id for r in records(h) if r.event_type == "transaction.denied"] == [h.wallet_id]


def test_a_request_whose_threshold_a_concurrent_request_took_is_403_stored_under_its_key(h: Harness) -> None:
    automatic = 5 * LAMPORTS_PER_SOL  # the example policy's daily SOL automatic threshold
    tx = h.transfer(1000, MERCHANT)

    def concurrent_request_takes_the_threshold() -> None:
        h.store.before.pop("begin_signing")
        amounts = {"SOL": automatic - 1000 + 1}
        h.store.inner.reserve(h.wallet_id, "concurrent", amounts, {("SOL", DAY): automatic}, time.time())

    h.store.before["begin_signing"] = concurrent_request_takes_the_threshold
    requests = h.store.count_requests(h.wallet_id, 0.0)

    answer = h.sign(tx, key="k")

    assert answer.status_code == 403 and answer.json()["error"]["code"] == "limit_exceeded", answer.text
    assert answer.json()["error"]["reasons"] == [
        {"verdict": "deny", "rule": "reservation", "message": "period limit reached by concurrent requests",
         "seen": f"SOL/{DAY}s", "allowed": str(automatic)},
    ]  # fmt: skip
    assert h.store.count_requests(h.wallet_id, 0.0) == requests + 1  # recorded for the rate rule
    replay = h.sign(tx, key="k")
    assert replay.headers.get("Idempotent-Replayed") == "true" and replay.json() == answer.json()


def test_a_stored_refusal_is_not_given_back(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        denied = h.sign(h.transfer(1000, BLOCKED), key="k")

    assert denied.status_code == 403, denied.text
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_join_of_an_open_approval_is_recorded_for_its_wallet(h: Harness) -> None:
    tx = h.transfer(ESCALATING, MERCHANT)
    first = h.sign(tx, key="k-a")
    joined = h.sign(tx, key="k-b")
    assert first.status_code == joined.status_code == 202, joined.text

    (record,) = [r for r in records(h) if json.loads(r.payload).get("joined")]

    assert record.wallet_id == h.wallet_id
    assert json.loads(record.payload)["approval_id"] == first.json()["approval_id"]


def test_a_request_the_enclave_could_not_answer_is_recorded_without_a_reason(tmp_path: Path) -> None:
    with provisioned_harness(tmp_path, enclave_timeout=2.0) as (h, loop, servers):
        stop_enclave(h, loop, servers[0])

        answer = h.sign(h.transfer(1000, MERCHANT))

        assert answer.status_code == 503, answer.text
        (failed,) = payloads(h, "transaction.failed")
        assert set(failed) == {"request_id", "stage", "error"} and failed["stage"] == "enclave"
