"""The per-transaction fee caps at their edges (docs/policies.md, `fees`): a price, a requested limit or a total
equal to its cap is within it; one unit more is denied, naming what was seen and what is allowed."""

from __future__ import annotations

from policies.decision import Verdict
from tests.support.scenario import FEE, Scenario

PRICE, LIMIT = 1_000, 50_000  # what `Scenario.budget` asks for by default; FEE is its total


def _fee_caps(price: int = 10**6, limit: int = 400_000, total: int = 500_000) -> Scenario:
    s = Scenario()
    s.doc["rules"]["fees"].update(max_compute_unit_price=price, max_compute_unit_limit=limit,
                                  max_total_fee_lamports=total)  # fmt: skip
    return s


def _reasons(s: Scenario) -> list[tuple[Verdict, str, object, object]]:
    decision = s.decide(s.legacy(s.pay(1_000)))
    return [(r.verdict, r.rule, r.seen, r.allowed) for r in decision.reasons]


def test_a_total_fee_equal_to_the_cap_is_allowed() -> None:
    assert _reasons(_fee_caps(total=FEE)) == []


def test_a_total_fee_one_lamport_above_the_cap_is_denied() -> None:
    assert _reasons(_fee_caps(total=FEE - 1)) == [(Verdict.DENY, "fees.total_fee", FEE, FEE - 1)]


def test_a_unit_price_equal_to_the_cap_is_allowed_and_one_above_is_denied() -> None:
    assert _reasons(_fee_caps(price=PRICE)) == []
    assert _reasons(_fee_caps(price=PRICE - 1)) == [(Verdict.DENY, "fees.compute_unit_price", PRICE, PRICE - 1)]


def test_a_requested_limit_equal_to_the_cap_is_allowed_and_one_above_is_denied() -> None:
    assert _reasons(_fee_caps(limit=LIMIT)) == []
    assert _reasons(_fee_caps(limit=LIMIT - 1)) == [(Verdict.DENY, "fees.compute_unit_limit", LIMIT, LIMIT - 1)]
