"""An embedded Solana chain for tests: LiteSVM (SPL Token, Token-2022 and the Associated Token Account program
are preloaded) plus helpers to fund keys, create mints and token accounts, mint tokens, install address lookup
tables and execute transactions.

Every helper that changes the chain executes a real transaction (or, for lookup tables, writes the exact account
layout the runtime reads) and raises `ChainError` with the program logs when the chain refuses it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from solders.account import Account
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata
from spl.token.constants import MINT_LEN, TOKEN_PROGRAM_ID
from spl.token.instructions import (
    create_associated_token_account,
    get_associated_token_address,
    initialize_mint2,
    mint_to_checked,
)
from spl.token.models import InitializeMint2Params, MintToCheckedParams

LAMPORTS_PER_SOL = 1_000_000_000
ADDRESS_LOOKUP_TABLE_PROGRAM = Pubkey.from_string("AddressLookupTab1e1111111111111111111111111")
_LOOKUP_TABLE_META_LEN = 56
_U64_MAX = 2**64 - 1


class ChainError(Exception):
    """LiteSVM refused a transaction; the message carries its error and logs."""


def fresh_chain() -> LiteSVM:
    """A new chain with the default programs (System, SPL Token, Token-2022, ATA, Memo, ...)."""
    return LiteSVM()


def funded_keypair(svm: LiteSVM, lamports: int = 10 * LAMPORTS_PER_SOL) -> Keypair:
    """A new keypair holding ``lamports``."""
    keypair = Keypair()
    airdrop(svm, keypair.pubkey(), lamports)
    return keypair


def airdrop(svm: LiteSVM, pubkey: Pubkey, lamports: int) -> None:
    """Give ``pubkey`` ``lamports`` (raises `ChainError` on failure)."""
    result = svm.airdrop(pubkey, lamports)
    if isinstance(result, FailedTransactionMetadata):
        raise ChainError(f"airdrop failed: {result.err()}")


def execute(svm: LiteSVM, raw: bytes) -> TransactionMetadata:
    """Execute the serialized, fully signed transaction ``raw``; raise `ChainError` if it fails."""
    result = svm.send_transaction(VersionedTransaction.from_bytes(raw))
    if isinstance(result, FailedTransactionMetadata):
        logs = "\n".join(result.meta().logs())
        raise ChainError(f"transaction failed: {result.err()}\n{logs}")
    return result


def send(svm: LiteSVM, payer: Keypair, instructions: Sequence[Instruction], signers: Sequence[Keypair] = ()) -> None:
    """Sign and execute ``instructions`` as a legacy transaction paid by ``payer``."""
    message = Message.new_with_blockhash(list(instructions), payer.pubkey(), svm.latest_blockhash())
    execute(svm, bytes(VersionedTransaction(message, [payer, *signers])))


def send_v0(svm: LiteSVM, payer: Keypair, instructions: Sequence[Instruction], signers: Sequence[Keypair] = ()) -> None:
    """Sign and execute ``instructions`` as a v0 transaction (no lookup tables) paid by ``payer``."""
    message = MessageV0.try_compile(payer.pubkey(), list(instructions), [], svm.latest_blockhash())
    execute(svm, bytes(VersionedTransaction(message, [payer, *signers])))


def create_mint(
    svm: LiteSVM,
    payer: Keypair,
    *,
    authority: Pubkey,
    decimals: int = 6,
    token_program: Pubkey = TOKEN_PROGRAM_ID,
) -> Pubkey:
    """Create and initialize a mint (no freeze authority) owned by ``token_program``; return its address."""
    mint = Keypair()
    space = MINT_LEN
    create = create_account(
        CreateAccountParams(
            from_pubkey=payer.pubkey(),
            to_pubkey=mint.pubkey(),
            lamports=svm.minimum_balance_for_rent_exemption(space),
            space=space,
            owner=token_program,
        )
    )
    init = initialize_mint2(
        InitializeMint2Params(
            program_id=token_program,
            mint=mint.pubkey(),
            decimals=decimals,
            mint_authority=authority,
            freeze_authority=None,
        )
    )
    send(svm, payer, [create, init], [mint])
    return mint.pubkey()


def create_ata(
    svm: LiteSVM, payer: Keypair, *, owner: Pubkey, mint: Pubkey, token_program: Pubkey = TOKEN_PROGRAM_ID
) -> Pubkey:
    """Create ``owner``'s associated token account for ``mint``; return its address."""
    send(svm, payer, [create_associated_token_account(payer.pubkey(), owner, mint, token_program)])
    return ata_address(owner, mint, token_program)


def ata_address(owner: Pubkey, mint: Pubkey, token_program: Pubkey = TOKEN_PROGRAM_ID) -> Pubkey:
    """The associated token account address of (owner, mint, token program)."""
    return Pubkey(bytes(get_associated_token_address(owner, mint, token_program)))


def mint_tokens(
    svm: LiteSVM,
    payer: Keypair,
    *,
    mint: Pubkey,
    destination: Pubkey,
    authority: Keypair,
    amount: int,
    decimals: int = 6,
    token_program: Pubkey = TOKEN_PROGRAM_ID,
) -> None:
    """Mint ``amount`` base units of ``mint`` into the token account ``destination``."""
    ix = mint_to_checked(
        MintToCheckedParams(
            program_id=token_program,
            mint=mint,
            dest=destination,
            mint_authority=authority.pubkey(),
            amount=amount,
            decimals=decimals,
        )
    )
    send(svm, payer, [ix], [authority] if authority.pubkey() != payer.pubkey() else [])


def balance(svm: LiteSVM, account: Pubkey) -> int:
    """The lamports of ``account``, which must exist (LiteSVM answers None for no account)."""
    lamports = svm.get_balance(account)
    if lamports is None:
        raise LookupError(f"no account at {account}")
    return lamports


def token_balance(svm: LiteSVM, account: Pubkey) -> int:
    """The raw amount held by token account ``account`` (0 when it does not exist)."""
    info = svm.get_account(account)
    if info is None:
        return 0
    return int(struct.unpack_from("<Q", bytes(info.data), 64)[0])


def install_lookup_table(svm: LiteSVM, key: Pubkey, addresses: Sequence[Pubkey]) -> None:
    """Write an active, frozen address lookup table at ``key`` holding ``addresses``, then advance one slot so
    that its addresses are usable (the runtime hides addresses extended in the current slot)."""
    slot = svm.get_clock().slot
    meta = struct.pack("<IQQB", 1, _U64_MAX, slot, 0) + b"\x00"  # LookupTable, active, no authority (frozen)
    meta = meta.ljust(_LOOKUP_TABLE_META_LEN, b"\x00")
    data = meta + b"".join(bytes(a) for a in addresses)
    lamports = svm.minimum_balance_for_rent_exemption(len(data))
    svm.set_account(key, Account(lamports, data, ADDRESS_LOOKUP_TABLE_PROGRAM, False, _U64_MAX))
    svm.warp_to_slot(slot + 1)


NATIVE_MINT = Pubkey.from_string("So11111111111111111111111111111111111111112")
_MINT_LAYOUT = struct.Struct("<I32sQBBI32s")  # COption mint authority, supply, decimals, initialized, COption freeze


def install_native_mint(svm: LiteSVM) -> None:
    """Write SPL Token's native (wrapped SOL) mint as it exists on every cluster: no authorities, 9 decimals.
    LiteSVM does not preload it."""
    data = _MINT_LAYOUT.pack(0, bytes(32), 0, 9, 1, 0, bytes(32))
    lamports = svm.minimum_balance_for_rent_exemption(len(data))
    svm.set_account(NATIVE_MINT, Account(lamports, data, TOKEN_PROGRAM_ID, False, 0))
