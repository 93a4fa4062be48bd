"""The published JSON Schema (policies/schema/policy-v1.schema.json) never refuses what the parser accepts, and says
what the parser refuses that it cannot express.

Policy-schema review (twenty-first session): the schema accepted amounts above 2^64-1, duplicate limits, periods,
time windows and lookup tables, and more than 64 periods in one list, all of which the parser refuses, without
saying so; its rules are now in the schema where JSON Schema can state them, and listed in its ``description`` and
in docs/policies.md ("Rules the schema cannot express") where it cannot.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from solders.pubkey import Pubkey

from policies.document import MAX_SPEND_WINDOWS, MAX_WINDOW_SECONDS, parse_policy
from policies.errors import PolicyDocumentError
from policies.fees import MAX_COMPUTE_UNIT_LIMIT
from policies.json_fields import U64_MAX, _amount
from tests.support.policies import example_policy, policy_schema, replace_at, value_paths

SCHEMA = policy_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
MAX_SAFE_INT = 2**53 - 1

ADDRESSES = [str(Pubkey.new_unique()) for _ in range(8)] + [
    "11111111111111111111111111111111",  # 32 characters (32 zero bytes)
    "So11111111111111111111111111111111111111112",
    "FHEqRxoKaHqjfmpq5sDHwcTRetKh7uJny2UVN4pcd24J",  # 44 characters
]
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _parses(text: str) -> bool:
    try:
        parse_policy(text)
    except PolicyDocumentError:
        return False
    return True


# -- the schema's own rules ------------------------------------------------------------------------------------------


def test_the_rules_the_schema_cannot_express_are_listed_where_it_says() -> None:
    description = SCHEMA["description"]
    for rule in ("65536 bytes", "duplicate keys", "1.0, 1e0, -0.0", "automatic at most its approval",
                 "decodes to 32 bytes", "start before its end", "one limit per asset", "rule ids unique",
                 "window_seconds unique", "at most 64 periods", "pinned once"):  # fmt: skip
        assert rule in description, rule
    assert "Rules the schema cannot express" in description


AMOUNT = SCHEMA["$defs"]["amount"]["pattern"]


def _amount_ok(text: str) -> bool:
    try:
        _amount(text, "a")
    except PolicyDocumentError:
        return False
    return True


@settings(max_examples=500)
@given(
    st.one_of(
        st.integers(0, 2 * U64_MAX).map(str),
        st.integers(U64_MAX - 10**6, U64_MAX + 10**6).map(str),
        st.integers(0, 10**19).map(lambda n: f"0{n}"),
        st.text("0123456789", min_size=1, max_size=21),
    )
)
@example(str(U64_MAX))
@example(str(U64_MAX + 1))
@example("0")
@example("00")
@example("99999999999999999999")
@example("18446744073709551609")
@example("18446744073709551620")
def test_the_amount_pattern_is_the_parsers_u64_range(text: str) -> None:
    """The pattern reads as ECMA-262 does (``$`` the end of the string: Python's fullmatch)."""
    assert (re.fullmatch(AMOUNT, text) is not None) is _amount_ok(text)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("rules.limits.0.per_transaction.approval", "18446744073709551616"),  # above 2^64-1
        ("rules.limits", "dup"),
        ("rules.limits.0.periods", "dup"),
        ("rules.fees.periods", "dup"),
        ("rules.time_windows", [{"days": ["mon"], "start": "09:00", "end": "17:00"}] * 2),
        ("rules.lookup_tables", [{"address": ADDRESSES[0], "addresses": [ADDRESSES[1]]}] * 2),
        (
            "rules.limits.0.periods",
            [
                {"id": f"p{i}", "window_seconds": 60 + i, "automatic": "1", "approval": "2"}
                for i in range(MAX_SPEND_WINDOWS + 1)
            ],
        ),
        ("rules.fees.max_total_fee_lamports", MAX_SAFE_INT + 1),
        ("rules.destinations.deny", ["z" * 45]),
    ],
)
def test_what_json_schema_can_state_the_schema_refuses_as_the_parser_does(path: str, value: Any) -> None:
    """Before: the schema accepted each of these; the parser refused them."""
    doc = example_policy()
    *parents, last = path.split(".")
    target: Any = doc
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value == "dup":
        value = [*target[last], target[last][0]]
    target[last] = value
    assert not _parses(json.dumps(doc))
    assert not VALIDATOR.is_valid(doc)


# -- every document the parser accepts passes the schema -------------------------------------------------------------

ident = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
address = st.sampled_from(ADDRESSES)
window = st.one_of(st.integers(1, MAX_WINDOW_SECONDS), st.sampled_from([1, MAX_WINDOW_SECONDS]))
big = st.one_of(st.integers(0, U64_MAX), st.sampled_from([0, 1, MAX_SAFE_INT, MAX_SAFE_INT + 1, U64_MAX]))


@st.composite
def tier(draw: st.DrawFn) -> dict[str, str]:
    low, high = sorted((draw(big), draw(big)))
    return {"automatic": str(low), "approval": str(high)}


@st.composite
def periods(draw: st.DrawFn, ids: list[str]) -> list[dict[str, Any]]:
    windows = draw(st.lists(window, min_size=len(ids), max_size=len(ids), unique=True))
    return [{"id": i, "window_seconds": w, **draw(tier())} for i, w in zip(ids, windows, strict=True)]


@st.composite
def hhmm_window(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(st.integers(0, 1439))
    end = draw(st.integers(start + 1, 1440))

    def spell(m: int) -> str:
        return "24:00" if m == 1440 else f"{m // 60:02d}:{m % 60:02d}"

    days = draw(st.lists(st.sampled_from(DAYS), min_size=1, max_size=7, unique=True))
    return {"days": days, "start": spell(start), "end": spell(end)}


def _unique_windows(windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for w in windows:
        key = (frozenset(w["days"]), w["start"], w["end"])
        if key not in seen:
            seen.add(key)
            out.append(w)
    return out


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """Documents built to satisfy every rule, with values at the edges of each range."""
    mints = draw(st.lists(address, max_size=3, unique=True))
    assets = (["SOL"] if draw(st.booleans()) else []) + (
        draw(st.lists(st.sampled_from(mints), unique=True)) if mints else []
    )
    counts = [draw(st.integers(0, 3)) for _ in assets]
    ids = draw(st.lists(ident, min_size=len(assets) + sum(counts), max_size=len(assets) + sum(counts), unique=True))
    limits, at = [], len(assets)
    for asset, count, limit_id in zip(assets, counts, ids, strict=False):
        limits.append({"id": limit_id, "asset": asset, "per_transaction": draw(tier()),
                       "periods": draw(periods(ids[at:at + count]))})  # fmt: skip
        at += count
    fees: dict[str, Any] = {
        "max_compute_unit_price": draw(st.one_of(st.integers(0, MAX_SAFE_INT), st.just(MAX_SAFE_INT))),
        "max_compute_unit_limit": draw(st.one_of(st.integers(0, MAX_COMPUTE_UNIT_LIMIT), st.just(0))),
        "max_total_fee_lamports": draw(st.one_of(st.integers(0, MAX_SAFE_INT), st.just(MAX_SAFE_INT))),
    }
    if draw(st.booleans()):
        fees["periods"] = draw(periods(draw(st.lists(ident, max_size=3, unique=True))))
    nonce_allowed = draw(st.booleans())
    tables = draw(st.lists(address, max_size=3, unique=True))
    doc: dict[str, Any] = {
        "version": 1,
        "wallet_id": draw(ident),
        "sequence": draw(st.one_of(st.integers(1, MAX_SAFE_INT), st.just(MAX_SAFE_INT))),
        "rules": {
            "limits": limits,
            "destinations": {
                "allow": draw(st.one_of(st.just("any"), st.lists(address, max_size=4, unique=True))),
                "deny": draw(st.lists(address, max_size=4, unique=True)),
            },
            "programs": draw(st.lists(address, max_size=4, unique=True)),
            "mints": mints,
            "fees": fees,
            "rate": {"max_requests": draw(st.integers(1, 1_000_000)), "window_seconds": draw(window)},
            "time_windows": draw(
                st.one_of(st.just("any"), st.lists(hhmm_window(), min_size=1, max_size=3).map(_unique_windows))
            ),
            "durable_nonce": {
                "allowed": nonce_allowed,
                "nonce_accounts": draw(st.lists(address, min_size=int(nonce_allowed), max_size=3, unique=True)),
            },
            "freeze": {
                "on_authority_change": draw(st.booleans()),
                "on_delegate_approval": draw(st.booleans()),
                "on_close_to_stranger": draw(st.booleans()),
                "denials": draw(
                    st.one_of(
                        st.none(), st.fixed_dictionaries({"count": st.integers(1, 10_000), "window_seconds": window})
                    )
                ),
            },
            "squads_multisig": draw(st.one_of(st.none(), address)),
            "lookup_tables": [
                {"address": t, "addresses": draw(st.lists(address, min_size=1, max_size=3))} for t in tables
            ],
            "offchain_messages": {"allowed": draw(st.booleans())},
        },
    }
    if draw(st.booleans()):
        doc["expires_at"] = draw(st.one_of(st.integers(1, MAX_SAFE_INT), st.just(MAX_SAFE_INT)))
    return doc


JUNK: list[object] = [
    None,
    True,
    0,
    -1,
    1,
    2**53,
    U64_MAX,
    "",
    "any",
    "SOL",
    [],
    {},
    "1",
    "24:00",
    ADDRESSES[0],
    "a" * 65,
]
FLOAT = "\x00float\x00"  # written into the text as a float literal


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(documents(), st.data())
def test_every_document_the_parser_accepts_passes_the_schema(doc: dict[str, Any], data: st.DataObject) -> None:
    """Documents that keep every rule parse and pass the schema; each of them mutated (a value at any path replaced
    by another of any type, or by a float literal such as ``1.0``) passes the schema whenever the parser accepts it."""
    text = json.dumps(doc)
    assert _parses(text), text
    assert VALIDATOR.is_valid(doc), next(iter(VALIDATOR.iter_errors(doc))).message

    path = data.draw(st.sampled_from(value_paths(doc)[1:]))
    replace_at(doc, path, data.draw(st.sampled_from([*JUNK, FLOAT])))
    literal = data.draw(st.sampled_from(["1.0", "1e0", "-0.0", "60.0", "0"]))
    mutated = json.dumps(doc).replace(json.dumps(FLOAT), literal)
    if _parses(mutated):
        assert VALIDATOR.is_valid(json.loads(mutated)), mutated
