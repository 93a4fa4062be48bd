"""Solana off-chain messages for tests: version 0, restricted ASCII (format 0), one signer."""

from __future__ import annotations

from solders.pubkey import Pubkey


def offchain_message(signer: Pubkey, text: str) -> bytes:
    """A version-0 off-chain message, restricted ASCII (format 0), one signer."""
    body = text.encode("ascii")
    return (
        b"\xffsolana offchain" + b"\x00" + bytes(32) + b"\x00" + b"\x01" + bytes(signer)
        + len(body).to_bytes(2, "little") + body
    )  # fmt: skip
