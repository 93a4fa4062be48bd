"""Policy documents: parse and validate the owner's JSON policy into a `Policy` (DESIGN.md section 5).

A document is a JSON object ``{"version": 1, "wallet_id": ..., "sequence": ..., "rules": {...}}``, optionally with
``"expires_at"`` (Unix seconds: from then on the policy denies everything); its JSON Schema is
``policies/schema/policy-v1.schema.json``. Every rule section is required: nothing is permissive by omission,
and an explicit ``"any"`` is the only way to open a list rule. Every error names the field and the reason.

Owner signatures over documents are in `policies.signing`; the readers of single fields (objects, integers,
amounts, addresses, lists) in `policies.json_fields`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from solders.pubkey import Pubkey

from policies.canonical import canonical_bytes, parse_json_object
from policies.errors import PolicyDocumentError
from policies.fees import MAX_COMPUTE_UNIT_LIMIT
from policies.json_fields import (
    _amount,
    _any_or,
    _bool,
    _ident,
    _int,
    _join,
    _list,
    _obj,
    read_pubkey,
    read_wallet_id,
)
from policies.model import FEES, NATIVE_SOL
from policies.programs import (
    TOKEN_2022_PROGRAM,
    TOKEN_PROGRAM,
    WRAPPED_SOL_MINTS,
    associated_token_address,
)
from policies.rules import (
    ANY,
    AssetLimit,
    DenialBurst,
    DestinationRules,
    DurableNonceRule,
    FeeCaps,
    FreezeTriggers,
    PeriodLimit,
    RateLimit,
    Rules,
    Tier,
    TimeWindow,
)

SCHEMA_VERSION = 1
MAX_SAFE_INT = 2**53 - 1
"""Largest integer every JSON implementation reads exactly, and the largest any number of a document may be
(sequences, expiry times, the fee caps): above it, an implementation that reads numbers as doubles (JavaScript, RFC
8785's canonical form) reads and writes another number, so the owner's tool and the signer would sign and check
different canonical bytes. Amounts, which go up to 2^64-1, are decimal strings for that reason."""
_NOT_PORTABLE = "larger JSON numbers are not read exactly everywhere"
MAX_WINDOW_SECONDS = 31 * 24 * 3600
"""Longest rolling window: 31 days. Longer windows would make the state store keep too much history."""
MAX_SPEND_WINDOWS = 64
"""Most (asset, window) pairs a policy may count in, over its limits' periods and the fee periods: each signing request
carries the spent total of every one to the enclave (`enclave_app.protocol_wire.MAX_SPENT_ENTRIES` is this), so a
policy past it could never sign."""

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])\Z|^24:00\Z")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy document. ``canonical`` is the exact byte string an owner signature covers
    (without the domain prefix, see `policies.signing`)."""

    version: int
    wallet_id: str
    sequence: int
    expires_at: int | None
    """Unix seconds from which the policy denies everything (None: no expiry). It bounds how long an older policy
    can be reinstalled by a hostile parent after an enclave restart (docs/policies.md, Expiry)."""
    rules: Rules
    canonical: bytes = field(repr=False)
    limit_by_asset: dict[str, AssetLimit] = field(repr=False)
    periods_by_asset: dict[str, tuple[PeriodLimit, ...]] = field(repr=False)
    """Every asset the evaluation reserves, with its rolling windows: each limit's asset and, when the fee rule
    has periods, ``FEES``. Callers that count, reserve or show spending windows read this, never ``rules.limits``
    alone."""
    allowed_token_accounts: frozenset[Pubkey] = field(repr=False)
    denied_token_accounts: frozenset[Pubkey] = field(repr=False)
    denied_wrapped_sol_accounts: frozenset[Pubkey] = field(repr=False)
    """The denied owners' wrapped-SOL associated accounts (SPL Token and Token-2022): lamports sent there become the
    owner's SOL (SyncNative, then CloseAccount), so a SOL outflow there is an outflow to the owner."""

    def expired(self, now: datetime) -> bool:
        """Whether the policy has expired at ``now`` (it denies everything from ``expires_at`` on)."""
        return self.expires_at is not None and now.timestamp() >= self.expires_at

    def spend_windows(self) -> tuple[tuple[str, int], ...]:
        """Every (asset, window_seconds) whose spent-and-reserved total the evaluation context must supply."""
        return tuple((asset, p.window_seconds) for asset, periods in self.periods_by_asset.items() for p in periods)


# ----------------------------------------------------------------------------------------------------------------
# Rule readers: each takes the containing object and its path, and raises PolicyDocumentError naming the field.


def _tier(value: Any, path: str) -> Tier:
    obj = _obj(value, path, ("automatic", "approval"))
    automatic = _amount(obj["automatic"], _join(path, "automatic"))
    approval = _amount(obj["approval"], _join(path, "approval"))
    if automatic > approval:
        raise PolicyDocumentError(path, "automatic must not exceed approval")
    return Tier(automatic, approval)


def _period(value: Any, path: str) -> PeriodLimit:
    obj = _obj(value, path, ("id", "window_seconds", "automatic", "approval"))
    window = _int(obj["window_seconds"], _join(path, "window_seconds"), minimum=1, maximum=MAX_WINDOW_SECONDS)
    tier = _tier({"automatic": obj["automatic"], "approval": obj["approval"]}, path)
    return PeriodLimit(_ident(obj["id"], _join(path, "id")), window, tier)


def _asset(value: Any, path: str) -> str:
    if value == NATIVE_SOL:
        return NATIVE_SOL
    return str(read_pubkey(value, path))


def _periods(value: Any, path: str) -> tuple[PeriodLimit, ...]:
    periods = _list(value, path, _period)
    windows = [p.window_seconds for p in periods]
    if len(set(windows)) != len(windows):
        raise PolicyDocumentError(path, "two periods have the same window_seconds")
    return tuple(periods)


def _limit(value: Any, path: str) -> AssetLimit:
    obj = _obj(value, path, ("id", "asset", "per_transaction", "periods"))
    periods = _periods(obj["periods"], _join(path, "periods"))
    return AssetLimit(
        id=_ident(obj["id"], _join(path, "id")),
        asset=_asset(obj["asset"], _join(path, "asset")),
        per_transaction=_tier(obj["per_transaction"], _join(path, "per_transaction")),
        periods=periods,
    )


def _window(value: Any, path: str) -> TimeWindow:
    obj = _obj(value, path, ("days", "start", "end"))
    days = _list(obj["days"], _join(path, "days"), _day)
    if not days:
        raise PolicyDocumentError(_join(path, "days"), "must name at least one day")
    start = _minute(obj["start"], _join(path, "start"))
    end = _minute(obj["end"], _join(path, "end"))
    if start >= end:
        raise PolicyDocumentError(path, "start must be before end (windows do not wrap past midnight)")
    return TimeWindow(frozenset(days), start, end)


def _day(value: Any, path: str) -> int:
    if value not in _DAYS:
        raise PolicyDocumentError(path, f"must be one of {', '.join(_DAYS)}")
    return _DAYS.index(value)


def _minute(value: Any, path: str) -> int:
    match = _HHMM.match(value) if isinstance(value, str) else None
    if not match:
        raise PolicyDocumentError(path, "must be a UTC time HH:MM (00:00 to 24:00)")
    if value == "24:00":
        return 1440
    return int(match.group(1)) * 60 + int(match.group(2))


def _fees(value: Any, path: str) -> FeeCaps:
    keys = ("max_compute_unit_price", "max_compute_unit_limit", "max_total_fee_lamports")
    obj = _obj(value, path, keys, optional=("periods",))
    periods = _periods(obj["periods"], _join(path, "periods")) if "periods" in obj else ()
    ids = [p.id for p in periods]
    for i, rule_id in enumerate(ids):
        if rule_id in ids[:i]:
            raise PolicyDocumentError(f"{path}.periods[{i}].id", f"rule id {rule_id!r} is used twice")
    return FeeCaps(
        max_compute_unit_price=_int(
            obj[keys[0]], _join(path, keys[0]), minimum=0, maximum=MAX_SAFE_INT, why=_NOT_PORTABLE
        ),
        max_compute_unit_limit=_int(obj[keys[1]], _join(path, keys[1]), minimum=0, maximum=MAX_COMPUTE_UNIT_LIMIT),
        max_total_fee_lamports=_int(
            obj[keys[2]], _join(path, keys[2]), minimum=0, maximum=MAX_SAFE_INT, why=_NOT_PORTABLE
        ),
        periods=periods,
    )


def _freeze(value: Any, path: str) -> FreezeTriggers:
    flags = ("on_authority_change", "on_delegate_approval", "on_close_to_stranger")
    obj = _obj(value, path, (*flags, "denials"))
    denials = None
    if obj["denials"] is not None:
        d = _obj(obj["denials"], _join(path, "denials"), ("count", "window_seconds"))
        denials = DenialBurst(
            count=_int(d["count"], _join(path, "denials.count"), minimum=1, maximum=10_000),
            window_seconds=_int(
                d["window_seconds"],
                _join(path, "denials.window_seconds"),
                minimum=1,
                maximum=MAX_WINDOW_SECONDS,
            ),
        )
    on = {f: _bool(obj[f], _join(path, f)) for f in flags}
    return FreezeTriggers(
        on_authority_change=on["on_authority_change"],
        on_delegate_approval=on["on_delegate_approval"],
        on_close_to_stranger=on["on_close_to_stranger"],
        denials=denials,
    )


def _lookup_table(value: Any, path: str) -> tuple[Pubkey, tuple[Pubkey, ...]]:
    obj = _obj(value, path, ("address", "addresses"))
    addresses = _list(obj["addresses"], _join(path, "addresses"), read_pubkey, unique=False)
    if not addresses:
        raise PolicyDocumentError(_join(path, "addresses"), "must pin at least one address")
    return read_pubkey(obj["address"], _join(path, "address")), tuple(addresses)


def _lookup_tables(value: Any, path: str) -> dict[Pubkey, tuple[Pubkey, ...]]:
    tables = _list(value, path, _lookup_table, unique=False)
    pinned: dict[Pubkey, tuple[Pubkey, ...]] = {}
    for i, (address, addresses) in enumerate(tables):
        if address in pinned:
            raise PolicyDocumentError(f"{path}[{i}].address", "this table is already pinned")
        pinned[address] = addresses
    return pinned


def _rules(value: Any, path: str) -> Rules:
    sections = (
        "limits",
        "destinations",
        "programs",
        "mints",
        "fees",
        "rate",
        "time_windows",
        "durable_nonce",
        "freeze",
        "squads_multisig",
        "lookup_tables",
        "offchain_messages",
    )
    obj = _obj(value, path, sections)
    limits = _list(obj["limits"], _join(path, "limits"), _limit)
    assets = [lim.asset for lim in limits]
    for i, asset in enumerate(assets):
        if asset in assets[:i]:
            raise PolicyDocumentError(f"{path}.limits[{i}].asset", f"a limit for {asset} is already defined")
    ids = [lim.id for lim in limits] + [p.id for lim in limits for p in lim.periods]
    for rule_id in ids:
        if ids.count(rule_id) > 1:
            raise PolicyDocumentError(_join(path, "limits"), f"rule id {rule_id!r} is used twice")

    dest = _obj(obj["destinations"], _join(path, "destinations"), ("allow", "deny"))
    allow = _any_or(dest["allow"], _join(path, "destinations.allow"), read_pubkey)
    rate = _obj(obj["rate"], _join(path, "rate"), ("max_requests", "window_seconds"))
    nonce = _obj(obj["durable_nonce"], _join(path, "durable_nonce"), ("allowed", "nonce_accounts"))
    nonce_accounts = _list(nonce["nonce_accounts"], _join(path, "durable_nonce.nonce_accounts"), read_pubkey)
    nonce_allowed = _bool(nonce["allowed"], _join(path, "durable_nonce.allowed"))
    if nonce_allowed and not nonce_accounts:
        raise PolicyDocumentError(_join(path, "durable_nonce.nonce_accounts"), "must list the allowed nonce accounts")
    windows = _any_or(obj["time_windows"], _join(path, "time_windows"), _window)
    if windows != ANY and not windows:
        raise PolicyDocumentError(_join(path, "time_windows"), 'must be "any" or at least one window')

    return Rules(
        limits=tuple(limits),
        destinations=DestinationRules(
            allow=ANY if allow == ANY else frozenset(allow),
            deny=frozenset(_list(dest["deny"], _join(path, "destinations.deny"), read_pubkey)),
        ),
        programs=frozenset(_list(obj["programs"], _join(path, "programs"), read_pubkey)),
        mints=frozenset(str(m) for m in _list(obj["mints"], _join(path, "mints"), read_pubkey)),
        fees=_fees(obj["fees"], _join(path, "fees")),
        rate=RateLimit(
            max_requests=_int(rate["max_requests"], _join(path, "rate.max_requests"), minimum=1, maximum=1_000_000),
            window_seconds=_int(
                rate["window_seconds"],
                _join(path, "rate.window_seconds"),
                minimum=1,
                maximum=MAX_WINDOW_SECONDS,
            ),
        ),
        time_windows=ANY if windows == ANY else tuple(windows),
        durable_nonce=DurableNonceRule(nonce_allowed, frozenset(nonce_accounts)),
        freeze=_freeze(obj["freeze"], _join(path, "freeze")),
        squads_multisig=None
        if obj["squads_multisig"] is None
        else read_pubkey(obj["squads_multisig"], _join(path, "squads_multisig")),
        lookup_tables=_lookup_tables(obj["lookup_tables"], _join(path, "lookup_tables")),
        offchain_messages=_bool(
            _obj(obj["offchain_messages"], _join(path, "offchain_messages"), ("allowed",))["allowed"],
            _join(path, "offchain_messages.allowed"),
        ),
    )


def _token_accounts(owners: Iterable[Pubkey], mints: Iterable[str]) -> frozenset[Pubkey]:
    mint_keys = [Pubkey.from_string(m) for m in mints]
    return frozenset(
        associated_token_address(owner, mint, program)
        for owner in owners
        for mint in mint_keys
        for program in (TOKEN_PROGRAM, TOKEN_2022_PROGRAM)
    )


def policy_from_object(document: dict[str, Any]) -> Policy:
    """Validate a parsed JSON object as a policy document."""
    obj = _obj(document, "", ("version", "wallet_id", "sequence", "rules"), optional=("expires_at",))
    version = _int(obj["version"], "version", minimum=SCHEMA_VERSION, maximum=SCHEMA_VERSION)
    rules = _rules(obj["rules"], "rules")
    for i, lim in enumerate(rules.limits):
        if lim.asset != NATIVE_SOL and lim.asset not in rules.mints:
            raise PolicyDocumentError(f"rules.limits[{i}].asset", "this mint is not in rules.mints")
    allowed = rules.destinations.allow
    periods_by_asset = {lim.asset: lim.periods for lim in rules.limits}
    if rules.fees.periods:
        periods_by_asset[FEES] = rules.fees.periods
    windows = sum(len(periods) for periods in periods_by_asset.values())
    if windows > MAX_SPEND_WINDOWS:
        raise PolicyDocumentError(
            "rules.limits", f"{windows} spending windows (limit and fee periods together); at most {MAX_SPEND_WINDOWS}"
        )
    expires_at = None
    if "expires_at" in obj:  # optional, but never null
        expires_at = _int(obj["expires_at"], "expires_at", minimum=1, maximum=MAX_SAFE_INT, why=_NOT_PORTABLE)
    return Policy(
        version=version,
        wallet_id=read_wallet_id(obj["wallet_id"], "wallet_id"),
        sequence=_int(obj["sequence"], "sequence", minimum=1, maximum=MAX_SAFE_INT, why=_NOT_PORTABLE),
        expires_at=expires_at,
        rules=rules,
        canonical=canonical_bytes(document),
        limit_by_asset={lim.asset: lim for lim in rules.limits},
        periods_by_asset=periods_by_asset,
        allowed_token_accounts=frozenset() if allowed == ANY else _token_accounts(allowed, rules.mints),
        denied_token_accounts=_token_accounts(rules.destinations.deny, rules.mints),
        denied_wrapped_sol_accounts=frozenset(
            associated_token_address(owner, mint, program)
            for owner in rules.destinations.deny
            for mint, program in WRAPPED_SOL_MINTS
        ),
    )


def parse_policy(data: bytes | str) -> Policy:
    """Parse and validate a policy document from JSON text (unsigned; see `policies.signing` for signed ones)."""
    return policy_from_object(parse_json_object(data, what="policy"))
