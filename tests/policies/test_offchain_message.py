"""Off-chain message decoder: the reference implementation's known answer, each format, and every refusal."""

from __future__ import annotations

import hashlib

import pytest
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from policies.errors import DecodeError
from policies.offchain import SIGNING_DOMAIN, decode_offchain_message
from tests.support.builders import legacy_tx


def encode(
    text: bytes,
    *,
    fmt: int,
    signers: list[bytes] | None = None,
    domain: bytes = bytes(32),
    version: int = 0,
    length: int | None = None,
) -> bytes:
    """Hand-encode a version-0 off-chain message (no validation, so that malformed ones can be built)."""
    keys = [bytes(32)] if signers is None else signers
    size = len(text) if length is None else length
    return (
        SIGNING_DOMAIN
        + bytes([version])
        + domain
        + bytes([fmt, len(keys)])
        + b"".join(keys)
        + size.to_bytes(2, "little")
        + text
    )


def test_reference_known_answer() -> None:
    # solana-offchain-message test_offchain_message_utf8: default domain, one all-zero signer, format 1.
    raw = encode("Тестовое сообщение".encode(), fmt=1)
    message = decode_offchain_message(raw)
    assert str(Hash(hashlib.sha256(raw).digest())) == "E5tkTdEzcYTe5deSvw5jqzwPUEVBT83P4aHCYxjtzEW8"
    assert (message.version, message.format, message.text) == (0, "limited_utf8", "Тестовое сообщение")
    assert message.signers == (Pubkey(bytes(32)),) and message.application_domain == bytes(32)
    assert message.message_bytes == raw


def test_restricted_ascii_with_signers_and_domain() -> None:
    a, b = Keypair().pubkey(), Keypair().pubkey()
    raw = encode(b"Sign in to example.com", fmt=0, signers=[bytes(a), bytes(b)], domain=b"\x42" * 32)
    message = decode_offchain_message(raw)
    assert (message.format, message.text, message.signers) == ("restricted_ascii", "Sign in to example.com", (a, b))
    assert message.application_domain == b"\x42" * 32


def test_extended_utf8() -> None:
    text = b"a" * 2000
    message = decode_offchain_message(encode(text, fmt=2))
    assert (message.format, len(message.text)) == ("extended_utf8", 2000)


def test_format_boundary_at_ledger_limit() -> None:
    header = len(encode(b"", fmt=0))
    at_limit = b"x" * (1232 - header)
    assert decode_offchain_message(encode(at_limit, fmt=0)).format == "restricted_ascii"
    assert decode_offchain_message(encode(at_limit + b"x", fmt=2)).format == "extended_utf8"


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (bytes(65536), "more than 65535"),
        (SIGNING_DOMAIN + b"\x00", "shorter than its header"),
        (b"\xfesolana offchain" + encode(b"hi", fmt=0)[16:], "does not start with the signing domain"),
        (encode(b"hi", fmt=0, version=1), "unsupported off-chain message version 1"),
        (encode(b"hi", fmt=3), "unknown off-chain message format 3"),
        (encode(b"hi", fmt=0, signers=[]), "names no signer"),
        (encode(b"hi", fmt=0, signers=[b"\x01" * 32] * 3)[:-40], "shorter than its signer list"),
        (encode(b"hi", fmt=0, signers=[bytes(32), b"\x01" * 32]), "names the all-zero key"),
        (encode(b"", fmt=0), "body is empty"),
        (encode(b"hi", fmt=0) + b"!", "does not match the declared length"),
        (encode(b"hi", fmt=0, length=3), "does not match the declared length"),
        (encode(b"\xff\xfe", fmt=1), "body is not UTF-8"),
        (encode(b"hi", fmt=1), "declares format 1 but its content needs 0"),
        (encode(b"hi\n", fmt=0), "declares format 0 but its content needs 1"),
        (encode("é".encode(), fmt=2), "declares format 2 but its content needs 1"),
        (encode(b"a" * 2000, fmt=1), "declares format 1 but its content needs 2"),
    ],
)
def test_refusals(raw: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_offchain_message(raw)


def test_not_bytes() -> None:
    with pytest.raises(DecodeError, match="must be bytes"):
        decode_offchain_message("text")  # type: ignore[arg-type]


def test_transaction_message_refused() -> None:
    payer = Keypair()
    message_bytes = legacy_tx(payer, [])[65:]
    with pytest.raises(DecodeError, match="parse as a transaction message"):
        decode_offchain_message(message_bytes)
