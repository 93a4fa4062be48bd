"""Decoder of the Associated Token Account program: Create (empty data or ``[0]``), CreateIdempotent (``[1]``)
and RecoverNested (``[2]``).

Create takes six accounts (payer, associated account, owner, mint, System program, token program); older
clients (the Python ``solana`` package among them) add the Rent sysvar as a seventh, which the program ignores
and we accept only if it is that sysvar. Every address the program derives is re-derived and compared (a
mismatch is a `DecodeError`, as the program would fail), and the token program must be SPL Token or Token-2022.

Create and CreateIdempotent fund the new account's rent from the payer, and that rent is recoverable only by the
account's owner. They therefore yield ``Outflow(SOL, amount = rent estimate, authority = payer, source = payer,
destination = the associated account, kind "ata_rent")``; ``args`` carries ``payer``, ``associated_account``,
``owner``, ``mint``, ``token_program`` and ``idempotent``, so that the evaluator applies destination rules to the
``owner`` (the party that can reclaim the rent), not to the derived address. The rent is an estimate:
CreateIdempotent of an existing account costs nothing, and a Token-2022 account's size depends on the mint's
extensions, which the transaction does not show. The estimates are upper bounds under current rent parameters
(see `ATA_RENT_ESTIMATE`).

RecoverNested moves tokens from a nested associated account back to the wallet's own associated account and
closes the nested one to the wallet: value stays with the wallet, so it is benign once the addresses check out.
"""

from __future__ import annotations

from typing import Final

from solders.pubkey import Pubkey

from policies import programs
from policies.decoders._common import expect_accounts, fail, instruction
from policies.model import NATIVE_SOL, AccountView, DecodedInstruction, Outflow
from policies.rent import rent_exempt_minimum

PROGRAM = "associated_token_account"

SPL_TOKEN_ACCOUNT_LEN: Final = 165
TOKEN_2022_ACCOUNT_LEN_BOUND: Final = 195
"""165 base bytes + 1 account-type byte + TLV entries (4-byte header each) for ImmutableOwner (0), and the
account extensions a mint can force: TransferFeeAmount (8), NonTransferableAccount (0), TransferHookAccount (1),
PausableAccount (0)."""

ATA_RENT_ESTIMATE: Final = {
    programs.TOKEN_PROGRAM: rent_exempt_minimum(SPL_TOKEN_ACCOUNT_LEN),  # 2_039_280 lamports, exact
    programs.TOKEN_2022_PROGRAM: rent_exempt_minimum(TOKEN_2022_ACCOUNT_LEN_BOUND),  # 2_248_080 lamports, upper bound
}
"""Lamports the payer funds when an associated token account is created, per token program."""


def _token_program(index: int, name: str, account: AccountView) -> Pubkey:
    if account.pubkey not in programs.TOKEN_PROGRAMS:
        fail(index, f"{name}: token program {account.pubkey} is neither SPL Token nor Token-2022")
    return account.pubkey


def _check_ata(index: int, name: str, address: Pubkey, *, owner: Pubkey, token_program: Pubkey, mint: Pubkey) -> None:
    if programs.associated_token_address(owner, mint, token_program) != address:
        fail(index, f"{name}: {address} is not the associated token account of (owner, token program, mint)")


def decode_associated_token_account(
    index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes
) -> DecodedInstruction:
    """Decode one Associated Token Account instruction (see the module docstring for the effects)."""
    if data in (b"", b"\x00", b"\x01"):
        idempotent = data == b"\x01"
        name = "create_idempotent" if idempotent else "create"
        if len(accounts) not in (6, 7):
            fail(index, f"{name}: {len(accounts)} accounts, expected 6 (or 7 with the Rent sysvar)")
        if len(accounts) == 7 and accounts[6].pubkey != programs.SYSVAR_RENT:
            fail(index, f"{name}: a seventh account must be the Rent sysvar")
        payer, associated, owner, mint = (a.pubkey for a in accounts[:4])
        if accounts[4].pubkey != programs.SYSTEM_PROGRAM:
            fail(index, f"{name}: expected the System program account")
        token_program = _token_program(index, name, accounts[5])
        _check_ata(index, name, associated, owner=owner, token_program=token_program, mint=mint)
        rent = ATA_RENT_ESTIMATE[token_program]
        args = {"payer": payer, "associated_account": associated, "owner": owner, "mint": mint,
                "token_program": token_program, "idempotent": idempotent, "rent_estimate": rent}  # fmt: skip
        effect = Outflow(NATIVE_SOL, rent, payer, payer, associated, "ata_rent")
        return instruction(index, program_id, PROGRAM, name, accounts, args, (effect,))

    if data == b"\x02":
        name = "recover_nested"
        expect_accounts(index, name, accounts, 7)
        nested, nested_mint, destination, owner_ata, owner_mint, wallet = (a.pubkey for a in accounts[:6])
        token_program = _token_program(index, name, accounts[6])
        _check_ata(index, name, owner_ata, owner=wallet, token_program=token_program, mint=owner_mint)
        _check_ata(index, name, nested, owner=owner_ata, token_program=token_program, mint=nested_mint)
        _check_ata(index, name, destination, owner=wallet, token_program=token_program, mint=nested_mint)
        args = {"nested_account": nested, "nested_mint": nested_mint, "destination": destination,
                "owner_associated_account": owner_ata, "owner_mint": owner_mint, "wallet": wallet,
                "token_program": token_program}  # fmt: skip
        return instruction(index, program_id, PROGRAM, name, accounts, args)

    fail(index, f"associated_token_account: unknown instruction data ({len(data)} bytes)")
