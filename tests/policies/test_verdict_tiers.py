"""The four tiers (DESIGN.md section 4, docs/policies.md, Evaluation rule 4): ALLOW < ESCALATE < DENY < FREEZE, each
its own verdict with its own label in a decision's JSON (the label the proxy answers and a receipt signs)."""

from __future__ import annotations

import spl.token.instructions as tok
import spl.token.models as spl
from solders.keypair import Keypair

from policies.decision import Verdict
from policies.programs import TOKEN_PROGRAM
from tests.support.policies import BLOCKED
from tests.support.scenario import Scenario

SOL = 1_000_000_000


def test_each_tier_is_its_own_verdict_in_order() -> None:
    assert Verdict.ALLOW < Verdict.ESCALATE < Verdict.DENY < Verdict.FREEZE
    assert len(set(Verdict)) == 4


def test_a_decision_of_each_tier_carries_its_label() -> None:
    s = Scenario()
    stranger = Keypair().pubkey()
    approve = tok.approve(spl.ApproveParams(program_id=TOKEN_PROGRAM, source=stranger, delegate=stranger,
                                                   owner=s.wallet, amount=1))  # fmt: skip
    cases = [(s.pay(1_000), "allow"), (s.pay(2 * SOL), "escalate"), (s.pay(1, BLOCKED), "deny"), (approve, "freeze")]
    for ix, label in cases:
        decision = s.decide(s.legacy(ix))
        assert decision.to_json()["verdict"] == label
        assert decision.allowed is (label == "allow")
