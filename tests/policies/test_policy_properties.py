"""Property tests: the policy parser and the evaluator only ever fail with the package's own errors, and
garbage never evaluates to ALLOW."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.decision import Verdict
from policies.document import parse_policy, policy_from_object
from policies.errors import PolicyDocumentError
from tests.support.policies import example_policy, replace_at, value_paths
from tests.support.scenario import Scenario

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5),
    max_leaves=30,
)


EXAMPLE_PATHS = value_paths(example_policy())[1:]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_parser_on_arbitrary_bytes_raises_only_document_errors(data: bytes) -> None:
    with contextlib.suppress(PolicyDocumentError):
        parse_policy(data)


@settings(max_examples=300)
@given(json_values)
def test_parser_on_arbitrary_json_raises_only_document_errors(value: Any) -> None:
    with contextlib.suppress(PolicyDocumentError):
        parse_policy(json.dumps(value))


@settings(max_examples=500)
@given(st.sampled_from(EXAMPLE_PATHS), json_values)
def test_parser_on_mutated_example_raises_only_document_errors(path: tuple[Any, ...], value: Any) -> None:
    doc = example_policy()
    replace_at(doc, path, value)
    try:
        policy_from_object(doc)
    except PolicyDocumentError as exc:
        assert exc.field and exc.reason


SCENARIO = Scenario()
VALID = SCENARIO.legacy(SCENARIO.pay(1_000))


@settings(max_examples=500)
@given(st.binary(max_size=1300))
def test_garbage_never_allows(data: bytes) -> None:
    assert SCENARIO.decide(data).verdict is not Verdict.ALLOW


@settings(max_examples=500)
@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.integers(min_value=1, max_value=255))
def test_mutated_transaction_decides_without_crashing(position: int, flip: int) -> None:
    """A flipped byte is either still a valid transaction (then the engine judges it) or denied; never a crash."""
    mutated = bytearray(VALID)
    mutated[position] ^= flip
    decision = SCENARIO.decide(bytes(mutated))
    assert decision.verdict in Verdict
