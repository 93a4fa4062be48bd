"""Untrusted CBOR decoding: plain data in, everything else refused with CborDecodeError."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_app.errors import CborDecodeError
from enclave_app.safe_cbor import MAX_CBOR_DEPTH, loads_untrusted


def test_plain_values_round_trip() -> None:
    value = {"a": [1, -2, b"x", "y", None, True, 1.5], 3: {"n": []}}
    assert loads_untrusted(cbor2.dumps(value)) == value


@pytest.mark.parametrize(
    "encoded",
    [
        cbor2.dumps(cbor2.CBORTag(1, 0)),  # epoch date
        cbor2.dumps(cbor2.CBORTag(2, b"\x01" * 9)),  # bignum
        cbor2.dumps(cbor2.CBORTag(4, [1, 2])),  # decimal fraction
        cbor2.dumps(cbor2.CBORTag(258, [1, 2])),  # set
        cbor2.dumps(cbor2.CBORTag(28, [1])),  # shareable
        bytes.fromhex("d81c81d81d00"),  # shareable array containing a reference to itself (a cycle)
        cbor2.dumps(cbor2.CBORTag(55799, 1)),  # self-described CBOR
        cbor2.dumps(cbor2.CBORTag(99, 1)),  # unknown tag
        cbor2.dumps(cbor2.CBORTag(18, [])),  # COSE_Sign1, not allowed unless asked for
    ],
)
def test_tags_refused_unless_allowed(encoded: bytes) -> None:
    with pytest.raises(CborDecodeError, match=r"not allowed|malformed"):
        loads_untrusted(encoded)


def test_allowed_tag_passes_through() -> None:
    value = loads_untrusted(cbor2.dumps(cbor2.CBORTag(18, [b"a"])), allowed_tags=(18,))
    assert isinstance(value, cbor2.CBORTag) and value.tag == 18


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        (b"\xa2\x01\x01\x01\x02", "malformed"),  # duplicate key
        (b"\xa1\x41a\x01", "key type"),  # bytes key
        (b"\xa1\xf5\x01", "key type"),  # boolean key
        (cbor2.dumps(1) + b"\x00", "malformed"),  # trailing bytes
        (b"\x5b\x00\x00\x00\x10\x00\x00\x00\x00", "malformed"),  # 64 GiB byte string announced, absent
        (b"\x9b\x7f\xff\xff\xff\xff\xff\xff\xff", "malformed"),  # huge array announced
        (b"\x81" * (MAX_CBOR_DEPTH + 2) + b"\x00", r"malformed|deep"),
        (b"", "malformed"),
    ],
)
def test_malformed_refused(encoded: bytes, message: str) -> None:
    with pytest.raises(CborDecodeError, match=message):
        loads_untrusted(encoded)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_decode_or_raise_cbor_error(blob: bytes) -> None:
    with contextlib.suppress(CborDecodeError):
        loads_untrusted(blob)


@pytest.mark.parametrize(
    "encoded",
    [
        b"\xf7",  # undefined
        b"\xe0",  # simple value 0
        b"\xf8\x20",  # simple value 32
        b"\x82\x01\xf7",  # undefined inside an array
        b"\xa1\x61a\xe0",  # simple value inside a map
    ],
)
def test_simple_values_refused(encoded: bytes) -> None:
    with pytest.raises(CborDecodeError, match="value type not allowed"):
        loads_untrusted(encoded)


@pytest.mark.parametrize(
    ("encoded", "max_depth", "ok"),
    [
        (cbor2.dumps({"a": 1}), 1, True),
        (cbor2.dumps({"a": 1}), 0, False),
        (cbor2.dumps({"a": {}}), 1, True),  # an empty container at depth 0 has no members below 0
        (cbor2.dumps({"a": [1]}), 1, False),
        (cbor2.dumps([[[]]]), 2, True),
        (cbor2.dumps([[[1]]]), 2, False),
    ],
)
def test_depth_limit_is_exact(encoded: bytes, max_depth: int, ok: bool) -> None:
    if ok:
        assert loads_untrusted(encoded, max_depth=max_depth) == cbor2.loads(encoded)
    else:
        with pytest.raises(CborDecodeError, match=r"malformed|deep"):
            loads_untrusted(encoded, max_depth=max_depth)


def _reference_plain(value: object, depth: int) -> bool:
    """The straightforward recursive walk (exact types), as an oracle for the iterative one."""
    if depth < 0:
        return False
    if type(value) in (bool, int, float, str, bytes, type(None)):
        return True
    if type(value) in (list, tuple):
        return all(_reference_plain(item, depth - 1) for item in value)  # type: ignore[attr-defined]
    if type(value) is dict:
        return all(type(key) in (int, str) and _reference_plain(item, depth - 1) for key, item in value.items())
    return False


_PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=4) | st.binary(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.integers(0, 9) | st.text(max_size=2), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_PLAIN, st.integers(0, 6))
def test_walk_agrees_with_recursive_reference(value: object, max_depth: int) -> None:
    encoded = cbor2.dumps(value)
    decoded = cbor2.loads(encoded)
    if _reference_plain(decoded, max_depth):
        assert loads_untrusted(encoded, max_depth=max_depth) == decoded
    else:
        with pytest.raises(CborDecodeError, match=r"malformed|deep"):
            loads_untrusted(encoded, max_depth=max_depth)


def _tags_cbor2_decodes_itself() -> list[int]:
    """Probed from the installed cbor2, independently of the module's list: the tags below 2**16 for which cbor2
    does not call the tag hook (it decodes them, or fails, on its own)."""
    builtin = []
    for tag in range(2**16):
        called: list[int] = []

        def hook(value: cbor2.CBORTag, _immutable: bool, called: list[int] = called) -> object:
            called.append(value.tag)
            return None

        with contextlib.suppress(Exception):
            cbor2.loads(cbor2.dumps(cbor2.CBORTag(tag, 0)), tag_hook=hook)
        if not called:
            builtin.append(tag)
    return builtin


def test_no_tag_reaches_a_decoder_of_cbor2() -> None:
    # The final walk would refuse most decoded values too, but the decoders themselves must never run on untrusted
    # input: the refusal comes from the refusing decoder (found in the chain of causes), for each tag cbor2 knows.
    builtin = _tags_cbor2_decodes_itself()
    assert 55799 in builtin and 52 in builtin and 99 not in builtin
    for tag in builtin:
        with pytest.raises(CborDecodeError) as refused:
            loads_untrusted(cbor2.dumps(cbor2.CBORTag(tag, 0)))
        causes = []
        error: BaseException | None = refused.value
        while error is not None:
            causes.append(str(error))
            error = error.__cause__ or error.__context__
        assert "CBOR tag not allowed" in causes, (tag, causes)
