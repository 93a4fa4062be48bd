"""``rules.lookup_tables``: the owner's pins, and `resolve_lookup_tables`, which decodes from them only."""

from __future__ import annotations

import pytest
from solders.pubkey import Pubkey

from policies.document import Policy, policy_from_object
from policies.errors import DecodeError, PolicyDocumentError
from policies.lookup_tables import resolve_lookup_tables
from tests.support.policies import BLOCKED, MERCHANT, TREASURY, example_policy

TABLE = Pubkey.new_unique()


def _policy(pins: object) -> Policy:
    doc = example_policy()
    doc["rules"]["lookup_tables"] = pins
    return policy_from_object(doc)


def test_pins_parse_into_a_map() -> None:
    policy = _policy([{"address": str(TABLE), "addresses": [str(MERCHANT), str(MERCHANT), str(TREASURY)]}])
    assert policy.rules.lookup_tables == {TABLE: (MERCHANT, MERCHANT, TREASURY)}


@pytest.mark.parametrize(
    ("pins", "field", "reason"),
    [
        ("any", "rules.lookup_tables", "must be a list"),
        ([{"address": str(TABLE)}], "rules.lookup_tables[0].addresses", "required field is missing"),
        ([{"address": str(TABLE), "addresses": []}], "rules.lookup_tables[0].addresses", "at least one address"),
        ([{"address": "nope", "addresses": [str(MERCHANT)]}], "rules.lookup_tables[0].address", "base58"),
        (
            [{"address": str(TABLE), "addresses": [str(MERCHANT)]}] * 2,
            "rules.lookup_tables[1].address",
            "already pinned",
        ),
    ],
)
def test_malformed_pins(pins: object, field: str, reason: str) -> None:
    with pytest.raises(PolicyDocumentError, match=reason) as info:
        _policy(pins)
    assert info.value.field == field


def test_resolution_uses_the_pins_and_cross_checks_what_was_supplied() -> None:
    policy = _policy([{"address": str(TABLE), "addresses": [str(MERCHANT), str(TREASURY)]}])
    pins = {TABLE: (MERCHANT, TREASURY)}
    assert resolve_lookup_tables(policy) == pins
    # The chain may hold more than the pin (tables only grow): the pinned prefix is what resolves.
    assert resolve_lookup_tables(policy, {TABLE: [MERCHANT, TREASURY, BLOCKED]}) == pins
    with pytest.raises(DecodeError, match="differ from the owner's pin"):
        resolve_lookup_tables(policy, {TABLE: [MERCHANT, BLOCKED]})
    with pytest.raises(DecodeError, match="not pinned"):
        resolve_lookup_tables(policy, {Pubkey.new_unique(): [MERCHANT]})


def test_a_pin_longer_than_the_table_is_refused() -> None:
    """Before: only the common prefix was compared, so a pin of two addresses passed against a table holding one,
    and index 1 resolved to a pinned address the table does not hold; whoever holds the table's authority could
    append another one there later (found in the design audit)."""
    policy = _policy([{"address": str(TABLE), "addresses": [str(TREASURY), str(MERCHANT)]}])
    with pytest.raises(DecodeError, match=r"shorter than the owner's pin \(1 < 2 entries\)") as info:
        resolve_lookup_tables(policy, {TABLE: [TREASURY]})
    assert info.value.instruction_index is None
    with pytest.raises(DecodeError, match=r"\(0 < 2 entries\)"):
        resolve_lookup_tables(policy, {TABLE: []})
    # exactly the pin, and a longer table, are fine
    assert resolve_lookup_tables(policy, {TABLE: [TREASURY, MERCHANT]}) == {TABLE: (TREASURY, MERCHANT)}
    assert resolve_lookup_tables(policy, {TABLE: [TREASURY, MERCHANT, BLOCKED]}) == {TABLE: (TREASURY, MERCHANT)}
