"""Time windows at their edges (docs/policies.md, `time_windows`): days and minutes in UTC, ``start`` inclusive,
``end`` exclusive, ``24:00`` allowed, and a request time given in another zone read as the UTC time it is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from policies.decision import Verdict
from tests.support.scenario import Scenario

WEDNESDAY = datetime(2026, 11, 18, tzinfo=UTC)  # 00:00 UTC


def _office(s: Scenario, *windows: tuple[list[str], str, str]) -> Scenario:
    s.doc["rules"]["time_windows"] = [{"days": days, "start": start, "end": end} for days, start, end in windows]
    return s


def _verdict(s: Scenario, now: datetime) -> Verdict:
    s.now = now
    return s.decide(s.legacy(s.pay(1_000))).verdict


@pytest.mark.parametrize(
    ("at", "verdict"),
    [
        (timedelta(hours=9) - timedelta(minutes=1), Verdict.DENY),  # 08:59: before the start
        (timedelta(hours=9), Verdict.ALLOW),  # 09:00: the start is inside
        (timedelta(hours=9, seconds=59), Verdict.ALLOW),
        (timedelta(hours=16, minutes=59, seconds=59), Verdict.ALLOW),  # the last minute is inside
        (timedelta(hours=17), Verdict.DENY),  # 17:00: the end is outside
    ],
)
def test_start_is_inside_and_end_is_outside(at: timedelta, verdict: Verdict) -> None:
    s = _office(Scenario(), (["wed"], "09:00", "17:00"))
    assert _verdict(s, WEDNESDAY + at) is verdict


def test_minutes_count_from_midnight_by_hour() -> None:
    """A window of one minute in the afternoon: the hour and the minute both place the request."""
    s = _office(Scenario(), (["wed"], "13:37", "13:38"))
    assert _verdict(s, WEDNESDAY + timedelta(hours=13, minutes=37)) is Verdict.ALLOW
    for other in (timedelta(hours=13, minutes=36), timedelta(hours=13, minutes=38), timedelta(hours=12, minutes=37)):
        assert _verdict(s, WEDNESDAY + other) is Verdict.DENY, other


def test_a_window_to_24_00_covers_the_last_minute_of_the_day() -> None:
    s = _office(Scenario(), (["wed"], "00:00", "24:00"))
    assert _verdict(s, WEDNESDAY) is Verdict.ALLOW
    assert _verdict(s, WEDNESDAY + timedelta(hours=23, minutes=59, seconds=59)) is Verdict.ALLOW
    assert _verdict(s, WEDNESDAY + timedelta(days=1)) is Verdict.DENY  # Thursday 00:00


def test_only_the_named_days_count() -> None:
    s = _office(Scenario(), (["tue", "thu"], "00:00", "24:00"))
    noon = timedelta(hours=12)
    assert _verdict(s, WEDNESDAY - timedelta(days=1) + noon) is Verdict.ALLOW  # Tuesday
    assert _verdict(s, WEDNESDAY + noon) is Verdict.DENY
    assert _verdict(s, WEDNESDAY + timedelta(days=1) + noon) is Verdict.ALLOW  # Thursday


def test_any_one_window_is_enough() -> None:
    s = _office(Scenario(), (["wed"], "08:00", "09:00"), (["wed"], "18:00", "19:00"))
    assert _verdict(s, WEDNESDAY + timedelta(hours=8, minutes=30)) is Verdict.ALLOW
    assert _verdict(s, WEDNESDAY + timedelta(hours=18, minutes=30)) is Verdict.ALLOW
    assert _verdict(s, WEDNESDAY + timedelta(hours=12)) is Verdict.DENY


def test_a_request_time_in_another_zone_is_judged_as_utc() -> None:
    """12:00 at UTC+05:00 is 07:00 UTC: inside a 06:00-08:00 UTC window, whatever the wall clock says there; and
    late Wednesday at UTC-05:00 is already Thursday in UTC."""
    s = _office(Scenario(), (["wed"], "06:00", "08:00"))
    plus_five = timezone(timedelta(hours=5))
    assert _verdict(s, datetime(2026, 11, 18, 12, 0, tzinfo=plus_five)) is Verdict.ALLOW
    assert _verdict(s, datetime(2026, 11, 18, 7, 0, tzinfo=plus_five)) is Verdict.DENY  # 02:00 UTC
    late = _office(Scenario(), (["wed"], "00:00", "24:00"))
    minus_five = timezone(timedelta(hours=-5))
    assert _verdict(late, datetime(2026, 11, 18, 20, 0, tzinfo=minus_five)) is Verdict.DENY  # Thursday 01:00 UTC


def test_the_reason_names_the_utc_day_and_time() -> None:
    s = _office(Scenario(), (["mon"], "09:00", "17:00"))
    s.now = datetime(2026, 11, 18, 12, 5, tzinfo=timezone(timedelta(hours=2)))
    decision = s.decide(s.legacy(s.pay(1_000)))
    assert [(r.verdict, r.rule, r.seen) for r in decision.reasons] == [(Verdict.DENY, "time_windows", "Wed 10:05 UTC")]
