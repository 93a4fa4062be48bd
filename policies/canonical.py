"""Strict JSON parsing and the canonical byte encoding that owner signatures cover.

Canonical form: UTF-8 JSON with object keys sorted, no insignificant whitespace, integers only (no floats, no
NaN), ASCII-only keys (so that code-point order and RFC 8785's UTF-16 order agree). Parsing is strict: duplicate
keys, floats, NaN/Infinity and non-object roots are refused, so a document has exactly one meaning and one
canonical encoding.
"""

from __future__ import annotations

import json
from typing import Any

from policies.errors import PolicyDocumentError

MAX_DOCUMENT_BYTES = 64 * 1024
"""Largest policy (or other owner-signed) document accepted, in bytes. A policy is a few KiB at most."""

MAX_NESTING = 16
"""Deepest object/array nesting accepted; the policy schema needs 5."""

MAX_INTEGER_DIGITS = 20
"""Longest JSON integer accepted: u64's maximum has 20 digits. (Python refuses more than 4300 with a bare
ValueError, which must not escape; far shorter ones are already meaningless here.)"""

LONE_SURROGATE = "a string with a lone surrogate (\\ud800-\\udfff escape) is not Unicode text"
"""Why a string holding a lone surrogate (JSON's ``\\ud800`` escapes decode to them) is refused."""


class _Rejected(ValueError):
    """Raised from inside json hooks; translated to PolicyDocumentError by `parse_json_object`."""


class DuplicateKey(_Rejected):
    """A JSON object repeats a key (`no_duplicate_keys`)."""


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A ``json.loads`` object hook: the object, or `DuplicateKey` when it repeats a key (the strict parser's rule,
    also applied to owner request bodies by `parent_proxy.owner_route`)."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKey(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_float(text: str) -> Any:
    raise _Rejected(f"non-integer number {text!r} (amounts are decimal strings, counts are integers)")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _Rejected(f"integer with more than {MAX_INTEGER_DIGITS} digits")
    return int(text)


def _no_constant(text: str) -> Any:
    raise _Rejected(f"{text} is not allowed")


def _check_text(text: str) -> None:
    """JSON's ``\\ud800`` escapes decode to lone surrogates, which no UTF-8 encoding (the canonical form) holds."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Rejected(LONE_SURROGATE) from None


def _check_value(value: Any, depth: int = 0) -> None:
    """Nesting depth, and every string and key valid Unicode text."""
    if depth > MAX_NESTING:
        raise _Rejected(f"nesting deeper than {MAX_NESTING}")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)


def _utf8_size(data: bytes | str) -> int:
    """``len(data)`` for bytes; for text, the size of its UTF-8 encoding (a lone surrogate, refused later, counts its
    three bytes), encoded only when its length in characters (at most its size) is within the bound."""
    if isinstance(data, bytes) or len(data) > MAX_DOCUMENT_BYTES:
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


def parse_json_object(data: bytes | str, *, what: str = "document") -> dict[str, Any]:
    """Parse ``data`` strictly into a JSON object, or raise `PolicyDocumentError` naming ``what``. Text is bounded
    by its UTF-8 size, as bytes are: the same document has the same size either way."""
    if _utf8_size(data) > MAX_DOCUMENT_BYTES:
        raise PolicyDocumentError(what, f"larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(
            text,
            object_pairs_hook=no_duplicate_keys,
            parse_float=_no_float,
            parse_int=_bounded_int,
            parse_constant=_no_constant,
        )
        _check_value(value)
    except UnicodeDecodeError as exc:
        raise PolicyDocumentError(what, "not UTF-8") from exc
    except _Rejected as exc:
        raise PolicyDocumentError(what, str(exc)) from exc
    except (json.JSONDecodeError, RecursionError) as exc:
        raise PolicyDocumentError(what, f"not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise PolicyDocumentError(what, "must be a JSON object")
    return value


def _check_canonical_value(value: Any, path: str) -> None:
    if isinstance(value, str):
        try:
            _check_text(value)
        except _Rejected as exc:
            raise PolicyDocumentError(path, str(exc)) from None
        return
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return
    if isinstance(value, float):
        raise PolicyDocumentError(path, "floats have no canonical form")
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_canonical_value(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise PolicyDocumentError(path, f"key {key!r} must be an ASCII string")
            _check_canonical_value(item, f"{path}.{key}" if path else key)
        return
    raise PolicyDocumentError(path, f"{type(value).__name__} is not a JSON value")


def canonical_bytes(value: dict[str, Any]) -> bytes:
    """The canonical encoding of a JSON object (see module docstring)."""
    _check_canonical_value(value, "")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
