"""Attribute values of `DynamoStore` items: encoding (``s``, ``n``, ``b``, and their ``opt_`` forms, which write
NULL for None), decoding (``get_*``; `get_f` refuses a stored number that is not finite as `StoreUnavailable`), the
wallet item's owner-order attributes, and times as sortable key fragments. The table layout that these values fill
is described in `parent_proxy.store.dynamodb_base`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from parent_proxy.errors import StoreUnavailable
from parent_proxy.store.model import OwnerOrder


def s(value: str) -> Any:
    return {"S": value}


def n(value: float) -> Any:
    """Attribute values are typed ``Any``: the stubs' TypedDicts add nothing over these helpers.

    Numbers travel as decimal strings; ``repr`` of a float round-trips exactly through Decimal."""
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return {"N": format(number, "f")}


def b(value: bytes) -> Any:
    return {"B": value}


def opt_s(value: str | None) -> Any:
    return {"NULL": True} if value is None else s(value)


def opt_n(value: float | None) -> Any:
    return {"NULL": True} if value is None else n(value)


def opt_b(value: bytes | None) -> Any:
    return {"NULL": True} if value is None else b(value)


def get_s(item: Mapping[str, Any], name: str) -> str:
    return str(item[name]["S"])


def get_f(item: Mapping[str, Any], name: str) -> float:
    value = float(item[name]["N"])
    if not math.isfinite(value):
        raise StoreUnavailable(f"stored attribute {name} is not a finite number")
    return value


def get_i(item: Mapping[str, Any], name: str) -> int:
    return int(item[name]["N"])


def get_b(item: Mapping[str, Any], name: str) -> bytes:
    return bytes(item[name]["B"])


def get_opt_s(item: Mapping[str, Any], name: str) -> str | None:
    attr = item.get(name)
    return None if attr is None or "NULL" in attr else str(attr["S"])


def get_opt_f(item: Mapping[str, Any], name: str) -> float | None:
    attr = item.get(name)
    return None if attr is None or "NULL" in attr else get_f(item, name)


def get_opt_b(item: Mapping[str, Any], name: str) -> bytes | None:
    attr = item.get(name)
    return None if attr is None or "NULL" in attr else bytes(attr["B"])


def order_sequence_of(wallet: Mapping[str, Any]) -> int:
    """A wallet item's last accepted owner order sequence; items written before it was kept have none (0)."""
    return get_i(wallet, "order_sequence") if "order_sequence" in wallet else 0


def last_order_of(wallet: Mapping[str, Any]) -> OwnerOrder | None:
    """A wallet item's last accepted owner order (``order_envelope``, ``order_freeze``); None when it has none, also
    on items written before orders were kept."""
    envelope = get_opt_b(wallet, "order_envelope")
    return None if envelope is None else OwnerOrder(bool(wallet["order_freeze"]["BOOL"]), envelope)


def order_attributes(order: OwnerOrder | None) -> dict[str, Any]:
    """The wallet item's attributes holding ``order`` (NULL for none)."""
    return {
        "order_envelope": opt_b(None if order is None else order.envelope),
        "order_freeze": {"NULL": True} if order is None else {"BOOL": order.freeze},
    }


def sortable_time(t: float) -> str:
    """A fixed-width key fragment that sorts like ``t`` (microsecond resolution; exact value kept apart)."""
    return f"{t:020.6f}"
