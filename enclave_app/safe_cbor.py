"""Decoding of untrusted CBOR: plain data only, no tags unless the caller allows them by number.

cbor2 decodes a number of semantic tags on its own (dates, bignums, decimals, regular expressions, shared and
cyclic references, sets, IP addresses, ...). Untrusted input must not reach any of those decoders, so each is
replaced by one that refuses, unknown tags are refused by the tag hook, duplicate map keys are refused, and the
result is walked once more to check that it holds only plain types (exact types: a subclass, a simple value or
``undefined`` is refused).

Speed (this runs on every enclave frame): the refusing decoders are one private dict built at import (a plain
dict: cbor2 copies any other mapping on every call), the no-tags hook is a module function, and the final walk
checks scalar members in place (exact type in a frozenset) and recurses only into nested containers.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import cbor2

from enclave_app.errors import CborDecodeError

MAX_CBOR_DEPTH = 16
"""Nesting depth accepted by default. Our messages (attestation documents, protocol frames, sealed blobs)
nest at most 5 levels; 16 leaves room without letting an attacker drive deep recursion."""

_CBOR2_BUILTIN_TAGS = frozenset(range(6)) | {25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004}
_CBOR2_BUILTIN_TAGS |= {43000, 55799}
"""Tags cbor2 6.x decodes by itself (probed against cbor2 6.2: a tag hook is not called for these)."""

_SCALAR_TYPES = frozenset({bool, int, float, str, bytes, type(None)})
"""Exact types of the plain scalars that may come out."""
_KEY_TYPES = frozenset({int, str})
"""Exact types of map keys (``bool`` is not ``int`` here: a boolean key is refused)."""


def _refuse_semantic_tag(*_args: Any) -> Any:
    raise CborDecodeError("CBOR tag not allowed")


def _refuse_tag(tag: cbor2.CBORTag, _immutable: bool) -> cbor2.CBORTag:
    raise CborDecodeError("CBOR tag not allowed")


_NO_TAGS: frozenset[int] = frozenset()

_REFUSING: dict[int, Any] = {tag: _refuse_semantic_tag for tag in _CBOR2_BUILTIN_TAGS}
"""Built once and shared by every call (never mutated: cbor2 only reads it): every tag cbor2 would decode by
itself maps to a decoder that refuses. A plain dict, because cbor2 converts any other mapping (a read-only
``MappingProxyType``) into a new dict on every call, about 0.4 us per frame."""


def loads_untrusted(
    data: bytes,
    *,
    allowed_tags: Iterable[int] = (),
    max_depth: int = MAX_CBOR_DEPTH,
) -> Any:
    """Decode ``data`` (exactly one complete CBOR item, nothing after it) or raise :class:`CborDecodeError`.

    Only maps, arrays, text and byte strings, integers, floats, booleans and null come out, plus
    ``cbor2.CBORTag`` objects for the tag numbers in ``allowed_tags`` (the caller unwraps them; cbor2 decodes
    a tag's content as immutable, so arrays inside a tag come out as tuples and maps as ``cbor2.frozendict``).
    Map keys must be text or integers (checked after decoding) and must not repeat.
    """
    allowed = frozenset(allowed_tags) if allowed_tags else _NO_TAGS
    tag_hook = _refuse_tag
    if allowed:

        def tag_hook(tag: cbor2.CBORTag, _immutable: bool) -> cbor2.CBORTag:
            if tag.tag not in allowed:
                raise CborDecodeError("CBOR tag not allowed")
            return tag

    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            tag_hook=tag_hook,
            semantic_decoders=_REFUSING,
            max_depth=max_depth,
            allow_duplicate_keys=False,
        )
        value = decoder.decode()
    except CborDecodeError:
        raise
    except Exception as exc:  # any failure of the decoder on hostile input is a decode error
        raise CborDecodeError("malformed CBOR") from exc
    # cbor2 stops after the first item; anything after it is refused (one item per message).
    if stream.tell() != len(data):
        raise CborDecodeError("malformed CBOR: trailing bytes")
    _check_plain(value, allowed, max_depth)
    return value


def _check_plain(value: Any, allowed: frozenset[int], depth: int) -> None:
    """Refuse anything but plain data, map keys other than text or integers, and nesting past ``depth``.

    A container at depth ``d`` has its members at ``d - 1``; any value below depth 0 is refused (so a non-empty
    container at depth 0 is too deep). Scalar members are checked in place; only containers recurse (at most
    ``depth`` levels, and cbor2's own ``max_depth`` bounds them first).
    """
    if depth < 0:
        raise CborDecodeError("CBOR nested too deeply")
    kind = type(value)
    if kind in _SCALAR_TYPES:
        return
    members: Iterable[Any]
    if kind is dict or kind is cbor2.frozendict:
        if not _KEY_TYPES.issuperset(map(type, value)):
            raise CborDecodeError("CBOR map key type not allowed")
        members = value.values()
    elif kind is list or kind is tuple:
        members = value
    elif kind is cbor2.CBORTag and value.tag in allowed:
        members = (value.value,)
    else:
        raise CborDecodeError("CBOR value type not allowed")
    if not members:
        return
    if depth == 0:
        raise CborDecodeError("CBOR nested too deeply")
    for member in members:
        if type(member) not in _SCALAR_TYPES:
            _check_plain(member, allowed, depth - 1)
