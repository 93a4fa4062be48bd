"""Length-prefixed CBOR frames over asyncio streams (the enclave protocol's wire format).

A frame is a 4-byte big-endian length followed by exactly that many bytes of one CBOR item. The length is
checked against :data:`MAX_FRAME_BYTES` before the body is read, so a hostile peer cannot make us allocate more
than that; the body is decoded as untrusted CBOR (no tags unless the caller names them). The same code runs over
AF_VSOCK, AF_UNIX and TCP (see :mod:`enclave_app.transport`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import cbor2

from enclave_app.errors import CborDecodeError, FrameTooLargeError, FramingError
from enclave_app.safe_cbor import loads_untrusted

LENGTH_PREFIX_BYTES = 4
MAX_FRAME_BYTES = 256 * 1024
"""Largest frame body (ours): a Solana transaction is at most 1232 bytes (MAX_TRANSACTION_BYTES), a policy
document and lookup-table contents a few tens of KiB; 256 KiB leaves room and bounds memory per connection."""


async def read_frame(reader: asyncio.StreamReader, *, allowed_tags: Iterable[int] = ()) -> Any | None:
    """Read one frame and return its decoded CBOR, ``None`` on a clean end of stream between frames.

    Raises :class:`FrameTooLargeError` for a length over the maximum (the body is not read), and
    :class:`FramingError` for a zero length, a stream that ends mid-frame, or a body that is not one CBOR item.
    """
    try:
        header = await reader.readexactly(LENGTH_PREFIX_BYTES)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise FramingError("stream ended inside a frame header") from exc
    length = int.from_bytes(header, "big")
    if length > MAX_FRAME_BYTES:
        raise FrameTooLargeError("frame too large")
    if length == 0:
        raise FramingError("empty frame")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise FramingError("stream ended inside a frame body") from exc
    try:
        return loads_untrusted(body, allowed_tags=allowed_tags)
    except CborDecodeError as exc:
        raise FramingError("frame body is not valid CBOR") from exc


def encode_frame(message: Any) -> bytes:
    """Serialize one message as a frame, refusing anything over the maximum."""
    try:
        body = cbor2.dumps(message)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise FramingError("message cannot be encoded") from exc
    if len(body) > MAX_FRAME_BYTES:
        raise FrameTooLargeError("frame too large")
    return len(body).to_bytes(LENGTH_PREFIX_BYTES, "big") + body


async def write_frame(writer: asyncio.StreamWriter, message: Any) -> None:
    """Write one frame and wait until the transport has taken it."""
    writer.write(encode_frame(message))
    try:
        await writer.drain()
    except (ConnectionError, OSError) as exc:
        raise FramingError("peer went away") from exc
