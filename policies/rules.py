"""The rules of a parsed policy document, as frozen values (DESIGN.md section 5).

`policies.document` builds these from JSON and checks every field; the evaluator reads them. Amounts are raw
units (lamports or token base units). ``ANY`` marks a list rule the owner explicitly opened ("any").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from solders.pubkey import Pubkey

AnyMarker = Literal["any"]
ANY: Final[AnyMarker] = "any"


@dataclass(frozen=True, slots=True)
class Tier:
    """Amounts up to ``automatic`` are allowed; up to ``approval`` escalate to the owner; above, denied."""

    automatic: int
    approval: int


@dataclass(frozen=True, slots=True)
class PeriodLimit:
    id: str
    window_seconds: int
    tier: Tier


@dataclass(frozen=True, slots=True)
class AssetLimit:
    """Limits for one asset: ``asset`` is "SOL" or a mint address in base58."""

    id: str
    asset: str
    per_transaction: Tier
    periods: tuple[PeriodLimit, ...]


@dataclass(frozen=True, slots=True)
class DestinationRules:
    """``allow`` is ANY or a set of addresses; token destinations also match the owners' associated accounts."""

    allow: frozenset[Pubkey] | AnyMarker
    deny: frozenset[Pubkey]


@dataclass(frozen=True, slots=True)
class FeeCaps:
    max_compute_unit_price: int
    """Micro-lamports per compute unit."""
    max_compute_unit_limit: int
    max_total_fee_lamports: int
    periods: tuple[PeriodLimit, ...] = ()
    """Rolling windows over the fees wallet keys pay (lamports, under the asset ``policies.model.FEES``, reserved
    whatever the policy), tiered like the asset limits' periods; rule ids ``fees.periods.<id>``. None: fees are
    bounded only by ``max_total_fee_lamports`` times the request rate."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    max_requests: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Requests are accepted on ``days`` (0 = Monday) from ``start_minute`` (inclusive) to ``end_minute``
    (exclusive), minutes after midnight UTC; ``end_minute`` may be 1440."""

    days: frozenset[int]
    start_minute: int
    end_minute: int


@dataclass(frozen=True, slots=True)
class DurableNonceRule:
    allowed: bool
    nonce_accounts: frozenset[Pubkey]


@dataclass(frozen=True, slots=True)
class DenialBurst:
    count: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class FreezeTriggers:
    on_authority_change: bool
    on_delegate_approval: bool
    on_close_to_stranger: bool
    denials: DenialBurst | None


@dataclass(frozen=True, slots=True)
class Rules:
    limits: tuple[AssetLimit, ...]
    destinations: DestinationRules
    programs: frozenset[Pubkey]
    mints: frozenset[str]
    fees: FeeCaps
    rate: RateLimit
    time_windows: tuple[TimeWindow, ...] | AnyMarker
    durable_nonce: DurableNonceRule
    freeze: FreezeTriggers
    squads_multisig: Pubkey | None
    """The wallet's Squads v4 multisig, declared by the owner; None: the wallet uses no Squads instruction."""
    offchain_messages: bool
    """Whether the agent key may sign Solana off-chain messages (logins, off-chain orders) at all."""
    lookup_tables: Mapping[Pubkey, tuple[Pubkey, ...]]
    """Address lookup tables the owner pinned: address -> the contents (a prefix of the table, which only grows).
    v0 messages are resolved from these pins only (`policies.lookup_tables`)."""
