"""Decode a serialized Solana transaction (legacy or v0) into a `DecodedTransaction`.

This is the one place where `solders` parsing errors, and any exception from an instruction decoder, become
`DecodeError`. The checks, in order:

1. size: at most `MAX_TRANSACTION_BYTES`, checked before parsing;
2. parse with `solders`, and re-serialize: the bytes must round-trip exactly (solders accepts trailing bytes);
3. message version: legacy or v0 only (v1 and anything newer are refused);
4. header: at least one signature, as many signatures as ``num_required_signatures``, a writable fee payer, counts
   that fit the static keys;
5. v0 lookups: each table must be in ``lookup_tables`` (contents from a trusted source: the caller's duty), each
   lookup must name at least one index, each index must be inside its table; at most 256 accounts in all;
6. no account key appears twice (static and resolved together);
7. each instruction: its program id index names a static key other than the fee payer, its account indices are in
   range (solders' sanitize does not check indices into lookup-resolved accounts), and its program's decoder
   describes it (a program without a decoder yields an ``unknown`` instruction with an `Opaque` effect);
8. cross-instruction links, only when a Squads v4 instruction is present: an approval or execution of a vault
   transaction that this same transaction creates (and whose message was decoded) is no longer `Opaque`
   (`policies.decoders.squads_vault.link_vault_transactions`).

Account order is the runtime's: static keys, then every lookup's writable indices (in lookup order), then every
lookup's readonly indices. Resolved accounts never sign. ``is_writable`` is what the message asks for; the runtime
may still demote it (program ids, reserved accounts), which never widens what an instruction can do.

The caller remains responsible for the trust in ``lookup_tables`` contents and for checking signatures, if any.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Literal

from solders.message import Message, MessageAddressTableLookup, MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from policies.decoders.registry import DecoderRegistry, InstructionDecoder, decode_unknown, default_registry
from policies.decoders.squads_vault import link_vault_transactions
from policies.errors import DecodeError
from policies.model import AccountView, DecodedInstruction, DecodedTransaction
from policies.programs import SQUADS_V4_PROGRAM

MAX_TRANSACTION_BYTES: Final = 1232
"""Largest serialized transaction: solana-packet ``PACKET_DATA_SIZE`` = 1280 (IPv6 minimum MTU) - 40 (IPv6
header) - 8 (fragment header)."""

MAX_ACCOUNTS: Final = 256
"""Account indices are u8, so a message addresses at most 256 accounts (static and resolved together)."""

SIGNATURE_BYTES: Final = 64

_DEFAULT_REGISTRY: Final = default_registry()
_new_view: Final = tuple.__new__


def decode_transaction(
    raw: bytes,
    *,
    lookup_tables: Mapping[Pubkey, Sequence[Pubkey]] | None = None,
    registry: DecoderRegistry | None = None,
) -> DecodedTransaction:
    """Decode ``raw`` (a serialized, possibly unsigned, transaction) or raise `DecodeError`.

    ``lookup_tables`` maps each address lookup table a v0 message uses to its contents, from a trusted source.
    ``registry`` defaults to the built-in decoders (`default_registry()`).
    """
    # 1. Size, before any parsing.
    if not isinstance(raw, bytes):
        raise DecodeError(f"transaction must be bytes, not {type(raw).__name__}")
    if len(raw) > MAX_TRANSACTION_BYTES:
        raise DecodeError(f"transaction is {len(raw)} bytes, more than {MAX_TRANSACTION_BYTES}")

    # 2. Parse, and require an exact round trip.
    try:
        tx = VersionedTransaction.from_bytes(raw)
        canonical = bytes(tx)
        message = tx.message
        signatures = tx.signatures
    except Exception as exc:  # solders raises ValueError and its own error types
        raise DecodeError("bytes are not a serialized Solana transaction") from exc
    if canonical != raw:
        raise DecodeError("transaction has trailing bytes or a non-canonical encoding")

    # 3. Version.
    version: Literal["legacy", 0]
    if isinstance(message, MessageV0):
        version = 0
    elif isinstance(message, Message):
        version = "legacy"
    else:
        raise DecodeError(f"unsupported message type {type(message).__name__}")

    try:
        return _decode_message(
            raw,
            message,
            len(signatures),
            version=version,
            lookup_tables=lookup_tables,
            registry=registry or _DEFAULT_REGISTRY,
        )
    except DecodeError:
        raise
    except Exception as exc:  # a solders accessor failing on a malformed message
        raise DecodeError("malformed transaction message") from exc


def _decode_message(
    raw: bytes,
    message: Message | MessageV0,
    signature_count: int,
    *,
    version: Literal["legacy", 0],
    lookup_tables: Mapping[Pubkey, Sequence[Pubkey]] | None,
    registry: DecoderRegistry,
) -> DecodedTransaction:
    header = message.header
    required = header.num_required_signatures
    readonly_signed = header.num_readonly_signed_accounts
    readonly_unsigned = header.num_readonly_unsigned_accounts
    static_keys: list[Pubkey] = message.account_keys  # a new list on every access: ours to keep
    static_count = len(static_keys)

    # 4. Header.
    if required == 0:
        raise DecodeError("message requires no signature: it has no fee payer")
    if signature_count != required:
        raise DecodeError(f"{signature_count} signatures but the header requires {required}")
    if readonly_signed >= required:
        raise DecodeError("the fee payer must be a writable signer")
    if required + readonly_unsigned > static_count:
        raise DecodeError("header counts exceed the number of account keys")

    writable_signed = required - readonly_signed
    writable_unsigned_end = static_count - readonly_unsigned
    # tuple.__new__ is what AccountView(...) runs, without its Python-level __new__ frame (once per account).
    views = [
        _new_view(AccountView, (key, i < required, i < writable_signed or required <= i < writable_unsigned_end))
        for i, key in enumerate(static_keys)
    ]
    keys = static_keys

    # 5. Lookup tables (v0 only).
    table_keys: tuple[Pubkey, ...] = ()
    if isinstance(message, MessageV0):
        lookups = message.address_table_lookups
        if lookups:
            keys = list(static_keys)
            writable, readonly = _resolve_lookups(lookups, lookup_tables)
            keys.extend(writable)
            keys.extend(readonly)
            views.extend(AccountView(key, False, True) for key in writable)
            views.extend(AccountView(key, False, False) for key in readonly)
            table_keys = tuple(lookup.account_key for lookup in lookups)
    if len(keys) > MAX_ACCOUNTS:
        raise DecodeError(f"message addresses {len(keys)} accounts, more than {MAX_ACCOUNTS}")

    # 6. No duplicate keys.
    if len(set(keys)) != len(keys):
        raise DecodeError("an account key appears more than once")

    # 7. Instructions.
    total = len(keys)
    decoded: list[DecodedInstruction] = []
    squads = False
    decoder_of = registry.get
    for index, compiled in enumerate(message.instructions):
        program_index = compiled.program_id_index
        if program_index == 0:
            raise DecodeError("program id index points at the fee payer", instruction_index=index)
        if program_index >= static_count:
            what = "a lookup-resolved account" if program_index < total else "no account"
            raise DecodeError(f"program id index points at {what}", instruction_index=index)
        account_indices: bytes = compiled.accounts
        if account_indices and max(account_indices) >= total:  # one C call; the loop only names the culprit
            culprit = next(i for i in account_indices if i >= total)
            raise DecodeError(f"account index {culprit} is out of range", instruction_index=index)
        program_id = keys[program_index]
        accounts = tuple([views[i] for i in account_indices])
        decoder = decoder_of(program_id) or decode_unknown
        decoded.append(_run_decoder(decoder, index, program_id, accounts, compiled.data))
        squads = squads or program_id == SQUADS_V4_PROGRAM

    # 8. Cross-instruction links (Squads v4 approvals of a vault transaction created here).
    if squads:
        decoded = link_vault_transactions(decoded)

    prefix = _shortvec_len(signature_count) + SIGNATURE_BYTES * signature_count
    return DecodedTransaction(
        version=version,
        message_bytes=raw[prefix:],
        fee_payer=static_keys[0],
        required_signers=tuple(static_keys[:required]),
        account_keys=tuple(keys),
        recent_blockhash=str(message.recent_blockhash),
        instructions=tuple(decoded),
        lookup_tables=table_keys,
    )


def _resolve_lookups(
    lookups: Sequence[MessageAddressTableLookup], lookup_tables: Mapping[Pubkey, Sequence[Pubkey]] | None
) -> tuple[list[Pubkey], list[Pubkey]]:
    """Resolve every lookup against the trusted table contents: (writable accounts, readonly accounts)."""
    writable: list[Pubkey] = []
    readonly: list[Pubkey] = []
    for lookup in lookups:
        table_key: Pubkey = lookup.account_key
        table = None if lookup_tables is None else lookup_tables.get(table_key)
        if table is None:
            raise DecodeError(f"lookup table {table_key} was not supplied by a trusted source")
        writable_indexes: bytes = lookup.writable_indexes
        readonly_indexes: bytes = lookup.readonly_indexes
        if not writable_indexes and not readonly_indexes:
            raise DecodeError(f"lookup of table {table_key} names no account")
        for indexes, out in ((writable_indexes, writable), (readonly_indexes, readonly)):
            for position in indexes:
                if position >= len(table):
                    raise DecodeError(
                        f"lookup index {position} is past the end of table {table_key} ({len(table)} entries)"
                    )
                key = table[position]
                if not isinstance(key, Pubkey):
                    raise DecodeError(f"lookup table {table_key} holds a non-Pubkey entry")
                out.append(key)
    return writable, readonly


def _run_decoder(
    decoder: InstructionDecoder, index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes
) -> DecodedInstruction:
    """Run one decoder; any failure that is not already a `DecodeError` is translated into one here."""
    try:
        result = decoder(index, program_id, accounts, data)
    except DecodeError as exc:
        if exc.instruction_index is None:
            exc.instruction_index = index
        raise
    except Exception as exc:
        raise DecodeError(f"decoder for program {program_id} failed", instruction_index=index) from exc
    if not isinstance(result, DecodedInstruction) or result.index != index:
        raise DecodeError(f"decoder for program {program_id} returned a malformed result", instruction_index=index)
    return result


def _shortvec_len(value: int) -> int:
    """Bytes taken by ``value`` in Solana's compact-u16 ("shortvec") encoding."""
    if value < 0x80:
        return 1
    if value < 0x4000:
        return 2
    return 3
