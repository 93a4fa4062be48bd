"""Decode a Solana off-chain message (version 0): the bytes a wallet signs to prove something off chain.

Layout (agave ``docs/src/proposals/off-chain-message-signing.md``, crate ``solana-offchain-message``)::

    signing domain   16   b"\\xffsolana offchain"
    header version    1   0 (the only version)
    application dom. 32   opaque, chosen by the application
    message format    1   0 restricted ASCII, 1 limited UTF-8, 2 extended UTF-8
    signer count      1   at least 1
    signers          32*n public keys; with more than one signer none may be all zeros
    message length    2   u16 little-endian, at least 1
    message           n   exactly ``message length`` bytes, nothing after it

The format is not the sender's choice: it is the one the content and the total size imply, and a declared format
that differs is refused (as the reference implementation does). A total size of at most 1232 bytes (the ledger
limit) gives format 0 when the text is printable ASCII (0x20..0x7e), else format 1 when it is UTF-8; up to 65535
bytes gives format 2 (UTF-8). The leading 0xff is illegal as the first byte of a transaction message, and the
decoder additionally refuses any bytes that `solders` would parse as a transaction message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from solders.message import from_bytes_versioned
from solders.pubkey import Pubkey

from policies.errors import DecodeError

SIGNING_DOMAIN: Final = b"\xffsolana offchain"
HEADER_VERSION: Final = 0
MAX_LEDGER_MESSAGE_BYTES: Final = 1232
"""Largest whole message of formats 0 and 1 (hardware-wallet limit, equal to PACKET_DATA_SIZE)."""
MAX_EXTENDED_MESSAGE_BYTES: Final = 65535
"""Largest whole message of format 2 (u16::MAX)."""

OffchainFormat = Literal["restricted_ascii", "limited_utf8", "extended_utf8"]
_FORMATS: Final[tuple[OffchainFormat, ...]] = ("restricted_ascii", "limited_utf8", "extended_utf8")
_PREAMBLE_LEN: Final = len(SIGNING_DOMAIN) + 1 + 32 + 1 + 1  # up to and including the signer count
_ZERO_KEY: Final = bytes(32)


@dataclass(frozen=True, slots=True)
class OffchainMessage:
    """A decoded off-chain message. ``message_bytes`` is exactly what a signer signs (the whole input)."""

    version: int
    application_domain: bytes
    format: OffchainFormat
    signers: tuple[Pubkey, ...]
    text: str
    message_bytes: bytes


def decode_offchain_message(raw: bytes) -> OffchainMessage:
    """Decode ``raw`` as a version-0 off-chain message, or raise `DecodeError`."""
    # 1. Type and size before anything else.
    if not isinstance(raw, bytes):
        raise DecodeError(f"off-chain message must be bytes, not {type(raw).__name__}")
    if len(raw) > MAX_EXTENDED_MESSAGE_BYTES:
        raise DecodeError(f"off-chain message is {len(raw)} bytes, more than {MAX_EXTENDED_MESSAGE_BYTES}")

    # 2. Never something a transaction signer would also accept.
    _refuse_transaction_message(raw)

    # 3. Preamble.
    if len(raw) < _PREAMBLE_LEN + 2:
        raise DecodeError("off-chain message is shorter than its header")
    if not raw.startswith(SIGNING_DOMAIN):
        raise DecodeError("off-chain message does not start with the signing domain")
    offset = len(SIGNING_DOMAIN)
    if raw[offset] != HEADER_VERSION:
        raise DecodeError(f"unsupported off-chain message version {raw[offset]}")
    application_domain = raw[offset + 1 : offset + 33]
    declared_format = raw[offset + 33]
    if declared_format >= len(_FORMATS):
        raise DecodeError(f"unknown off-chain message format {declared_format}")
    signer_count = raw[offset + 34]
    if signer_count == 0:
        raise DecodeError("off-chain message names no signer")

    # 4. Signers, then the length and the body (which must end the input exactly).
    offset = _PREAMBLE_LEN
    body_offset = offset + 32 * signer_count + 2
    if len(raw) < body_offset:
        raise DecodeError("off-chain message is shorter than its signer list")
    signer_bytes = [raw[offset + 32 * i : offset + 32 * (i + 1)] for i in range(signer_count)]
    if signer_count > 1 and _ZERO_KEY in signer_bytes:
        raise DecodeError("a multi-signer off-chain message names the all-zero key")
    length = int.from_bytes(raw[body_offset - 2 : body_offset], "little")
    if length == 0:
        raise DecodeError("off-chain message body is empty")
    if len(raw) != body_offset + length:
        raise DecodeError("off-chain message body length does not match the declared length")
    body = raw[body_offset:]

    # 5. The format the content and size imply must be the declared one.
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("off-chain message body is not UTF-8") from exc
    expected = 2
    if len(raw) <= MAX_LEDGER_MESSAGE_BYTES:
        expected = 0 if all(0x20 <= c <= 0x7E for c in body) else 1
    if declared_format != expected:
        raise DecodeError(f"off-chain message declares format {declared_format} but its content needs {expected}")

    return OffchainMessage(
        version=HEADER_VERSION,
        application_domain=application_domain,
        format=_FORMATS[expected],
        signers=tuple(Pubkey.from_bytes(key) for key in signer_bytes),
        text=text,
        message_bytes=raw,
    )


def _refuse_transaction_message(raw: bytes) -> None:
    try:
        from_bytes_versioned(raw)
    except Exception:  # failing to parse as a transaction message is the wanted outcome
        return
    raise DecodeError("bytes parse as a transaction message")
