"""Owner documents whose signature verifies but whose fields are refused (docs/api.md, Sequences): a freeze or
unfreeze order with a sequence above `policies.orders.MAX_SEQUENCE`, or expired, an expired approval, and a policy
with a sequence above `policies.document.MAX_SAFE_INT`, are 422 ``invalid_request`` naming the field, as any
malformed owner body; nothing is stored or recorded and nothing is sent to the enclave. Only a signature that fails
is 401 (`test_api_sign`), and an expired policy 409 ``stale_policy`` (`test_api_policy_expiry`)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from policies.document import MAX_SAFE_INT
from policies.orders import MAX_SEQUENCE
from policies.signing import sign_document
from tests.proxy.api_harness import Harness, spy_calls
from tests.proxy.harness_calls import escalate, order, queued, records, send


def _state(h: Harness) -> tuple[Any, ...]:
    """What a refused owner document must leave as it was: the wallet's order state and policy, the audit log, the
    webhook events queued."""
    wallet = h.store.get_wallet(h.wallet_id)
    return (wallet.frozen, wallet.frozen_reason, wallet.order_sequence, wallet.policy_sequence, wallet.policy_document,
            len(records(h)), queued(h))  # fmt: skip


def _refused(h: Harness, method: str, path: str, envelope: dict[str, Any], field: str) -> None:
    """``envelope`` sent to ``path`` is 422 ``invalid_request`` naming ``field``; nothing changed, nothing sent."""
    before = _state(h)
    sent = spy_calls(h.services.relay._client, "_call")  # every request to the enclave goes through it
    answer = h.owner_call(method, f"/v1/wallets/{h.wallet_id}/{path}", {"envelope": envelope})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_request" and f": {field}: " in error["message"], error
    assert _state(h) == before and sent == []


@pytest.mark.parametrize("purpose", ["freeze", "unfreeze"])
def test_an_order_sequence_above_the_maximum_is_a_validation_error(provisioned: Harness, purpose: str) -> None:
    if purpose == "unfreeze":
        send(provisioned, order(provisioned, 1))  # frozen first: the refused unfreeze must leave it frozen
    _refused(provisioned, "POST", purpose, order(provisioned, MAX_SEQUENCE + 1, purpose), "sequence")
    # The maximum itself is an order like any other.
    assert send(provisioned, order(provisioned, MAX_SEQUENCE, purpose), purpose)["order_sequence"] == MAX_SEQUENCE


@pytest.mark.parametrize("purpose", ["freeze", "unfreeze"])
def test_an_expired_order_is_a_validation_error(provisioned: Harness, purpose: str) -> None:
    _refused(provisioned, "POST", purpose, order(provisioned, 1, purpose, lifetime=-60), "expires_at")


def test_an_expired_approval_is_a_validation_error_and_stays_pending(provisioned: Harness) -> None:
    """docs/api.md, the owner-document rule: an expired approval is 422 like an expired order (only an expired
    policy is 409 ``stale_policy``, `test_api_policy_expiry`); the approval is still pending for a fresh one."""
    approval_id, body, path = escalate(provisioned)
    expired = dict(body["envelope"]["document"], expires_at=int(time.time()) - 60)
    _refused(
        provisioned,
        "POST",
        f"approvals/{approval_id}/approve",
        sign_document("approval", expired, provisioned.owner),
        "expires_at",
    )
    assert [
        a["approval_id"] for a in provisioned.owner_call("GET", f"/v1/wallets/{provisioned.wallet_id}/approvals").json()
    ] == [approval_id]
    assert provisioned.owner_call("POST", path, body).status_code == 200


def test_a_policy_sequence_above_the_maximum_is_a_validation_error(provisioned: Harness) -> None:
    """Policies were answered so already (pinned here beside the orders)."""
    _refused(provisioned, "PUT", "policy", provisioned.policy(MAX_SAFE_INT + 1), "sequence")
