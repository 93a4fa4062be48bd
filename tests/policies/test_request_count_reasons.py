"""The request-count rules at their edges, and what their reasons report (docs/policies.md, `rate` and `freeze`;
DESIGN.md section 5: every reason keeps what was seen and what was allowed): the ``max_requests``-th request in the
window passes and the next is denied; the ``count``-th denial in the burst window freezes."""

from __future__ import annotations

from policies.decision import Verdict
from policies.evaluate import evaluate_message
from tests.support.policies import BLOCKED
from tests.support.scenario import Scenario


def test_the_last_request_the_rate_allows_passes_and_the_next_is_denied_naming_both_counts() -> None:
    s = Scenario(requests=59)  # the example allows 60 a minute: this is the 60th
    assert s.decide(s.legacy(s.pay(1_000))).verdict is Verdict.ALLOW
    s.requests = 60
    decision = s.decide(s.legacy(s.pay(1_000)))
    assert [(r.verdict, r.rule, r.seen, r.allowed) for r in decision.reasons] == [(Verdict.DENY, "rate", 61, 60)]


def test_the_denial_that_completes_the_burst_freezes_naming_both_counts() -> None:
    s = Scenario(denials=4)  # the example freezes on the fifth denial
    decision = s.decide(s.legacy(s.pay(1, BLOCKED)))
    assert decision.verdict is Verdict.FREEZE
    assert [(r.verdict, r.rule, r.seen, r.allowed) for r in decision.reasons][-1] == (
        Verdict.FREEZE,
        "freeze.denials",
        5,
        4,
    )


def test_a_burst_of_one_freezes_on_the_first_denial() -> None:
    s = Scenario()
    s.doc["rules"]["freeze"]["denials"] = {"count": 1, "window_seconds": 60}
    decision = s.decide(s.legacy(s.pay(1, BLOCKED)))
    assert decision.verdict is Verdict.FREEZE
    assert (decision.reasons[-1].seen, decision.reasons[-1].allowed) == (1, 0)
    assert s.decide(s.legacy(s.pay(1_000))).verdict is Verdict.ALLOW  # an allowed request is no denial


def test_a_message_over_the_rate_reports_the_same_counts() -> None:
    s = Scenario(requests=60)
    reasons = evaluate_message(s.policy, s.context()).reasons
    assert [(r.rule, r.seen, r.allowed) for r in reasons] == [("rate", 61, 60)]
