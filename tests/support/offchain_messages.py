"""Solana off-chain messages for tests: version 0, restricted ASCII (format 0), one signer or more."""

from __future__ import annotations

from collections.abc import Sequence

from solders.pubkey import Pubkey


def offchain_message(signer: Pubkey, text: str, co_signers: Sequence[Pubkey] = ()) -> bytes:
    """A version-0 off-chain message, restricted ASCII (format 0), signed by ``signer`` then ``co_signers``."""
    body = text.encode("ascii")
    signers = [signer, *co_signers]
    return (
        b"\xffsolana offchain" + b"\x00" + bytes(32) + b"\x00" + bytes([len(signers)])
        + b"".join(bytes(s) for s in signers) + len(body).to_bytes(2, "little") + body
    )  # fmt: skip
