"""Policy documents: the example parses, every malformed field is named, and the schema agrees with the parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from enclave_app.protocol_wire import MAX_SPENT_ENTRIES
from policies.canonical import MAX_DOCUMENT_BYTES, canonical_bytes, parse_json_object
from policies.document import MAX_SPEND_WINDOWS, parse_policy, policy_from_object
from policies.errors import PolicyDocumentError
from policies.rules import ANY
from policies.signing import signing_payload
from tests.support.policies import BLOCKED, EXAMPLE_MINT, MERCHANT, example_policy

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "policies" / "schema" / "policy-v1.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def test_example_policy_parses_with_every_rule() -> None:
    policy = policy_from_object(example_policy())
    rules = policy.rules
    assert policy.wallet_id == "demo-wallet"
    assert policy.sequence == 1
    assert [lim.asset for lim in rules.limits] == ["SOL", str(EXAMPLE_MINT)]
    assert rules.limits[0].per_transaction.automatic == 1_000_000_000
    assert rules.limits[0].periods[0].window_seconds == 86_400
    assert rules.destinations.allow != ANY and MERCHANT in rules.destinations.allow
    assert BLOCKED in rules.destinations.deny
    assert rules.fees.max_compute_unit_limit == 400_000
    assert rules.time_windows == ANY
    assert rules.freeze.denials is not None and rules.freeze.denials.count == 5
    assert policy.spend_windows() == (("SOL", 86_400), (str(EXAMPLE_MINT), 86_400), ("fees", 86_400))
    # Two allowed owners x one mint x two token programs.
    assert len(policy.allowed_token_accounts) == 4


def test_example_policy_matches_the_published_schema() -> None:
    VALIDATOR.validate(example_policy())


def test_expiry_is_optional_and_denies_from_its_second_on() -> None:
    from datetime import UTC, datetime

    assert policy_from_object(example_policy()).expires_at is None
    assert not policy_from_object(example_policy()).expired(datetime(9999, 1, 1, tzinfo=UTC))
    doc = {**example_policy(), "expires_at": 1_900_000_000}
    VALIDATOR.validate(doc)
    policy = policy_from_object(doc)
    assert policy.expires_at == 1_900_000_000
    assert not policy.expired(datetime.fromtimestamp(1_899_999_999.999, UTC))
    assert policy.expired(datetime.fromtimestamp(1_900_000_000, UTC))
    assert policy.canonical != policy_from_object(example_policy()).canonical  # the owner signs the expiry too


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    target: Any = doc
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is _DELETE:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value


_DELETE = object()

# (path to change, new value, field named in the error, reason fragment)
MALFORMED = [
    ("version", 2, "version", "between 1 and 1"),
    ("version", _DELETE, "version", "required field is missing"),
    ("wallet_id", "", "wallet_id", "1-64 characters"),
    ("wallet_id", "has space", "wallet_id", "1-64 characters"),
    ("wallet_id", "_w1", "wallet_id", "the first a letter or digit"),  # the message says why, not only which
    ("wallet_id", "acme:agent-1", "wallet_id", "1-64 characters"),
    ("wallet_id", "w" * 65, "wallet_id", "1-64 characters"),
    ("sequence", 0, "sequence", "between 1 and"),
    ("sequence", "1", "sequence", "must be an integer"),
    ("sequence", True, "sequence", "must be an integer"),
    ("extra", 1, "extra", "unknown field"),
    ("rules.programs", _DELETE, "rules.programs", "required field is missing"),
    ("rules.surprise", [], "rules.surprise", "unknown field"),
    ("rules.limits.0.asset", "ETH", "rules.limits[0].asset", "base58 Solana address"),
    ("rules.limits.0.per_transaction.automatic", 5, "rules.limits[0].per_transaction.automatic", "decimal string"),
    ("rules.limits.0.per_transaction.automatic", "-1", "rules.limits[0].per_transaction.automatic", "decimal"),
    ("rules.limits.0.per_transaction.automatic", "01", "rules.limits[0].per_transaction.automatic", "decimal"),
    ("rules.limits.0.per_transaction.automatic", "1.5", "rules.limits[0].per_transaction.automatic", "decimal"),
    (
        "rules.limits.0.per_transaction.approval",
        "18446744073709551616",
        "rules.limits[0].per_transaction.approval",
        "u64",
    ),
    (
        "rules.limits.0.per_transaction.automatic",
        "99999999999",
        "rules.limits[0].per_transaction",
        "automatic must not exceed approval",
    ),
    ("rules.limits.0.periods.0.window_seconds", 0, "rules.limits[0].periods[0].window_seconds", "between 1"),
    ("rules.limits.0.periods.0.window_seconds", 40 * 86400, "rules.limits[0].periods[0].window_seconds", "between"),
    ("rules.limits.0.id", "bad id!", "rules.limits[0].id", "characters"),
    ("rules.limits.1.asset", "SOL", "rules.limits[1].asset", "already defined"),
    ("rules.limits.1.asset", str(MERCHANT), "rules.limits[1].asset", "not in rules.mints"),
    ("rules.destinations.allow", "all", "rules.destinations.allow", "must be a list"),
    ("rules.destinations.allow", ["not-base58-0OIl"], "rules.destinations.allow[0]", "base58"),
    ("rules.destinations.deny", [str(BLOCKED), str(BLOCKED)], "rules.destinations.deny[1]", "duplicate entry"),
    ("rules.programs", "any", "rules.programs", "must be a list"),
    ("rules.mints", {}, "rules.mints", "must be a list"),
    ("rules.fees.max_compute_unit_limit", 1_400_001, "rules.fees.max_compute_unit_limit", "between 0 and 1400000"),
    ("rules.fees.max_compute_unit_price", -1, "rules.fees.max_compute_unit_price", "between 0"),
    # Above 2^53-1 a JSON number is not read exactly everywhere (RFC 8785 writes 2^64-1 as 18446744073709552000):
    # the fee caps took up to 2^64-1.
    ("rules.fees.max_compute_unit_price", 2**53, "rules.fees.max_compute_unit_price", "not read exactly"),
    ("rules.fees.max_total_fee_lamports", 2**53, "rules.fees.max_total_fee_lamports", "not read exactly"),
    ("rules.fees.max_total_fee_lamports", 2**64 - 1, "rules.fees.max_total_fee_lamports", "9007199254740991 "),
    ("rules.fees.periods", {}, "rules.fees.periods", "must be a list"),
    ("rules.fees.periods.0.window_seconds", 0, "rules.fees.periods[0].window_seconds", "between 1"),
    ("rules.fees.periods.0.automatic", 100, "rules.fees.periods[0].automatic", "decimal string"),
    ("rules.fees.periods.0.approval", "1", "rules.fees.periods[0]", "automatic must not exceed approval"),
    ("rules.fees.periods.0.id", "", "rules.fees.periods[0].id", "characters"),
    ("rules.fees.periods.0.extra", 1, "rules.fees.periods[0].extra", "unknown field"),
    (
        "rules.fees.periods",
        [
            {"id": "a", "window_seconds": 60, "automatic": "1", "approval": "2"},
            {"id": "b", "window_seconds": 60, "automatic": "1", "approval": "3"},
        ],
        "rules.fees.periods",
        "same window_seconds",
    ),
    (
        "rules.fees.periods",
        [
            {"id": "a", "window_seconds": 60, "automatic": "1", "approval": "2"},
            {"id": "a", "window_seconds": 120, "automatic": "1", "approval": "2"},
        ],
        "rules.fees.periods[1].id",
        "used twice",
    ),
    ("rules.rate.max_requests", 0, "rules.rate.max_requests", "between 1"),
    ("rules.time_windows", [], "rules.time_windows", "at least one window"),
    (
        "rules.time_windows",
        [{"days": ["mon"], "start": "18:00", "end": "09:00"}],
        "rules.time_windows[0]",
        "start must be before end",
    ),
    (
        "rules.time_windows",
        [{"days": ["monday"], "start": "09:00", "end": "17:00"}],
        "rules.time_windows[0].days[0]",
        "must be one of",
    ),
    (
        "rules.time_windows",
        [{"days": ["mon"], "start": "9:00", "end": "17:00"}],
        "rules.time_windows[0].start",
        "HH:MM",
    ),
    (
        "rules.time_windows",
        [{"days": [], "start": "09:00", "end": "17:00"}],
        "rules.time_windows[0].days",
        "at least one day",
    ),
    ("rules.durable_nonce.allowed", True, "rules.durable_nonce.nonce_accounts", "must list"),
    ("rules.durable_nonce.allowed", "no", "rules.durable_nonce.allowed", "true or false"),
    ("rules.freeze.denials", {"count": 0, "window_seconds": 60}, "rules.freeze.denials.count", "between 1"),
    ("rules.freeze.on_close_to_stranger", _DELETE, "rules.freeze.on_close_to_stranger", "required field"),
    ("rules.squads_multisig", _DELETE, "rules.squads_multisig", "required field is missing"),
    ("rules.squads_multisig", "not-an-address", "rules.squads_multisig", "base58 Solana address"),
    ("rules.offchain_messages", _DELETE, "rules.offchain_messages", "required field is missing"),
    ("rules.offchain_messages", {"allowed": "yes"}, "rules.offchain_messages.allowed", "true or false"),
    ("rules.offchain_messages", {}, "rules.offchain_messages.allowed", "required field is missing"),
    ("expires_at", None, "expires_at", "must be an integer"),
    ("expires_at", "2030-01-01", "expires_at", "must be an integer"),
    ("expires_at", True, "expires_at", "must be an integer"),
    ("expires_at", 0, "expires_at", "between 1"),
    ("expires_at", 2**53, "expires_at", "between 1"),
]


@pytest.mark.parametrize(("path", "value", "field", "reason"), MALFORMED, ids=[f"{m[0]}={m[1]!r}" for m in MALFORMED])
def test_malformed_field_is_named(path: str, value: Any, field: str, reason: str) -> None:
    doc = example_policy()
    _set(doc, path, value)
    with pytest.raises(PolicyDocumentError, match=reason) as info:
        policy_from_object(doc)
    assert info.value.field == field


def test_the_fee_caps_go_up_to_the_largest_portable_number() -> None:
    doc = example_policy()
    doc["rules"]["fees"].update(max_compute_unit_price=2**53 - 1, max_total_fee_lamports=2**53 - 1)
    VALIDATOR.validate(doc)
    fees = policy_from_object(doc).rules.fees
    assert fees.max_compute_unit_price == fees.max_total_fee_lamports == 2**53 - 1


def test_schema_refuses_what_the_schema_can_express() -> None:
    """Every malformed document the schema can describe is refused by both the schema and the parser."""
    semantic_only = {"automatic must not exceed approval", "already defined", "not in rules.mints",
                     "start must be before end", "same window_seconds", "used twice"}  # fmt: skip
    for path, value, _field, reason in MALFORMED:
        if reason in semantic_only:
            continue
        doc = example_policy()
        _set(doc, path, value)
        assert not VALIDATOR.is_valid(doc), f"schema accepts {path}={value!r}"


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("rules.limits.0.id", "sol\n", "rules.limits[0].id"),
        ("rules.limits.0.per_transaction.automatic", "1\n", "rules.limits[0].per_transaction.automatic"),
        ("rules.fees.periods.0.id", "fees-daily\n", "rules.fees.periods[0].id"),
        ("rules.time_windows", [{"days": ["mon"], "start": "09:00\n", "end": "17:00"}], "rules.time_windows[0].start"),
    ],
)
def test_a_trailing_newline_is_refused(path: str, value: Any, field: str) -> None:
    """The schema's patterns refuse it (ECMA-262 ``$`` is the end of the string); so must the parser, whose
    Python ``$`` would match before a final newline. (Python's jsonschema shares that reading: not checked here.)"""
    doc = example_policy()
    _set(doc, path, value)
    with pytest.raises(PolicyDocumentError) as info:
        policy_from_object(doc)
    assert info.value.field == field


def test_a_signing_purpose_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid signing purpose"):
        signing_payload("policy\n", {})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'{"a": 1.5}', "non-integer number"),
        (b'{"a": NaN}', "NaN is not allowed"),
        (b'{"a": Infinity}', "Infinity is not allowed"),
        (b"[1, 2]", "must be a JSON object"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"a": ', "not valid JSON"),
        (b"[" * 40 + b"]" * 40, "nesting deeper"),
        (b'{"a": 1' + b"0" * 5000 + b"}", "more than 20 digits"),  # Python's own limit would raise ValueError
        (b'{"a": -123456789012345678901}', "more than 20 digits"),
        (b'{"a": "' + b"x" * MAX_DOCUMENT_BYTES + b'"}', "larger than"),
    ],
)
def test_strict_json(text: bytes, reason: str) -> None:
    with pytest.raises(PolicyDocumentError, match=reason):
        parse_json_object(text)


def test_parse_policy_reads_json_text() -> None:
    text = json.dumps(example_policy(), indent=4)
    assert parse_policy(text).canonical == canonical_bytes(example_policy())


def test_canonical_form_is_independent_of_key_order_and_whitespace() -> None:
    doc = example_policy()
    reordered = json.loads(json.dumps(doc, sort_keys=True, indent=3))
    assert canonical_bytes(doc) == canonical_bytes(dict(reversed(list(reordered.items()))))
    assert b" " not in canonical_bytes({"a": [1, 2], "b": {"c": None}})
    assert canonical_bytes({"b": 1, "a": True}) == b'{"a":true,"b":1}'


def test_canonical_form_refuses_floats_and_non_ascii_keys() -> None:
    with pytest.raises(PolicyDocumentError, match="floats have no canonical form"):
        canonical_bytes({"x": [1.0]})
    with pytest.raises(PolicyDocumentError, match="must be an ASCII string"):
        canonical_bytes({"é": 1})
    with pytest.raises(PolicyDocumentError, match="is not a JSON value"):
        canonical_bytes({"x": b"bytes"})


def _with_sol_periods(count: int) -> dict[str, Any]:
    doc = example_policy()
    doc["rules"]["limits"][0]["periods"] = [
        {"id": f"sol-{i}", "window_seconds": 3600 + i, "automatic": "5000000000", "approval": "20000000000"}
        for i in range(count)
    ]
    return doc


def test_spending_windows_are_bounded_by_what_a_signing_request_carries() -> None:
    """Limit and fee periods together: at most `MAX_SPEND_WINDOWS` (each signing request carries every window's
    total to the enclave, whose protocol takes no more). Nineteenth-session enclave review: a policy of 65 windows
    was accepted by both checks, and then no transaction of the wallet could be signed (503 on every request)."""
    assert MAX_SPEND_WINDOWS == MAX_SPENT_ENTRIES == 64
    at_most = policy_from_object(_with_sol_periods(MAX_SPEND_WINDOWS - 2))  # + the token's and the fees' windows
    assert len(at_most.spend_windows()) == MAX_SPEND_WINDOWS
    with pytest.raises(PolicyDocumentError, match=r"^rules\.limits: 65 spending windows .*at most 64$"):
        policy_from_object(_with_sol_periods(MAX_SPEND_WINDOWS - 1))
