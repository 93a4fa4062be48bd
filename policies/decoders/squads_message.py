"""Byte readers for the Squads v4 decoder: Borsh values (Anchor instruction arguments) and the compact
``TransactionMessage`` that ``vault_transaction_create`` carries.

``BorshReader`` reads Borsh little-endian integers, ``bool`` (0 or 1 only), public keys, ``Vec<u8>`` / ``String``
(u32 length), ``Option`` (tag 0 or 1 only) and checks, through `BorshReader.finish`, that nothing trails. A
``String`` must be UTF-8, as Rust's Borsh deserialization requires.

The vault transaction message (Squads v4 ``TransactionMessage``, verified against the program's
``instructions/vault_transaction_create.rs`` and ``utils/small_vec.rs``) is not the Borsh ``Vec`` layout of the
IDL's stored ``VaultTransactionMessage``: its vectors are ``SmallVec``s with a u8 length, except instruction data
whose length is a u16::

    num_signers u8, num_writable_signers u8, num_writable_non_signers u8,
    account_keys   SmallVec<u8, Pubkey>,
    instructions   SmallVec<u8, { program_id_index u8, account_indexes SmallVec<u8, u8>, data SmallVec<u16, u8> }>,
    address_table_lookups SmallVec<u8, { account_key Pubkey, writable_indexes SmallVec<u8, u8>,
                                         readonly_indexes SmallVec<u8, u8> }>

`parse_vault_message` applies the program's own checks (``state/vault_transaction.rs``: signer counts within the
keys, every index within the keys plus the lookup-loaded accounts) and ours: no trailing bytes (the program
tolerates them), no duplicate keys. Every failure is a `DecodeError` carrying the outer instruction's index.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NoReturn

from solders.pubkey import Pubkey

from policies.errors import DecodeError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class BorshReader:
    """Sequential reader over ``data``; every read checks the length first and fails with a `DecodeError`."""

    __slots__ = ("data", "index", "name", "offset")

    def __init__(self, data: bytes, *, index: int, name: str, offset: int = 0) -> None:
        self.data = data
        self.index = index
        self.name = name
        self.offset = offset

    def fail(self, message: str) -> NoReturn:
        raise DecodeError(f"{self.name}: {message}", instruction_index=self.index)

    def take(self, count: int, what: str) -> bytes:
        end = self.offset + count
        if end > len(self.data):
            self.fail(f"data too short for {what}")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int(_U16.unpack(self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(_U32.unpack(self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(_U64.unpack(self.take(8, what))[0])

    def boolean(self, what: str) -> bool:
        value = self.u8(what)
        if value > 1:
            self.fail(f"{what} is not a bool ({value})")
        return value == 1

    def pubkey(self, what: str) -> Pubkey:
        return Pubkey.from_bytes(self.take(32, what))

    def byte_vec(self, what: str) -> bytes:
        """Borsh ``Vec<u8>``: u32 length, then the bytes."""
        return self.take(self.u32(f"{what} length"), what)

    def string(self, what: str) -> str:
        raw = self.byte_vec(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{self.name}: {what} is not UTF-8", instruction_index=self.index) from exc

    def option_tag(self, what: str) -> bool:
        """Borsh ``Option`` tag: True when a value follows."""
        tag = self.u8(f"{what} option tag")
        if tag > 1:
            self.fail(f"{what} has an invalid option tag {tag}")
        return tag == 1

    def option_string(self, what: str) -> str | None:
        return self.string(what) if self.option_tag(what) else None

    def option_pubkey(self, what: str) -> Pubkey | None:
        return self.pubkey(what) if self.option_tag(what) else None

    def count(self, what: str, item_size: int) -> int:
        """Borsh ``Vec`` length (u32), checked against the bytes left (each item takes at least ``item_size``)."""
        length = self.u32(f"{what} length")
        if length * item_size > len(self.data) - self.offset:
            self.fail(f"{what}: {length} items do not fit in the data")
        return length

    def finish(self) -> None:
        """Nothing may follow the last field."""
        if self.offset != len(self.data):
            self.fail(f"{len(self.data) - self.offset} trailing bytes")


@dataclass(frozen=True, slots=True)
class VaultInstruction:
    """One compiled instruction of a vault transaction message."""

    program_id_index: int
    account_indexes: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class VaultLookup:
    """One address table lookup of a vault transaction message."""

    account_key: Pubkey
    writable_indexes: bytes
    readonly_indexes: bytes


@dataclass(frozen=True, slots=True)
class VaultMessage:
    """A parsed, structurally checked vault transaction message."""

    num_signers: int
    num_writable_signers: int
    num_writable_non_signers: int
    account_keys: tuple[Pubkey, ...]
    instructions: tuple[VaultInstruction, ...]
    lookups: tuple[VaultLookup, ...]

    def is_signer(self, position: int) -> bool:
        return position < self.num_signers

    def is_writable(self, position: int) -> bool:
        """The program's ``is_static_writable_index`` for static keys."""
        if position < self.num_signers:
            return position < self.num_writable_signers
        return position - self.num_signers < self.num_writable_non_signers

    def stored_size(self) -> int:
        """Bytes of this message as the program stores it in the vault transaction account: the IDL's Borsh
        ``VaultTransactionMessage`` (three u8 counts; ``Vec``s with u32 lengths, unlike the compact form carried)."""
        instructions = sum(1 + 4 + len(ix.account_indexes) + 4 + len(ix.data) for ix in self.instructions)
        lookups = sum(32 + 4 + len(lk.writable_indexes) + 4 + len(lk.readonly_indexes) for lk in self.lookups)
        return 3 + 4 + 32 * len(self.account_keys) + 4 + instructions + 4 + lookups


def _small_bytes(reader: BorshReader, what: str, *, wide: bool = False) -> bytes:
    length = reader.u16(f"{what} length") if wide else reader.u8(f"{what} length")
    return reader.take(length, what)


def parse_vault_message(raw: bytes, *, index: int, name: str) -> VaultMessage:
    """Parse and check the compact vault transaction message (see the module docstring) or raise `DecodeError`."""
    reader = BorshReader(raw, index=index, name=f"{name}: transaction message")
    num_signers = reader.u8("num_signers")
    num_writable_signers = reader.u8("num_writable_signers")
    num_writable_non_signers = reader.u8("num_writable_non_signers")
    keys = tuple(reader.pubkey("account key") for _ in range(reader.u8("account_keys length")))
    instructions = tuple(
        VaultInstruction(
            reader.u8("program_id_index"),
            _small_bytes(reader, "account_indexes"),
            _small_bytes(reader, "instruction data", wide=True),
        )
        for _ in range(reader.u8("instructions length"))
    )
    lookups = tuple(
        VaultLookup(
            reader.pubkey("lookup table key"),
            _small_bytes(reader, "writable_indexes"),
            _small_bytes(reader, "readonly_indexes"),
        )
        for _ in range(reader.u8("address_table_lookups length"))
    )
    reader.finish()

    # The program's checks (VaultTransactionMessage::try_from), then ours.
    if num_signers > len(keys):
        reader.fail(f"{num_signers} signers but only {len(keys)} account keys")
    if num_writable_signers > num_signers:
        reader.fail("more writable signers than signers")
    if num_writable_non_signers > len(keys) - num_signers:
        reader.fail("more writable non-signers than non-signer keys")
    total = len(keys) + sum(len(lookup.writable_indexes) + len(lookup.readonly_indexes) for lookup in lookups)
    for position, compiled in enumerate(instructions):
        if compiled.program_id_index >= total:
            reader.fail(f"instruction {position}: program id index {compiled.program_id_index} is out of range")
        for account_index in compiled.account_indexes:
            if account_index >= total:
                reader.fail(f"instruction {position}: account index {account_index} is out of range")
    if len(set(keys)) != len(keys):
        reader.fail("an account key appears more than once")
    return VaultMessage(num_signers, num_writable_signers, num_writable_non_signers, keys, instructions, lookups)
