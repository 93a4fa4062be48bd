"""Build serialized Solana transactions for tests.

Two kinds of helpers:

- well-formed transactions compiled by `solders` (`legacy_tx`, `v0_tx`, `unsigned_tx`): these are what real
  clients send, and tests that decode them can also execute them on LiteSVM (see `tests.support.chain`);
- hand-encoded messages and transactions (`encode_legacy_message`, `encode_v0_message`, `encode_transaction`)
  for the malformed inputs that `solders` refuses to compile (out-of-range indices, duplicate keys, a program id
  in a lookup table, ...), so that every decoder error path can be reached with exact bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

DEFAULT_BLOCKHASH = Hash.default()


def legacy_tx(
    payer: Keypair,
    instructions: Sequence[Instruction],
    blockhash: Hash = DEFAULT_BLOCKHASH,
    *,
    signers: Sequence[Keypair] = (),
) -> bytes:
    """A signed legacy transaction: ``payer`` pays and signs, ``signers`` add their signatures."""
    message = Message.new_with_blockhash(list(instructions), payer.pubkey(), blockhash)
    return bytes(VersionedTransaction(message, [payer, *signers]))


def v0_tx(
    payer: Keypair,
    instructions: Sequence[Instruction],
    blockhash: Hash = DEFAULT_BLOCKHASH,
    *,
    lookup_tables: Sequence[AddressLookupTableAccount] = (),
    signers: Sequence[Keypair] = (),
) -> bytes:
    """A signed v0 transaction; accounts found in ``lookup_tables`` are loaded through them."""
    message = MessageV0.try_compile(payer.pubkey(), list(instructions), list(lookup_tables), blockhash)
    return bytes(VersionedTransaction(message, [payer, *signers]))


def unsigned_tx(message: Message | MessageV0) -> bytes:
    """A transaction with all-zero signatures, as an agent sends it to be signed."""
    count = message.header.num_required_signatures
    return bytes(VersionedTransaction.populate(message, [Signature.default()] * count))


def lookup_table(key: Pubkey, addresses: Sequence[Pubkey]) -> AddressLookupTableAccount:
    """An address lookup table's contents, as the trusted source hands them to the decoder."""
    return AddressLookupTableAccount(key, list(addresses))


# ---------------------------------------------------------------------------------------------------------------
# Hand encoding (Solana wire format): no validation on purpose.


def shortvec(value: int) -> bytes:
    """Solana's compact-u16 length encoding."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@dataclass(frozen=True)
class RawInstruction:
    """A compiled instruction: indices into the message's account list."""

    program_id_index: int
    accounts: bytes
    data: bytes

    def encode(self) -> bytes:
        return (
            bytes([self.program_id_index])
            + shortvec(len(self.accounts))
            + self.accounts
            + shortvec(len(self.data))
            + self.data
        )


@dataclass(frozen=True)
class RawLookup:
    """A v0 address table lookup."""

    table: Pubkey
    writable: bytes
    readonly: bytes

    def encode(self) -> bytes:
        return (
            bytes(self.table)
            + shortvec(len(self.writable))
            + self.writable
            + shortvec(len(self.readonly))
            + self.readonly
        )


def _body(
    header: tuple[int, int, int],
    keys: Sequence[Pubkey],
    blockhash: Hash,
    instructions: Sequence[RawInstruction],
) -> bytes:
    return (
        bytes(header)
        + shortvec(len(keys))
        + b"".join(bytes(k) for k in keys)
        + bytes(blockhash)
        + shortvec(len(instructions))
        + b"".join(ix.encode() for ix in instructions)
    )


def encode_legacy_message(
    header: tuple[int, int, int],
    keys: Sequence[Pubkey],
    instructions: Sequence[RawInstruction],
    blockhash: Hash = DEFAULT_BLOCKHASH,
) -> bytes:
    """A legacy message: ``header`` is (required signatures, readonly signed, readonly unsigned)."""
    return _body(header, keys, blockhash, instructions)


def encode_v0_message(
    header: tuple[int, int, int],
    keys: Sequence[Pubkey],
    instructions: Sequence[RawInstruction],
    lookups: Sequence[RawLookup] = (),
    blockhash: Hash = DEFAULT_BLOCKHASH,
    *,
    version_byte: int = 0x80,
) -> bytes:
    """A v0 message (``version_byte`` 0x80; another value makes a message of another version)."""
    return (
        bytes([version_byte])
        + _body(header, keys, blockhash, instructions)
        + shortvec(len(lookups))
        + b"".join(lookup.encode() for lookup in lookups)
    )


def encode_transaction(message: bytes, signature_count: int) -> bytes:
    """A transaction carrying ``signature_count`` all-zero signatures in front of ``message``."""
    return shortvec(signature_count) + bytes(64 * signature_count) + message


def is_writable(message: Message, i: int) -> bool:
    """The legacy header's rule: writable signers first, then readonly signers, writable and readonly others."""
    header = message.header
    signed, readonly_signed = header.num_required_signatures, header.num_readonly_signed_accounts
    if i < signed:
        return i < signed - readonly_signed
    return i < len(message.account_keys) - header.num_readonly_unsigned_accounts
