"""Review of the agent request path (sign flow, approvals, off-chain messages): regression tests for the faults
found, each failing before its fix."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parent_proxy.sign_parts import message_hash
from policies.orders import approval_document
from policies.signing import sign_document
from tests.proxy.api_harness import LAMPORTS_PER_SOL, Harness, provision, running_harness
from tests.support.policies import MERCHANT

CEILING = 10 * LAMPORTS_PER_SOL
"""The daily approval ceiling of `h`'s policy: one approved 6 SOL transfer leaves no room for a second."""


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    limits = [
        {
            "id": "sol",
            "asset": "SOL",
            "per_transaction": {"automatic": str(LAMPORTS_PER_SOL), "approval": str(CEILING)},
            "periods": [
                {"id": "sol-daily", "window_seconds": 86_400, "automatic": str(5 * LAMPORTS_PER_SOL),
                 "approval": str(CEILING)},
            ],
        }
    ]  # fmt: skip
    for harness in running_harness(tmp_path):
        provision(harness, harness.policy(1, limits=limits))
        yield harness


def escalated(h: Harness, lamports: int) -> tuple[str, dict[str, Any]]:
    """An escalated transfer: the approve path and the owner's signed approval of exactly its message."""
    tx = h.transfer(lamports, MERCHANT)
    response = h.sign(tx)
    assert response.status_code == 202, response.text
    document = approval_document(h.wallet_id, message_hash(tx), int(time.time()) + 600)
    path = f"/v1/wallets/{h.wallet_id}/approvals/{response.json()['approval_id']}/approve"
    return path, {"envelope": sign_document("approval", document, h.owner)}


def test_a_second_approval_of_a_signed_request_is_409_whatever_the_counters_say(h: Harness) -> None:
    # The owner's retry of an approval that went through (say, after a lost answer): the first approval's own
    # spending now fills the ceiling. Before: 403 policy_denied and an `approval.refused` record for an approval
    # that was approved and signed, telling the owner it was refused.
    path, body = escalated(h, 6 * LAMPORTS_PER_SOL)
    first = h.owner_call("POST", path, body)
    assert first.status_code == 200, first.text
    events = h.audit_events()
    again = h.owner_call("POST", path, body)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict", again.text
    assert h.audit_events() == events
    assert h.spent() == 6 * LAMPORTS_PER_SOL


def test_approving_a_rejected_request_is_409_even_when_the_wallet_is_frozen(h: Harness) -> None:
    path, body = escalated(h, 2 * LAMPORTS_PER_SOL)
    rejected = h.owner_call("POST", path.replace("/approve", "/reject"))
    assert rejected.status_code == 200, rejected.text
    h.store.inner.set_frozen(h.wallet_id, True, "test")
    events = h.audit_events()
    again = h.owner_call("POST", path, body)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict", again.text
    assert h.audit_events() == events


def spoil_policy(h: Harness) -> None:
    """Store a policy document that does not verify (a restored or tampered database, a verification rule
    tightened by an upgrade): every route must refuse it as the sign flow does, 403 ``no_policy``."""
    h.store.inner.install_policy(h.wallet_id, b"not a signed policy", 2)


def agent_headers(h: Harness) -> dict[str, str]:
    return {"Authorization": f"Bearer {h.token}"}


def test_an_approval_under_a_stored_policy_that_does_not_verify_is_403_no_policy_and_stays_pending(
    h: Harness,
) -> None:
    # Before: 500 internal_error ("a bug"), with nothing in the log.
    path, body = escalated(h, 2 * LAMPORTS_PER_SOL)
    spoil_policy(h)
    events = h.audit_events()
    refused = h.owner_call("POST", path, body)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "no_policy", refused.text
    assert h.audit_events() == events and h.spent() == 0
    pending = h.owner_call("GET", f"/v1/wallets/{h.wallet_id}/approvals").json()
    assert [p["approval_id"] for p in pending] == [path.split("/")[-2]]


def test_a_message_under_a_stored_policy_that_does_not_verify_is_403_no_policy(h: Harness) -> None:
    # Before: 403 enclave_refused, which says the enclave's check refused; the enclave was never asked.
    spoil_policy(h)
    message = base64.b64encode(b"\xffsolana offchain" + bytes(40)).decode()
    refused = h.client.post(f"/v1/wallets/{h.wallet_id}/messages/sign", json={"message": message},
                            headers=agent_headers(h))  # fmt: skip
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "no_policy", refused.text


def test_reading_a_wallet_whose_stored_policy_does_not_verify_is_403_no_policy(h: Harness) -> None:
    # Before: 500 internal_error, with nothing in the log.
    spoil_policy(h)
    refused = h.client.get(f"/v1/wallets/{h.wallet_id}", headers=agent_headers(h))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "no_policy", refused.text


def test_a_transaction_under_a_stored_policy_that_does_not_verify_is_403_no_policy_recorded_and_replayed(
    h: Harness,
) -> None:
    spoil_policy(h)
    tx = h.transfer(1_000, MERCHANT)
    refused = h.sign(tx, key="spoiled")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "no_policy", refused.text
    record = h.store.audit_records(0, 10_000)[-1]
    assert record.event_type == "transaction.refused"
    assert json.loads(record.payload)["reason"] == "stored policy does not verify"
    again = h.sign(tx, key="spoiled")  # the key was claimed: the same answer, not a second evaluation
    assert (again.status_code, again.json()) == (403, refused.json())
    assert h.audit_events().count("transaction.refused") == 1 and h.spent() == 0
