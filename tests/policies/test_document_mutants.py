"""Refusals and edges of the policy document parser that no test held (mutation testing, twenty-fourth session).

Each test here failed on a mutant of `policies.document`, `policies.json_fields` or `policies.canonical` that the
suite let pass: every malformed document is refused with the field and the reason named (docs/policies.md), and
every value the schema allows is read as written.
"""

from __future__ import annotations

from typing import Any

import pytest
from solders.pubkey import Pubkey

from policies.canonical import LONE_SURROGATE, MAX_NESTING, canonical_bytes, parse_json_object
from policies.document import policy_from_object
from policies.errors import PolicyDocumentError
from policies.json_fields import MAX_LIST_ITEMS
from policies.model import FEES
from policies.rules import DenialBurst
from tests.support.policies import EXAMPLE_MINT, MERCHANT, TREASURY, example_policy, replace_at, value_paths

TABLE = Pubkey.from_string("AddressLookupTab1e1111111111111111111111111")
NONCE = Pubkey.from_string("SysvarRecentB1ockHashes11111111111111111111")
MULTISIG = Pubkey.from_string("SQDS4ep65T869zMMBKyuUq6aD6EgTu8psMjkvj52pCf")


def _refused(doc: dict[str, Any]) -> PolicyDocumentError:
    with pytest.raises(PolicyDocumentError) as info:
        policy_from_object(doc)
    return info.value


# -- rules.freeze.denials ---------------------------------------------------------------------------------------------


def test_a_null_denial_burst_turns_the_trigger_off() -> None:
    doc = example_policy()
    doc["rules"]["freeze"]["denials"] = None
    assert policy_from_object(doc).rules.freeze.denials is None
    assert policy_from_object(example_policy()).rules.freeze.denials == DenialBurst(count=5, window_seconds=600)


@pytest.mark.parametrize(
    ("denials", "field", "reason"),
    [
        ([], "rules.freeze.denials", "must be an object"),
        ({"count": 5}, "rules.freeze.denials.window_seconds", "required field is missing"),
        ({"count": 5, "window_seconds": 600, "every": 1}, "rules.freeze.denials.every", "unknown field"),
        ({"count": 5, "window_seconds": 0}, "rules.freeze.denials.window_seconds", "between 1 and 2678400"),
        ({"count": 10_001, "window_seconds": 60}, "rules.freeze.denials.count", "between 1 and 10000"),
    ],
)
def test_a_malformed_denial_burst_is_named(denials: object, field: str, reason: str) -> None:
    doc = example_policy()
    doc["rules"]["freeze"]["denials"] = denials
    error = _refused(doc)
    assert error.field == field
    assert reason in error.reason


# -- every object, list and field of a document that uses every rule ------------------------------------------------

_OPTIONAL = {("expires_at",), ("rules", "fees", "periods")}


def _full_document() -> dict[str, Any]:
    """The example with every rule in use: a time window, a lookup table, durable nonces, a multisig, an expiry."""
    doc = example_policy()
    rules = doc["rules"]
    rules["time_windows"] = [{"days": ["mon", "fri"], "start": "09:00", "end": "17:30"}]
    rules["lookup_tables"] = [{"address": str(TABLE), "addresses": [str(MERCHANT), str(TREASURY)]}]
    rules["durable_nonce"] = {"allowed": True, "nonce_accounts": [str(NONCE)]}
    rules["squads_multisig"] = str(MULTISIG)
    doc["expires_at"] = 2_000_000_000
    return doc


def _field(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


_FULL = _full_document()
_OBJECTS = [p for p in value_paths(_FULL)[1:] if isinstance(_at(_FULL, p), dict)]
_LISTS = [p for p in value_paths(_FULL)[1:] if isinstance(_at(_FULL, p), list)]
_KEYS = [(*p, key) for p in [(), *_OBJECTS] for key in _at(_FULL, p)]


def test_the_document_that_uses_every_rule_parses() -> None:
    policy = policy_from_object(_full_document())
    assert policy.rules.lookup_tables == {TABLE: (MERCHANT, TREASURY)}
    assert policy.rules.squads_multisig == MULTISIG
    assert policy.expires_at == 2_000_000_000
    assert (len(_OBJECTS), len(_LISTS)) == (17, 13)  # what the parametrized tests below walk


@pytest.mark.parametrize("path", _OBJECTS, ids=_field)
def test_every_object_of_the_document_refuses_a_list_naming_itself(path: tuple[Any, ...]) -> None:
    doc = _full_document()
    replace_at(doc, path, [])
    error = _refused(doc)
    assert (error.field, error.reason) == (_field(path), "must be an object")


@pytest.mark.parametrize("path", _LISTS, ids=_field)
def test_every_list_of_the_document_refuses_an_object_naming_itself(path: tuple[Any, ...]) -> None:
    doc = _full_document()
    replace_at(doc, path, {})
    error = _refused(doc)
    assert (error.field, error.reason) == (_field(path), "must be a list")


@pytest.mark.parametrize("path", [p for p in _KEYS if p not in _OPTIONAL], ids=_field)
def test_every_required_field_is_named_when_missing(path: tuple[Any, ...]) -> None:
    doc = _full_document()
    del _at(doc, path[:-1])[path[-1]]
    error = _refused(doc)
    assert (error.field, error.reason) == (_field(path), "required field is missing")


@pytest.mark.parametrize("path", [(), *_OBJECTS], ids=lambda p: _field(p) or "root")
def test_every_object_names_an_unknown_field(path: tuple[Any, ...]) -> None:
    doc = _full_document()
    _at(doc, path)["surplus"] = 1
    error = _refused(doc)
    assert (error.field, error.reason) == (_field((*path, "surplus")), "unknown field")


def test_the_optional_fields_may_be_left_out() -> None:
    doc = _full_document()
    del doc["expires_at"]
    del doc["rules"]["fees"]["periods"]
    policy = policy_from_object(doc)
    assert (policy.expires_at, policy.rules.fees.periods) == (None, ())


# -- numbers past 2^53-1, and what the parser derives -----------------------------------------------------------------


@pytest.mark.parametrize("field", ["sequence", "expires_at"])
def test_a_number_past_the_portable_range_says_why(field: str) -> None:
    """The reason is part of the message (docs/policies.md: sequences and expiry times are at most 2^53-1 because
    larger JSON numbers are not read exactly everywhere)."""
    doc = example_policy()
    doc[field] = 2**53
    error = _refused(doc)
    assert error.field == field
    assert (
        error.reason == "must be between 1 and 9007199254740991 (larger JSON numbers are not read exactly everywhere)"
    )
    doc[field] = 0
    assert _refused(doc).reason == f"must be between 1 and {2**53 - 1}"


def test_fees_are_reserved_only_when_the_fee_rule_has_periods() -> None:
    with_periods = policy_from_object(example_policy())
    assert with_periods.periods_by_asset[FEES] == with_periods.rules.fees.periods
    doc = example_policy()
    del doc["rules"]["fees"]["periods"]
    policy = policy_from_object(doc)
    assert FEES not in policy.periods_by_asset
    assert all(asset != FEES for asset, _ in policy.spend_windows())


# -- list bounds ------------------------------------------------------------------------------------------------------

_ADDRESSES = [str(Pubkey.new_unique()) for _ in range(MAX_LIST_ITEMS + 1)]


def _windows(count: int) -> list[dict[str, Any]]:
    return [{"days": ["mon"], "start": f"{m // 60:02d}:{m % 60:02d}", "end": "24:00"} for m in range(count)]


_LIST_RULES: list[tuple[str, Any]] = [
    ("rules.destinations.allow", lambda n: _ADDRESSES[:n]),
    ("rules.destinations.deny", lambda n: _ADDRESSES[:n]),
    ("rules.programs", lambda n: _ADDRESSES[:n]),
    ("rules.mints", lambda n: [str(EXAMPLE_MINT), *_ADDRESSES[: n - 1]]),
    ("rules.durable_nonce.nonce_accounts", lambda n: _ADDRESSES[:n]),
    ("rules.time_windows", _windows),
    ("rules.lookup_tables", lambda n: [{"address": a, "addresses": [str(MERCHANT)]} for a in _ADDRESSES[:n]]),
    ("rules.lookup_tables.0.addresses", lambda n: _ADDRESSES[:n]),
]


@pytest.mark.parametrize(("path", "make"), _LIST_RULES, ids=[p for p, _ in _LIST_RULES])
def test_every_list_rule_takes_256_entries_and_refuses_257(path: str, make: Any) -> None:
    """MAX_LIST_ITEMS, the schema's ``maxItems`` of every list rule."""
    assert MAX_LIST_ITEMS == 256
    parts = tuple(int(p) if p.isdigit() else p for p in path.split("."))
    for count, refused in ((MAX_LIST_ITEMS, False), (MAX_LIST_ITEMS + 1, True)):
        doc = _full_document()
        replace_at(doc, parts, make(count))
        if not refused:
            policy_from_object(doc)
            continue
        error = _refused(doc)
        assert (error.field, error.reason) == (_field(parts), "more than 256 entries")


# -- the strict JSON reader's bounds, and the canonical form ----------------------------------------------------------


def _padded(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    text = b'{"a":""}'
    return text[:-2] + b"x" * (size - len(text)) + b'"}'


def test_a_document_of_exactly_the_largest_size_is_read() -> None:
    """65536 bytes: the number the schema's description gives (docs/policies.md: 64 KiB)."""
    assert parse_json_object(_padded(65_536)) == {"a": "x" * (65_536 - 8)}
    with pytest.raises(PolicyDocumentError, match=r"^document: larger than 65536 bytes$"):
        parse_json_object(_padded(65_537))


@pytest.mark.parametrize("character", ["\u00e9", "\u20ac", "\U0001f600"], ids=["2-byte", "3-byte", "4-byte"])
def test_text_is_bounded_by_its_utf8_size_as_bytes_are(character: str) -> None:
    """The bound is 65536 bytes of UTF-8 for text as for bytes (text was measured in characters: a document of
    multi-byte characters up to four times the bound was read)."""
    width = len(character.encode())
    fill = character * ((65_536 - 8) // width) + "x" * ((65_536 - 8) % width)
    largest = '{"a":"' + fill + '"}'
    assert len(largest.encode()) == 65_536 and len(largest) < 65_536
    for data in (largest, largest.encode()):
        assert parse_json_object(data) == {"a": fill}
    over = largest[:-2] + 'x"}'
    for data in (over, over.encode()):
        with pytest.raises(PolicyDocumentError, match=r"^document: larger than 65536 bytes$"):
            parse_json_object(data)


def test_nesting_is_read_to_sixteen_levels_and_refused_at_seventeen() -> None:
    assert MAX_NESTING == 16
    deepest = b'{"a":' + b"[" * 16 + b"]" * 16 + b"}"
    assert parse_json_object(deepest)["a"] == [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]
    with pytest.raises(PolicyDocumentError, match=r"^policy: nesting deeper than 16$"):
        parse_json_object(b'{"a":' + b"[" * 17 + b"]" * 17 + b"}", what="policy")
    with pytest.raises(PolicyDocumentError, match="nesting deeper than 16"):
        parse_json_object(b'{"a":' + b'{"b":' * 16 + b"1" + b"}" * 16 + b"}")


@pytest.mark.parametrize("digits", ["18446744073709551615", "99999999999999999999", "-99999999999999999999"])
def test_integers_of_twenty_digits_are_read(digits: str) -> None:
    assert parse_json_object(f'{{"a": {digits}}}') == {"a": int(digits)}


@pytest.mark.parametrize("text", ['{"a": 100000000000000000000}', '{"a": -100000000000000000000}'])
def test_an_integer_of_twenty_one_digits_is_refused(text: str) -> None:
    with pytest.raises(PolicyDocumentError, match=r"^document: integer with more than 20 digits$"):
        parse_json_object(text)


@pytest.mark.parametrize(
    "text",
    ['{"\\ud800": 1}', '{"a": "\\udfff"}', '{"a": ["x", "\\ud800"]}', '{"a": {"b": "\\ud83d"}}'],
)
def test_a_lone_surrogate_is_refused_in_keys_and_values_at_any_depth(text: str) -> None:
    with pytest.raises(PolicyDocumentError) as info:
        parse_json_object(text)
    assert (info.value.field, info.value.reason) == ("document", LONE_SURROGATE)
    assert LONE_SURROGATE.startswith("a string with a lone surrogate")


def test_text_holding_a_lone_surrogate_itself_is_refused_as_one() -> None:
    """Not the JSON escape: the character in the text (Python text can hold one; no UTF-8 can), measured and refused
    like the escape, not an encoding error."""
    with pytest.raises(PolicyDocumentError) as info:
        parse_json_object('{"a": "\ud800"}')
    assert (info.value.field, info.value.reason) == ("document", LONE_SURROGATE)


def test_a_surrogate_pair_is_one_character_and_read() -> None:
    assert parse_json_object('{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}


def test_the_canonical_form_keeps_text_as_utf8_and_refuses_what_json_cannot_hold() -> None:
    assert canonical_bytes({"a": "é", "b": [None, False, -1]}) == '{"a":"é","b":[null,false,-1]}'.encode()
    cases: list[tuple[dict[Any, Any], str, str]] = [
        ({"a": {"b": [1, "\ud800"]}}, "a.b[1]", LONE_SURROGATE),
        ({"a": [{1: 2}]}, "a[0]", "key 1 must be an ASCII string"),
        ({"a": {"b": 1.5}}, "a.b", "floats have no canonical form"),
        ({"a": (1, 2)}, "a", "tuple is not a JSON value"),
    ]
    for value, field, reason in cases:
        with pytest.raises(PolicyDocumentError) as info:
            canonical_bytes(value)
        assert (info.value.field, info.value.reason) == (field, reason)
