"""Rolling-window arithmetic shared by the store adapters (the adapters supply the rows, atomically).

An amount counts against a window of ``w`` seconds while ``now - created_at < w``. Sums are exact Python ints,
so u64 amounts never overflow a backend's integer type.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from parent_proxy.errors import LimitExceeded

Entry = tuple[Mapping[str, int], float]
"""One live (pending or committed) reservation: its amounts per asset and its creation time."""


def encode_amounts(amounts: Iterable[tuple[str, int]]) -> str:
    """Amounts as canonical JSON with decimal-string values (u64 safe in every backend)."""
    return json.dumps({a: str(v) for a, v in amounts}, sort_keys=True, separators=(",", ":"))


def decode_amounts(text: str) -> dict[str, int]:
    return {a: int(v) for a, v in json.loads(text).items()}


def in_window(created_at: float, window_seconds: int, now: float) -> bool:
    return now - created_at < window_seconds


def window_total(entries: Iterable[Entry], asset: str, window_seconds: int, now: float) -> int:
    return sum(amounts.get(asset, 0) for amounts, created in entries if in_window(created, window_seconds, now))


def check_reservation(
    wallet_id: str,
    entries: list[Entry],
    amounts: tuple[tuple[str, int], ...],
    limits: Mapping[tuple[str, int], int],
    now: float,
) -> None:
    """Raise `LimitExceeded` if adding ``amounts`` to ``entries`` breaks any limit on an asset being spent."""
    wanted = dict(amounts)
    excess: dict[tuple[str, int], tuple[int, int]] = {}
    for (asset, window), cap in limits.items():
        if asset not in wanted:
            continue
        total = window_total(entries, asset, window, now) + wanted[asset]
        if total > cap:
            excess[(asset, window)] = (total, cap)
    if excess:
        raise LimitExceeded(wallet_id, excess)
