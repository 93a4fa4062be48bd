"""`time_key`: the key the SQLite adapter seeks on instead of a REAL time.

Measured on SQLite 3.40.1 (commit 7dcd4d1): an index seek ``created_at > ?`` on a REAL key column skipped a row
whose value was integral (SQLite stores those as integers), while a scan of the same snapshot found it. Every range
seek whose answer decides a limit (window totals in `sqlite_spend`, request and denial counts in `sqlite_events`)
therefore seeks on this 8-byte BLOB, which SQLite compares with ``memcmp`` only; the exact float is stored beside it.
"""

from __future__ import annotations

import struct

_SIGN = 1 << 63


def time_key(t: float) -> bytes:
    """8 bytes whose byte order is the numeric order of ``t`` (IEEE-754 big-endian, sign bit flipped for
    non-negative values, all bits inverted for negative ones). ``-0.0`` gets the key of ``0.0`` (they are equal),
    so ``time_key(a) >= time_key(b)`` exactly when ``a >= b`` for every finite ``a`` and ``b``."""
    bits: int = struct.unpack(">Q", struct.pack(">d", t + 0.0))[0]
    return (bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits & _SIGN else bits | _SIGN).to_bytes(8, "big")
