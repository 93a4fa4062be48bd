"""Well-known Solana program and sysvar addresses, as `solders` `Pubkey` constants built once at import.

Decoders compare program ids and sysvar accounts against these constants (a 32-byte comparison); nothing in the
hot path parses base58.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from solders.pubkey import Pubkey

SYSTEM_PROGRAM: Final = Pubkey.from_string("11111111111111111111111111111111")
COMPUTE_BUDGET_PROGRAM: Final = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
TOKEN_PROGRAM: Final = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
TOKEN_2022_PROGRAM: Final = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
ASSOCIATED_TOKEN_PROGRAM: Final = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
MEMO_V1_PROGRAM: Final = Pubkey.from_string("Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo")
MEMO_V2_PROGRAM: Final = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
SQUADS_V4_PROGRAM: Final = Pubkey.from_string("SQDS4ep65T869zMMBKyuUq6aD6EgTu8psMjkvj52pCf")

SYSVAR_RENT: Final = Pubkey.from_string("SysvarRent111111111111111111111111111111111")
SYSVAR_RECENT_BLOCKHASHES: Final = Pubkey.from_string("SysvarRecentB1ockHashes11111111111111111111")

TOKEN_PROGRAMS: Final = frozenset({TOKEN_PROGRAM, TOKEN_2022_PROGRAM})
"""The two token programs an associated token account may belong to."""

NATIVE_MINT: Final = Pubkey.from_string("So11111111111111111111111111111111111111112")
"""The wrapped-SOL mint (SPL Token's native mint)."""
NATIVE_MINT_2022: Final = Pubkey.from_string("9pan9bMn5HatX4EJdBwg9VgCa7Uz5HL8N1m5D3NdXejP")
"""Token-2022's wrapped-SOL mint (SPL Token's is `NATIVE_MINT`)."""
WRAPPED_SOL_MINTS: Final = ((NATIVE_MINT, TOKEN_PROGRAM), (NATIVE_MINT_2022, TOKEN_2022_PROGRAM))
"""The wrapped-SOL mints, each with the token program that owns it (any other pairing names an associated address
no account can ever occupy)."""


@lru_cache(maxsize=4096)
def associated_token_address(owner: Pubkey, mint: Pubkey, token_program: Pubkey) -> Pubkey:
    """The associated token account of ``owner`` for ``mint`` under ``token_program`` (cached: a PDA search)."""
    address, _bump = Pubkey.find_program_address(
        [bytes(owner), bytes(token_program), bytes(mint)], ASSOCIATED_TOKEN_PROGRAM
    )
    return address
