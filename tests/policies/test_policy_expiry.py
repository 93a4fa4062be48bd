"""Expiry (docs/policies.md, Expiry): from its ``expires_at`` second on, a policy denies every transaction (rule
``policy_expired``), whatever the transaction; one second before, it still decides as usual."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from policies.decision import Verdict
from tests.support.scenario import NOON, Scenario

SOL = 1_000_000_000


def _expiring_at_noon() -> Scenario:
    s = Scenario()
    s.doc["expires_at"] = int(NOON.timestamp())
    return s


def test_a_transaction_it_would_allow_is_denied_from_the_expiry_second_on() -> None:
    s = _expiring_at_noon()
    s.now = NOON - timedelta(seconds=1)
    assert s.decide(s.legacy(s.pay(1_000))).verdict is Verdict.ALLOW
    for now in (NOON, NOON + timedelta(days=3)):
        s.now = now
        decision = s.decide(s.legacy(s.pay(1_000)))
        assert decision.verdict is Verdict.DENY, now
        assert [r.rule for r in decision.reasons] == ["policy_expired"]
        assert decision.reservations == ()


def test_an_escalation_under_an_expired_policy_is_a_denial() -> None:
    s = _expiring_at_noon()
    decision = s.decide(s.legacy(s.pay(2 * SOL)))  # above the automatic threshold: an escalation before expiry
    assert decision.verdict is Verdict.DENY
    assert [(r.verdict, r.rule) for r in decision.reasons] == [
        (Verdict.DENY, "policy_expired"),
        (Verdict.ESCALATE, "limits.sol.per_transaction"),
    ]


def test_the_reason_names_the_request_time_and_the_expiry_in_utc() -> None:
    s = _expiring_at_noon()
    s.now = datetime(2026, 11, 18, 14, 30, 5, tzinfo=UTC)
    (reason,) = s.decide(s.legacy(s.pay(1_000))).reasons
    assert (reason.seen, reason.allowed) == ("2026-11-18T14:30:05Z", "before 2026-11-18T12:00:00Z")
