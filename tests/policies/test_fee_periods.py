"""Fee periods (``rules.fees.periods``): the fees wallet keys pay are counted in rolling windows, tiered like the asset
limits, and reserved under the asset ``fees``; without periods, fees are capped per transaction only."""

from __future__ import annotations

from dataclasses import replace

from solders.keypair import Keypair

from policies.decision import Decision, Verdict
from policies.document import policy_from_object
from policies.evaluate import evaluate
from policies.model import FEES
from policies.transaction import decode_transaction
from tests.support.policies import example_policy
from tests.support.scenario import FEE, Scenario

DAY = 86_400
AUTOMATIC = 100_000_000  # the example policy's fees-daily tier
APPROVAL = 500_000_000


def _reserved(decision: Decision) -> dict[str, int]:
    return {r.asset: r.amount for r in decision.reservations}


def test_the_fee_is_reserved_beside_the_outflows() -> None:
    s = Scenario()
    decision = s.decide(s.legacy(s.pay(1_000)))
    assert decision.verdict is Verdict.ALLOW
    assert _reserved(decision) == {"SOL": 1_000, FEES: FEE}


def test_a_transaction_that_moves_nothing_still_reserves_its_fee() -> None:
    s = Scenario()
    decision = s.decide(s.legacy())  # compute-budget instructions alone: nothing moves but the fee
    assert decision.verdict is Verdict.ALLOW
    assert _reserved(decision) == {FEES: FEE}


def test_fees_above_the_automatic_threshold_in_the_window_escalate() -> None:
    s = Scenario()
    s.spent[(FEES, DAY)] = AUTOMATIC - FEE + 1
    decision = s.decide(s.legacy(s.pay(1_000)))
    assert decision.verdict is Verdict.ESCALATE
    (reason,) = decision.reasons
    assert reason.rule == "fees.periods.fees-daily"
    assert reason.message == f"fees in {DAY}s (already {AUTOMATIC - FEE + 1}) above the automatic threshold"
    assert (reason.seen, reason.allowed) == (str(AUTOMATIC + 1), str(AUTOMATIC))
    assert _reserved(decision) == {"SOL": 1_000, FEES: FEE}  # what an approval will reserve


def test_fees_exactly_at_the_automatic_threshold_are_allowed() -> None:
    s = Scenario()
    s.spent[(FEES, DAY)] = AUTOMATIC - FEE
    assert s.decide(s.legacy(s.pay(1_000))).verdict is Verdict.ALLOW


def test_fees_above_the_approval_ceiling_are_denied_and_reserve_nothing() -> None:
    s = Scenario()
    s.spent[(FEES, DAY)] = APPROVAL - FEE + 1
    decision = s.decide(s.legacy(s.pay(1_000)))
    assert decision.verdict is Verdict.DENY
    assert [r.rule for r in decision.reasons] == ["fees.periods.fees-daily"]
    assert "above the approval ceiling" in decision.reasons[0].message
    assert decision.reservations == ()


def test_a_missing_fee_window_denies() -> None:
    s = Scenario()
    ctx = s.context()
    ctx = replace(ctx, spent={key: value for key, value in ctx.spent.items() if key != (FEES, DAY)})
    decision = evaluate(s.policy, decode_transaction(s.legacy(s.pay(1))), ctx)
    assert decision.verdict is Verdict.DENY
    assert [(r.rule, r.message) for r in decision.reasons] == [
        ("fees.periods.fees-daily", "the spending state for this window is missing")
    ]


def test_a_negative_fee_window_denies() -> None:
    s = Scenario()
    s.spent[(FEES, DAY)] = -1
    decision = s.decide(s.legacy(s.pay(1)))
    assert decision.verdict is Verdict.DENY
    assert decision.reasons[0].rule == "fees.periods.fees-daily"


def test_a_fee_someone_else_pays_is_neither_counted_nor_reserved() -> None:
    s = Scenario()
    s.spent[(FEES, DAY)] = APPROVAL  # the wallet's fee window is full: its own fees would be denied
    sponsor = Keypair().pubkey()
    decision = s.decide(s.legacy(s.pay(1_000), payer=sponsor))
    assert decision.verdict is Verdict.ALLOW, decision
    assert _reserved(decision) == {"SOL": 1_000}


def test_without_fee_periods_fees_are_reserved_but_not_limited() -> None:
    """Reserved all the same, so that periods the owner adds later count the fees paid before them."""
    doc = example_policy()
    del doc["rules"]["fees"]["periods"]
    s = Scenario(doc=doc)
    assert (FEES, DAY) not in s.policy.spend_windows()
    assert FEES not in s.policy.periods_by_asset
    s.spent[(FEES, DAY)] = 10**18  # no window is read
    decision = s.decide(s.legacy(s.pay(1_000)))
    assert decision.verdict is Verdict.ALLOW
    assert _reserved(decision) == {"SOL": 1_000, FEES: FEE}


def test_fee_period_rule_ids_cannot_be_taken_for_the_fee_caps() -> None:
    """A period named like a per-transaction cap (``total_fee``) still has its own rule id."""
    doc = example_policy()
    doc["rules"]["fees"]["periods"][0]["id"] = "total_fee"
    s = Scenario(doc=doc)
    s.spent[(FEES, DAY)] = AUTOMATIC
    escalated = s.decide(s.legacy(s.pay(1_000)))
    assert [r.rule for r in escalated.reasons] == ["fees.periods.total_fee"]
    s.spent[(FEES, DAY)] = 0
    denied = s.decide(s.legacy(*s.budget(price=1_000_000, limit=1_000_000), s.pay(1), budget=False))
    assert [r.rule for r in denied.reasons] == ["fees.compute_unit_limit", "fees.total_fee"]


def test_every_fee_period_applies_and_the_strictest_wins() -> None:
    doc = example_policy()
    doc["rules"]["fees"]["periods"].append(
        {"id": "fees-hourly", "window_seconds": 3_600, "automatic": str(FEE), "approval": str(FEE)}
    )
    s = Scenario(doc=doc)
    assert policy_from_object(doc).periods_by_asset[FEES][1].id == "fees-hourly"
    assert s.decide(s.legacy(s.pay(1))).verdict is Verdict.ALLOW
    s.spent[(FEES, 3_600)] = 1  # one more lamport of fees this hour than the hourly ceiling allows
    decision = s.decide(s.legacy(s.pay(1)))
    assert decision.verdict is Verdict.DENY
    assert [r.rule for r in decision.reasons] == ["fees.periods.fees-hourly"]


def test_fees_are_counted_apart_from_the_sol_limits() -> None:
    """A SOL window at its automatic threshold does not make a fee escalate, and a full fee window does not
    count against SOL: each asset is judged on its own amounts."""
    s = Scenario()
    daily_sol = 5_000_000_000
    s.spent[("SOL", DAY)] = daily_sol - 1_000
    decision = s.decide(s.legacy(s.pay(1_000)))
    assert decision.verdict is Verdict.ALLOW, decision
    assert _reserved(decision) == {"SOL": 1_000, FEES: FEE}


def test_a_fee_drain_stops_at_the_approval_ceiling() -> None:
    """Requests at the fee cap, each reserving its fee as the proxy would: the automatic total never passes the
    threshold, and nothing is reserved past the approval ceiling."""
    doc = example_policy()
    doc["rules"]["fees"]["periods"] = [
        {"id": "fees-daily", "window_seconds": DAY, "automatic": "1000000", "approval": "2000000"}
    ]
    doc["rules"]["rate"]["max_requests"] = 1_000_000
    s = Scenario(doc=doc)
    # 400 000 lamports of priority fee plus the signature's 5 000: just under the example's 500 000 cap
    raw = s.legacy(*s.budget(price=1_000_000, limit=400_000), budget=False)
    automatic = escalated = 0
    for _ in range(20):
        decision = s.decide(raw)
        if decision.verdict is Verdict.DENY:
            break
        fee = _reserved(decision)[FEES]
        if decision.verdict is Verdict.ALLOW:
            automatic += fee
        else:
            escalated += fee
        s.spent[(FEES, DAY)] = s.spent.get((FEES, DAY), 0) + fee
    assert decision.verdict is Verdict.DENY
    assert 0 < automatic <= 1_000_000
    assert escalated > 0
    assert automatic + escalated <= 2_000_000
