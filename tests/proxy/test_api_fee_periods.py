"""Fee periods through the HTTP API: each signed transaction's fee is reserved under ``fees`` (atomically, like
the outflows), shown in the wallet view, escalates past the fee period's automatic threshold and is denied past
its approval ceiling."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from parent_proxy import sign_flow
from parent_proxy.sign_parts import message_hash
from policies.model import FEES
from policies.orders import approval_document
from policies.signing import sign_document
from tests.proxy.api_harness import Harness, provision, running_harness
from tests.support.policies import BLOCKED, MERCHANT

FEE = 5_000 + 50  # one signature, plus 1 000 micro-lamports times 50 000 units (Harness.transfer's budget)
DAY = 86_400


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    for harness in running_harness(tmp_path):
        provision(harness)
        fees = {"max_compute_unit_price": 1_000_000, "max_compute_unit_limit": 400_000,
                "max_total_fee_lamports": 500_000,
                "periods": [{"id": "fees-daily", "window_seconds": DAY, "automatic": str(2 * FEE),
                             "approval": str(3 * FEE)}]}  # fmt: skip
        installed = harness.owner_call("PUT", f"/v1/wallets/{harness.wallet_id}/policy",
                                       {"envelope": harness.policy(2, fees=fees)})  # fmt: skip
        assert installed.status_code == 200, installed.text
        yield harness


def _fee_limit(h: Harness) -> dict[str, str]:
    view = h.client.get(f"/v1/wallets/{h.wallet_id}", headers={"Authorization": f"Bearer {h.token}"})
    assert view.status_code == 200, view.text
    (fees,) = [limit for limit in view.json()["limits"] if limit["asset"] == FEES]
    return fees  # type: ignore[no-any-return]


def test_fees_are_reserved_escalate_and_stop_at_the_ceiling(h: Harness) -> None:
    for i in range(2):
        assert h.sign(h.transfer(1_000 + i, MERCHANT)).status_code == 200
    assert h.spent(FEES) == 2 * FEE and h.spent("SOL") == 2_001
    assert _fee_limit(h) == {"asset": FEES, "window_seconds": DAY, "spent": str(2 * FEE), "automatic_left": "0",
                             "approval_left": str(FEE)}  # fmt: skip

    tx = h.transfer(1_002, MERCHANT)
    pending = h.sign(tx)
    assert pending.status_code == 202, pending.text
    assert h.spent(FEES) == 2 * FEE  # nothing held while waiting
    document = approval_document(h.wallet_id, message_hash(tx), int(time.time()) + 600)
    path = f"/v1/wallets/{h.wallet_id}/approvals/{pending.json()['approval_id']}/approve"
    approved = h.owner_call("POST", path, {"envelope": sign_document("approval", document, h.owner)})
    assert approved.status_code == 200, approved.text
    assert approved.json()["transaction"]["status"] == "signed"
    assert h.spent(FEES) == 3 * FEE

    denied = h.sign(h.transfer(1_003, MERCHANT))
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "policy_denied"
    assert [r["rule"] for r in denied.json()["error"]["reasons"]] == ["fees.periods.fees-daily"]
    assert h.spent(FEES) == 3 * FEE and h.spent("SOL") == 3_003


def test_a_denied_request_reserves_no_fee(h: Harness) -> None:
    denied = h.sign(h.transfer(1_000, BLOCKED))
    assert denied.status_code == 403
    assert h.spent(FEES) == 0
    assert _fee_limit(h)["spent"] == "0"


def test_the_store_caps_fees_that_concurrent_evaluations_did_not_see(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests evaluated at once all read an empty fee window; the store's atomic reservation is what holds the
    line (the enclave's ledger does too, but not after an enclave restart): at most the automatic threshold."""
    real = sign_flow.eval_context

    def stale(*args: Any) -> Any:
        ctx, requests, denials = real(*args)
        return replace(ctx, spent=dict.fromkeys(ctx.spent, 0)), requests, denials

    monkeypatch.setattr(sign_flow, "eval_context", stale)
    answers = [h.sign(h.transfer(1_000 + i, MERCHANT)) for i in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 403, 403]
    assert {a.json()["error"]["code"] for a in answers[2:]} == {"limit_exceeded"}
    assert h.spent(FEES) == 2 * FEE


def test_fees_paid_before_the_owner_adds_periods_count_in_them(tmp_path: Path) -> None:
    for h in running_harness(tmp_path):
        no_periods = {"max_compute_unit_price": 1_000_000, "max_compute_unit_limit": 400_000,
                      "max_total_fee_lamports": 500_000}  # fmt: skip
        provision(h, h.policy(fees=no_periods))
        for i in range(3):
            assert h.sign(h.transfer(1_000 + i, MERCHANT)).status_code == 200
        assert h.spent(FEES) == 3 * FEE  # reserved although nothing limits it yet
        periods = [{"id": "fees-daily", "window_seconds": DAY, "automatic": str(4 * FEE), "approval": str(4 * FEE)}]
        installed = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy",
                                 {"envelope": h.policy(2, fees={**no_periods, "periods": periods})})  # fmt: skip
        assert installed.status_code == 200, installed.text
        assert h.sign(h.transfer(2_000, MERCHANT)).status_code == 200  # the fourth fee of the day
        denied = h.sign(h.transfer(2_001, MERCHANT))
        assert denied.status_code == 403, denied.text
        assert [r["rule"] for r in denied.json()["error"]["reasons"]] == ["fees.periods.fees-daily"]
