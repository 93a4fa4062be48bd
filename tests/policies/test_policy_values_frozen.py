"""A parsed policy is frozen all the way down (policies/rules.py: "frozen values"): the proxy and the enclave keep
one parsed policy per wallet and read it from every request, so no reader can change what the next one sees."""

from __future__ import annotations

import dataclasses
from typing import Any

from policies.document import policy_from_object
from tests.support.policies import example_policy


def _values(value: Any) -> list[Any]:
    """Every dataclass instance reachable from ``value`` through fields, tuples, sets and mappings."""
    found: list[Any] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            found.append(item)
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))
        elif isinstance(item, (tuple, frozenset, list)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return found


def test_every_value_of_a_parsed_policy_is_frozen() -> None:
    doc = example_policy()
    doc["rules"]["time_windows"] = [{"days": ["mon"], "start": "09:00", "end": "17:00"}]
    values = _values(policy_from_object(doc))
    kinds = {type(v).__name__ for v in values}
    assert kinds >= {"Policy", "Rules", "AssetLimit", "Tier", "PeriodLimit", "DestinationRules", "FeeCaps",
                     "RateLimit", "TimeWindow", "DurableNonceRule", "FreezeTriggers", "DenialBurst"}  # fmt: skip
    for value in values:
        name = dataclasses.fields(value)[0].name
        try:
            setattr(value, name, None)
        except dataclasses.FrozenInstanceError:
            continue
        raise AssertionError(f"{type(value).__name__}.{name} could be changed")
