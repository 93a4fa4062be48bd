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
