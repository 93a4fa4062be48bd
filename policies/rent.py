"""Rent-exempt minimum balances (solana-rent defaults), for effects that fund new accounts.

A new account must hold ``(128 + data length) * 3480 * 2`` lamports (128 bytes of storage overhead, 3480 lamports
per byte-year, two years' exemption). Decoders that see an instruction create an account count that much as an
outflow of its payer.
"""

from __future__ import annotations

from typing import Final

LAMPORTS_PER_BYTE_YEAR: Final = 3480
EXEMPTION_YEARS: Final = 2
ACCOUNT_STORAGE_OVERHEAD: Final = 128


def rent_exempt_minimum(data_len: int) -> int:
    """Lamports an account of ``data_len`` bytes must hold to be rent-exempt."""
    return (ACCOUNT_STORAGE_OVERHEAD + data_len) * LAMPORTS_PER_BYTE_YEAR * EXEMPTION_YEARS
