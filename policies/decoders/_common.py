"""Small helpers shared by the instruction decoders: failing with the instruction index, reading fixed-width
little-endian integers and public keys, and checking account counts.

Every helper raises `DecodeError` carrying ``instruction_index``; none lets a `struct.error` or `IndexError`
escape.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import NoReturn

from solders.pubkey import Pubkey

from policies.errors import DecodeError
from policies.model import AccountView, DecodedInstruction, Effect

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

NO_EFFECTS: tuple[Effect, ...] = ()


def fail(index: int, message: str) -> NoReturn:
    """Raise the `DecodeError` of instruction ``index``."""
    raise DecodeError(message, instruction_index=index)


def expect_len(index: int, name: str, data: bytes, length: int) -> None:
    """Instruction data must be exactly ``length`` bytes: no short reads, no trailing bytes."""
    if len(data) != length:
        fail(index, f"{name}: data is {len(data)} bytes, expected exactly {length}")


def expect_accounts(index: int, name: str, accounts: tuple[AccountView, ...], count: int) -> None:
    """The instruction must name exactly ``count`` accounts."""
    if len(accounts) != count:
        fail(index, f"{name}: {len(accounts)} accounts, expected exactly {count}")


def expect_min_accounts(index: int, name: str, accounts: tuple[AccountView, ...], count: int) -> None:
    """The instruction must name at least ``count`` accounts."""
    if len(accounts) < count:
        fail(index, f"{name}: {len(accounts)} accounts, expected at least {count}")


def u32(data: bytes, offset: int) -> int:
    """Little-endian u32 at ``offset`` (callers have checked the length)."""
    return int(_U32.unpack_from(data, offset)[0])


def u64(data: bytes, offset: int) -> int:
    """Little-endian u64 at ``offset`` (callers have checked the length)."""
    return int(_U64.unpack_from(data, offset)[0])


def pubkey(data: bytes, offset: int) -> Pubkey:
    """The 32-byte public key at ``offset`` (callers have checked the length)."""
    return Pubkey.from_bytes(data[offset : offset + 32])


def instruction(  # noqa: PLR0917 - every decoder calls it positionally, in field order
    index: int,
    program_id: Pubkey,
    program: str,
    name: str,
    accounts: tuple[AccountView, ...],
    args: Mapping[str, object],
    effects: tuple[Effect, ...] = NO_EFFECTS,
) -> DecodedInstruction:
    """Build a `DecodedInstruction` whose ``args`` are a read-only view of ``args``.

    ``args`` is wrapped, not copied (this runs for every instruction of every request): pass a dict built for
    this call, which nothing else holds. Every decoder passes a fresh literal or a local dict it then drops.
    """
    return DecodedInstruction(index, program_id, program, name, accounts, MappingProxyType(args), effects)
