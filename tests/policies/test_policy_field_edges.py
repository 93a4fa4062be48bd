"""Policy document fields at their edges (docs/policies.md, the JSON Schema): the largest window taken and the next
refused, rule ids unique among the limits and their periods, and a time window's minutes read exactly."""

from __future__ import annotations

from typing import Any

import pytest

from policies.document import MAX_WINDOW_SECONDS, policy_from_object
from policies.errors import PolicyDocumentError
from policies.rules import TimeWindow
from tests.support.policies import example_policy, policy_schema

THIRTY_ONE_DAYS = 31 * 24 * 3600


def _window_places(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every object of the example that has a ``window_seconds``, by its field path."""
    rules = doc["rules"]
    return {
        "rules.limits[0].periods[0].window_seconds": rules["limits"][0]["periods"][0],
        "rules.fees.periods[0].window_seconds": rules["fees"]["periods"][0],
        "rules.rate.window_seconds": rules["rate"],
        "rules.freeze.denials.window_seconds": rules["freeze"]["denials"],
    }


def test_the_longest_window_is_thirty_one_days_as_the_schema_says() -> None:
    assert MAX_WINDOW_SECONDS == THIRTY_ONE_DAYS == policy_schema()["$defs"]["window"]["maximum"]


@pytest.mark.parametrize("field", list(_window_places(example_policy())))
@pytest.mark.parametrize("refused", [0, THIRTY_ONE_DAYS + 1])
def test_every_window_takes_one_second_to_thirty_one_days(field: str, refused: int) -> None:
    doc = example_policy()
    for taken in (1, THIRTY_ONE_DAYS):
        _window_places(doc)[field]["window_seconds"] = taken
        policy_from_object(doc)
    _window_places(doc)[field]["window_seconds"] = refused
    with pytest.raises(PolicyDocumentError, match="between 1 and 2678400") as info:
        policy_from_object(doc)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("limit", "period", "rule_id"),
    [
        (1, None, "sol"),  # two limits
        (0, 0, "sol"),  # a limit and its own period
        (1, 0, "sol-daily"),  # periods of two limits
        (1, 0, "sol"),  # a limit and another limit's period
    ],
)
def test_a_rule_id_used_twice_among_the_limits_is_refused(limit: int, period: int | None, rule_id: str) -> None:
    doc = example_policy()
    target = doc["rules"]["limits"][limit]
    (target if period is None else target["periods"][period])["id"] = rule_id
    with pytest.raises(PolicyDocumentError, match=f"rule id '{rule_id}' is used twice") as info:
        policy_from_object(doc)
    assert info.value.field == "rules.limits"


def test_a_window_that_starts_where_it_ends_is_refused() -> None:
    doc = example_policy()
    doc["rules"]["time_windows"] = [{"days": ["mon"], "start": "09:00", "end": "09:00"}]
    with pytest.raises(PolicyDocumentError, match="start must be before end") as info:
        policy_from_object(doc)
    assert info.value.field == "rules.time_windows[0]"


@pytest.mark.parametrize(
    ("start", "end", "minutes"),
    [("00:00", "00:01", (0, 1)), ("09:30", "17:45", (570, 1065)), ("23:59", "24:00", (1439, 1440))],
)
def test_window_times_are_minutes_after_midnight(start: str, end: str, minutes: tuple[int, int]) -> None:
    doc = example_policy()
    doc["rules"]["time_windows"] = [{"days": ["sun", "mon"], "start": start, "end": end}]
    assert policy_from_object(doc).rules.time_windows == (TimeWindow(frozenset({6, 0}), *minutes),)


@pytest.mark.parametrize("cap", ["max_compute_unit_price", "max_compute_unit_limit", "max_total_fee_lamports"])
def test_every_fee_cap_takes_zero_and_refuses_a_negative(cap: str) -> None:
    doc = example_policy()
    doc["rules"]["fees"][cap] = 0
    assert getattr(policy_from_object(doc).rules.fees, cap) == 0
    doc["rules"]["fees"][cap] = -1
    with pytest.raises(PolicyDocumentError, match="between 0 and") as info:
        policy_from_object(doc)
    assert info.value.field == f"rules.fees.{cap}"


def test_a_denial_burst_counts_up_to_ten_thousand_as_the_schema_says() -> None:
    denials_schema = policy_schema()["properties"]["rules"]["properties"]["freeze"]["properties"]["denials"]
    assert denials_schema["oneOf"][1]["properties"]["count"]["maximum"] == 10_000
    doc = example_policy()
    doc["rules"]["freeze"]["denials"]["count"] = 10_000
    denials = policy_from_object(doc).rules.freeze.denials
    assert denials is not None and denials.count == 10_000
    doc["rules"]["freeze"]["denials"]["count"] = 10_001
    with pytest.raises(PolicyDocumentError, match="between 1 and 10000") as info:
        policy_from_object(doc)
    assert info.value.field == "rules.freeze.denials.count"


def test_the_request_rate_counts_up_to_a_million_as_the_schema_says() -> None:
    rate_schema = policy_schema()["properties"]["rules"]["properties"]["rate"]["properties"]
    assert rate_schema["max_requests"]["maximum"] == 1_000_000
    doc = example_policy()
    doc["rules"]["rate"]["max_requests"] = 1_000_000
    assert policy_from_object(doc).rules.rate.max_requests == 1_000_000
    doc["rules"]["rate"]["max_requests"] = 1_000_001
    with pytest.raises(PolicyDocumentError, match="between 1 and 1000000") as info:
        policy_from_object(doc)
    assert info.value.field == "rules.rate.max_requests"
