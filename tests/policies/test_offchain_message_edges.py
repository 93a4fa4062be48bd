"""Off-chain messages at their edges (policies/offchain.py's layout): the printable range of format 0 at both ends,
the largest message taken and the next refused, and every truncation of a message refused as a decode error."""

from __future__ import annotations

import dataclasses

import pytest

from policies.errors import DecodeError
from policies.offchain import MAX_EXTENDED_MESSAGE_BYTES, SIGNING_DOMAIN, decode_offchain_message


def _message(body: bytes, fmt: int, signers: int = 1) -> bytes:
    return (
        SIGNING_DOMAIN + b"\x00" + bytes(32) + bytes([fmt, signers]) + b"\x07" * 32 * signers
        + len(body).to_bytes(2, "little") + body
    )  # fmt: skip


@pytest.mark.parametrize("edge", [b" ", b"~", b"a b~c"])
def test_space_and_tilde_are_restricted_ascii(edge: bytes) -> None:
    assert decode_offchain_message(_message(edge, 0)).format == "restricted_ascii"
    with pytest.raises(DecodeError, match="declares format 1 but its content needs 0"):
        decode_offchain_message(_message(edge, 1))


@pytest.mark.parametrize("outside", [b"\x1f", b"\x7f", b"ok\x00"])
def test_just_outside_the_printable_range_is_limited_utf8(outside: bytes) -> None:
    assert decode_offchain_message(_message(outside, 1)).format == "limited_utf8"
    with pytest.raises(DecodeError, match="declares format 0 but its content needs 1"):
        decode_offchain_message(_message(outside, 0))


def test_the_largest_message_is_taken_and_one_byte_more_refused() -> None:
    header = len(_message(b"", 2))
    largest = _message(b"x" * (MAX_EXTENDED_MESSAGE_BYTES - header), 2)
    assert len(largest) == MAX_EXTENDED_MESSAGE_BYTES == 65535
    message = decode_offchain_message(largest)
    assert (message.format, message.message_bytes) == ("extended_utf8", largest)
    with pytest.raises(DecodeError, match="is 65536 bytes, more than 65535"):
        decode_offchain_message(largest + b"x")


@pytest.mark.parametrize("signers", [1, 2])
def test_every_truncation_is_a_decode_error(signers: int) -> None:
    """No prefix of a valid message is read past its end (an IndexError would be an answer the callers do not
    expect: they map `DecodeError` to a denial)."""
    raw = _message(b"hello", 0, signers)
    decode_offchain_message(raw)
    for size in range(len(raw)):
        with pytest.raises(DecodeError):
            decode_offchain_message(raw[:size])


def test_a_decoded_message_cannot_be_changed() -> None:
    message = decode_offchain_message(_message(b"hello", 0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.text = "goodbye"  # type: ignore[misc]
