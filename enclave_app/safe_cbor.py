"""Decoding of untrusted CBOR: plain data only, no tags unless the caller allows them by number.

cbor2 decodes a number of semantic tags on its own (dates, bignums, decimals, regular expressions, shared and
cyclic references, sets, IP addresses, ...). Untrusted input must not reach any of those decoders, so each is
replaced by one that refuses, unknown tags are refused by the tag hook, duplicate map keys are refused, and the
result is walked once more to check that it holds only plain types.
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

_PLAIN_SCALARS = (bool, int, float, str, bytes, type(None))


def _refuse_semantic_tag(*_args: Any) -> Any:
    raise CborDecodeError("CBOR tag not allowed")


_REFUSING = {tag: _refuse_semantic_tag for tag in _CBOR2_BUILTIN_TAGS}
"""Built once: every tag cbor2 would decode by itself maps to a decoder that refuses (copied per call)."""


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
    allowed = frozenset(allowed_tags)

    def tag_hook(tag: cbor2.CBORTag, _immutable: bool) -> cbor2.CBORTag:
        if tag.tag not in allowed:
            raise CborDecodeError("CBOR tag not allowed")
        return tag

    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            tag_hook=tag_hook,
            semantic_decoders=dict(_REFUSING),
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
    if depth < 0:
        raise CborDecodeError("CBOR nested too deeply")
    if isinstance(value, _PLAIN_SCALARS):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_plain(item, allowed, depth - 1)
        return
    if isinstance(value, dict | cbor2.frozendict):
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, int | str):
                raise CborDecodeError("CBOR map key type not allowed")
            _check_plain(item, allowed, depth - 1)
        return
    if isinstance(value, cbor2.CBORTag) and value.tag in allowed:
        _check_plain(value.value, allowed, depth - 1)
        return
    raise CborDecodeError("CBOR value type not allowed")
