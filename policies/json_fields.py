"""Field readers of owner-signed JSON documents: policies (`policies.document`) and owner orders, which read their
keys with `read_pubkey` (`policies.orders`).

Each reader takes a parsed JSON value and its path in the document (``rules.limits[0].asset``), and returns the
checked value or raises `PolicyDocumentError` naming the field and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from solders.pubkey import Pubkey

from policies.errors import PolicyDocumentError
from policies.identifiers import WALLET_ID_RULE, is_wallet_id
from policies.rules import ANY, AnyMarker

U64_MAX = 2**64 - 1
MAX_LIST_ITEMS = 256
"""Most entries in any list rule (destinations, programs, mints, limits)."""

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
"""Rule ids (limits' and periods'): spelled as wallet ids are, but a rule of the document's own."""
_AMOUNT = re.compile(r"^(0|[1-9][0-9]{0,19})\Z")

T = TypeVar("T")


def _obj(value: Any, path: str, keys: Iterable[str], optional: Iterable[str] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyDocumentError(path, "must be an object")
    required = set(keys)
    allowed = required | set(optional)
    for key in value:
        if key not in allowed:
            raise PolicyDocumentError(_join(path, key), "unknown field")
    for key in sorted(required):
        if key not in value:
            raise PolicyDocumentError(_join(path, key), "required field is missing")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _int(value: Any, path: str, *, minimum: int, maximum: int, why: str = "") -> int:
    """An integer from ``minimum`` to ``maximum``; ``why``: the reason for the maximum, said when it is exceeded."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyDocumentError(path, "must be an integer")
    if not minimum <= value <= maximum:
        reason = f" ({why})" if why and value > maximum else ""
        raise PolicyDocumentError(path, f"must be between {minimum} and {maximum}{reason}")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyDocumentError(path, "must be true or false")
    return value


def _amount(value: Any, path: str) -> int:
    if not isinstance(value, str) or not _AMOUNT.match(value):
        raise PolicyDocumentError(path, 'must be a decimal string of raw units, e.g. "1000000"')
    amount = int(value)
    if amount > U64_MAX:
        raise PolicyDocumentError(path, "exceeds the u64 range")
    return amount


def _ident(value: Any, path: str) -> str:
    """A rule id (a limit's or a period's ``id``)."""
    if not isinstance(value, str) or not _ID.match(value):
        raise PolicyDocumentError(path, "must be 1-64 characters of A-Z a-z 0-9 . _ -, the first a letter or digit")
    return value


def read_wallet_id(value: Any, path: str) -> str:
    """A wallet id: the rule every component takes (`policies.identifiers`)."""
    if not is_wallet_id(value):
        raise PolicyDocumentError(path, f"must be {WALLET_ID_RULE}")
    return value


def read_pubkey(value: Any, path: str) -> Pubkey:
    """The base58 Solana address ``value`` (a JSON string); `PolicyDocumentError` naming ``path`` otherwise. Owner
    orders read their keys with it too (`policies.orders`)."""
    if not isinstance(value, str) or not 32 <= len(value) <= 44:
        raise PolicyDocumentError(path, "must be a base58 Solana address")
    try:
        return Pubkey.from_string(value)
    except ValueError as exc:
        raise PolicyDocumentError(path, "must be a base58 Solana address") from exc


def _list(value: Any, path: str, item: Callable[[Any, str], T], *, unique: bool = True) -> list[T]:
    if not isinstance(value, list):
        raise PolicyDocumentError(path, "must be a list")
    if len(value) > MAX_LIST_ITEMS:
        raise PolicyDocumentError(path, f"more than {MAX_LIST_ITEMS} entries")
    items = [item(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if unique:
        seen: set[Any] = set()
        for i, parsed in enumerate(items):
            if parsed in seen:
                raise PolicyDocumentError(f"{path}[{i}]", "duplicate entry")
            seen.add(parsed)
    return items


def _any_or(value: Any, path: str, item: Callable[[Any, str], T]) -> list[T] | AnyMarker:
    if value == ANY:
        return ANY
    return _list(value, path, item)
