"""Decoder of SPL Token and Token-2022 (they share the base instruction set; a u8 tag, then packed fields).

Effects of the base instructions:

- Transfer: UncheckedTokenTransfer (the mint is not named, so no limit can apply).
- TransferChecked: Outflow(asset = mint in base58, kind "transfer", token_program set).
- Approve / ApproveChecked: DelegateApproval (mint None / the mint).
- SetAuthority: AuthorityChange(what "token:<authority type>", new_authority or None).
- CloseAccount: AccountClose.
- MintTo(Checked), Burn(Checked), FreezeAccount, ThawAccount: Restricted(authority, "token:<name>").
- InitializeMint, InitializeMint2, InitializeMintCloseAuthority: Restricted(None, ...): creating mints is not an
  agent's business.
- InitializeMultisig, InitializeMultisig2: Restricted(None, ...): token multisigs are not modelled.
- Revoke, SyncNative, InitializeAccount/2/3, InitializeImmutableOwner, GetAccountDataSize, AmountToUiAmount,
  UiAmountToAmount: benign (no effects).
- Token-2022 tags 26..44 (extension instructions): recognised by name, Opaque.
- p-token ``Batch`` (tag 255, SPL Token program only): Opaque.

Authorities. An instruction whose authority is a single signer names exactly its standard accounts. When more
accounts follow the authority (token-multisig signers, or Token-2022 transfer-hook extra accounts) or the
authority is not a signer of the message (a token multisig), the instruction keeps its effect and gains an
`Opaque` effect: the engine cannot tell who really authorises it or what a transfer hook will do, so the
evaluator denies it.

Data lengths are exact. A ``COption<Pubkey>`` is ``[0]`` or ``[1, key]``; ``[0]`` followed by 32 zero bytes is also
accepted because common clients (the Python ``solana`` package among them) pad it and the program ignores the
padding. Unknown tags are `DecodeError`s.
"""

from __future__ import annotations

from collections.abc import Callable

from solders.pubkey import Pubkey

from policies import programs
from policies.decoders._common import (
    expect_accounts,
    expect_len,
    expect_min_accounts,
    fail,
    instruction,
    pubkey,
    u64,
)
from policies.errors import DecodeError
from policies.model import (
    AccountClose,
    AccountView,
    AuthorityChange,
    DecodedInstruction,
    DelegateApproval,
    Effect,
    Opaque,
    Outflow,
    Restricted,
    UncheckedTokenTransfer,
)

AUTHORITY_TYPES = (
    "mint_tokens", "freeze_account", "account_owner", "close_account",  # SPL Token and Token-2022
    "transfer_fee_config", "withheld_withdraw", "close_mint", "interest_rate", "permanent_delegate",
    "confidential_transfer_mint", "transfer_hook_program_id", "confidential_transfer_fee_config",
    "metadata_pointer", "group_pointer", "group_member_pointer", "scaled_ui_amount", "pause",
)  # fmt: skip
"""`AuthorityType` of SetAuthority, by value; SPL Token knows only the first four."""

TOKEN_2022_EXTENSIONS = {
    26: "transfer_fee_extension", 27: "confidential_transfer_extension",
    28: "default_account_state_extension", 29: "reallocate", 30: "memo_transfer_extension",
    31: "create_native_mint", 32: "initialize_non_transferable_mint", 33: "interest_bearing_mint_extension",
    34: "cpi_guard_extension", 35: "initialize_permanent_delegate", 36: "transfer_hook_extension",
    37: "confidential_transfer_fee_extension", 38: "withdraw_excess_lamports",
    39: "metadata_pointer_extension", 40: "group_pointer_extension", 41: "group_member_pointer_extension",
    42: "confidential_mint_burn_extension", 43: "scaled_ui_amount_extension", 44: "pausable_extension",
}  # fmt: skip
"""Token-2022 instructions past the base set, recognised by name only (always `Opaque`)."""

PTOKEN_BATCH = 255
"""p-token's ``Batch`` discriminator (several token instructions in one)."""

_ZERO_KEY = bytes(32)
_Handler = Callable[[int, Pubkey, str, tuple[AccountView, ...], bytes], DecodedInstruction]


def _authority(
    index: int, name: str, accounts: tuple[AccountView, ...], position: int
) -> tuple[Pubkey, tuple[Effect, ...]]:
    """The authority at ``position`` and the `Opaque` notes that apply when it is not a lone signer."""
    expect_min_accounts(index, name, accounts, position + 1)
    authority = accounts[position]
    extra = len(accounts) - position - 1
    if extra:
        return authority.pubkey, (
            Opaque(f"{name}: {extra} accounts after the authority (token-multisig signers or transfer-hook accounts)"),
        )
    if not authority.is_signer:
        return authority.pubkey, (Opaque(f"{name}: the authority does not sign (token multisig)"),)
    return authority.pubkey, ()


def _coption_key(index: int, name: str, data: bytes, offset: int) -> Pubkey | None:
    """The trailing ``COption<Pubkey>`` at ``offset`` (it is always the last field)."""
    rest = data[offset:]
    if rest == b"\x00" or (len(rest) == 33 and rest[0] == 0 and rest[1:] == _ZERO_KEY):
        return None
    if len(rest) == 33 and rest[0] == 1:
        return Pubkey.from_bytes(rest[1:])
    fail(index, f"{name}: malformed optional public key")


def _transfer(index: int, pid: Pubkey, prog: str, accounts: tuple[AccountView, ...], data: bytes) -> DecodedInstruction:
    name = "transfer"
    expect_len(index, name, data, 9)
    authority, notes = _authority(index, name, accounts, 2)
    amount, source, destination = u64(data, 1), accounts[0].pubkey, accounts[1].pubkey
    effect = UncheckedTokenTransfer(amount, authority, source, destination)
    args = {"amount": amount, "source": source, "destination": destination, "authority": authority}
    return instruction(index, pid, prog, name, accounts, args, (effect, *notes))


def _transfer_checked(
    index: int, pid: Pubkey, prog: str, accounts: tuple[AccountView, ...], data: bytes
) -> DecodedInstruction:
    name = "transfer_checked"
    expect_len(index, name, data, 10)
    authority, notes = _authority(index, name, accounts, 3)
    amount, decimals = u64(data, 1), data[9]
    source, mint, destination = accounts[0].pubkey, accounts[1].pubkey, accounts[2].pubkey
    effect = Outflow(str(mint), amount, authority, source, destination, "transfer", pid)
    args = {"amount": amount, "decimals": decimals, "source": source, "mint": mint,
            "destination": destination, "authority": authority}  # fmt: skip
    return instruction(index, pid, prog, name, accounts, args, (effect, *notes))


def _approve(index: int, pid: Pubkey, prog: str, accounts: tuple[AccountView, ...], data: bytes) -> DecodedInstruction:
    checked = data[0] == 13
    name = "approve_checked" if checked else "approve"
    expect_len(index, name, data, 10 if checked else 9)
    authority, notes = _authority(index, name, accounts, 3 if checked else 2)
    amount, source = u64(data, 1), accounts[0].pubkey
    mint = accounts[1].pubkey if checked else None
    delegate = accounts[2 if checked else 1].pubkey
    effect = DelegateApproval(authority, source, delegate, amount, None if mint is None else str(mint))
    args: dict[str, object] = {"amount": amount, "source": source, "delegate": delegate, "owner": authority}
    if checked:
        args.update(mint=mint, decimals=data[9])
    return instruction(index, pid, prog, name, accounts, args, (effect, *notes))


def _revoke(index: int, pid: Pubkey, prog: str, accounts: tuple[AccountView, ...], data: bytes) -> DecodedInstruction:
    name = "revoke"
    expect_len(index, name, data, 1)
    authority, notes = _authority(index, name, accounts, 1)
    return instruction(index, pid, prog, name, accounts, {"source": accounts[0].pubkey, "owner": authority}, notes)


def _set_authority(
    index: int, pid: Pubkey, prog: str, accounts: tuple[AccountView, ...], data: bytes
) -> DecodedInstruction:
    name = "set_authority"
    if len(data) < 3:
        fail(index, f"{name}: data too short")
    known = len(AUTHORITY_TYPES) if pid == programs.TOKEN_2022_PROGRAM else 4
    if data[1] >= known:
        fail(index, f"{name}: unknown authority type {data[1]}")
    what = AUTHORITY_TYPES[data[1]]
    new_authority = _coption_key(index, name, data, 2)
    authority, notes = _authority(index, name, accounts, 1)
    account = accounts[0].pubkey
    effect = AuthorityChange(authority, account, new_authority, f"token:{what}")
    args = {"account": account, "authority_type": what, "authority": authority, "new_authority": new_authority}
    return instruction(index, pid, prog, name, accounts, args, (effect, *notes))


def _close_account(
    index: int, pid: Pubkey, prog: str, accounts: tuple[AccountView, ...], data: bytes
) -> DecodedInstruction:
    name = "close_account"
    expect_len(index, name, data, 1)
    authority, notes = _authority(index, name, accounts, 2)
    account, destination = accounts[0].pubkey, accounts[1].pubkey
    effect = AccountClose(authority, account, destination)
    args = {"account": account, "destination": destination, "owner": authority}
    return instruction(index, pid, prog, name, accounts, args, (effect, *notes))


# tag -> (name, data length, first account's arg name, second account's arg name); the authority is the third.
_RESTRICTED = {
    7: ("mint_to", 9, "mint", "account"), 8: ("burn", 9, "account", "mint"),
    10: ("freeze_account", 1, "account", "mint"), 11: ("thaw_account", 1, "account", "mint"),
    14: ("mint_to_checked", 10, "mint", "account"), 15: ("burn_checked", 10, "account", "mint"),
}  # fmt: skip


def _restricted(
    index: int, pid: Pubkey, prog: str, accounts: tuple[AccountView, ...], data: bytes
) -> DecodedInstruction:
    name, length, first, second = _RESTRICTED[data[0]]
    expect_len(index, name, data, length)
    authority, notes = _authority(index, name, accounts, 2)
    args: dict[str, object] = {first: accounts[0].pubkey, second: accounts[1].pubkey, "authority": authority}
    if length >= 9:
        args["amount"] = u64(data, 1)
    if length == 10:
        args["decimals"] = data[9]
    return instruction(index, pid, prog, name, accounts, args, (Restricted(authority, f"token:{name}"), *notes))


def _initialize_mint(
    index: int, pid: Pubkey, prog: str, accounts: tuple[AccountView, ...], data: bytes
) -> DecodedInstruction:
    tag = data[0]
    name = {0: "initialize_mint", 20: "initialize_mint2", 25: "initialize_mint_close_authority"}[tag]
    if tag == 25:
        expect_accounts(index, name, accounts, 1)
        args: dict[str, object] = {"mint": accounts[0].pubkey, "close_authority": _coption_key(index, name, data, 1)}
    else:
        if len(data) < 35:
            fail(index, f"{name}: data too short")
        expect_accounts(index, name, accounts, 2 if tag == 0 else 1)
        if tag == 0 and accounts[1].pubkey != programs.SYSVAR_RENT:
            fail(index, f"{name}: expected the Rent sysvar account")
        args = {"mint": accounts[0].pubkey, "decimals": data[1], "mint_authority": pubkey(data, 2),
                "freeze_authority": _coption_key(index, name, data, 34)}  # fmt: skip
    return instruction(index, pid, prog, name, accounts, args, (Restricted(None, f"token:{name}"),))


def _initialize_multisig(
    index: int, pid: Pubkey, prog: str, accounts: tuple[AccountView, ...], data: bytes
) -> DecodedInstruction:
    name = "initialize_multisig" if data[0] == 2 else "initialize_multisig2"
    expect_len(index, name, data, 2)
    fixed = 2 if data[0] == 2 else 1
    expect_min_accounts(index, name, accounts, fixed + 1)
    if fixed == 2 and accounts[1].pubkey != programs.SYSVAR_RENT:
        fail(index, f"{name}: expected the Rent sysvar account")
    args = {"multisig": accounts[0].pubkey, "m": data[1], "signers": tuple(a.pubkey for a in accounts[fixed:])}
    return instruction(index, pid, prog, name, accounts, args, (Restricted(None, f"token:{name}"),))


def _initialize_account(
    index: int, pid: Pubkey, prog: str, accounts: tuple[AccountView, ...], data: bytes
) -> DecodedInstruction:
    tag = data[0]
    name = {1: "initialize_account", 16: "initialize_account2", 18: "initialize_account3"}[tag]
    expect_len(index, name, data, 1 if tag == 1 else 33)
    expect_accounts(index, name, accounts, {1: 4, 16: 3, 18: 2}[tag])
    if tag != 18 and accounts[-1].pubkey != programs.SYSVAR_RENT:
        fail(index, f"{name}: expected the Rent sysvar account")
    owner = accounts[2].pubkey if tag == 1 else pubkey(data, 1)
    args = {"account": accounts[0].pubkey, "mint": accounts[1].pubkey, "owner": owner}
    return instruction(index, pid, prog, name, accounts, args)


def _benign_one_account(
    index: int, pid: Pubkey, prog: str, accounts: tuple[AccountView, ...], data: bytes
) -> DecodedInstruction:
    tag = data[0]
    name, arg = {17: ("sync_native", "account"), 21: ("get_account_data_size", "mint"),
                 22: ("initialize_immutable_owner", "account"), 23: ("amount_to_ui_amount", "mint"),
                 24: ("ui_amount_to_amount", "mint")}[tag]  # fmt: skip
    expect_accounts(index, name, accounts, 1)
    args: dict[str, object] = {arg: accounts[0].pubkey}
    if tag == 21 and pid == programs.TOKEN_2022_PROGRAM:
        if len(data) % 2 != 1:
            fail(index, f"{name}: extension types are not a whole number of u16")
        args["extension_types"] = tuple(int.from_bytes(data[i : i + 2], "little") for i in range(1, len(data), 2))
    elif tag == 23:
        expect_len(index, name, data, 9)
        args["amount"] = u64(data, 1)
    elif tag == 24:
        try:
            args["ui_amount"] = data[1:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{name}: amount is not UTF-8", instruction_index=index) from exc
    else:
        expect_len(index, name, data, 1)
    return instruction(index, pid, prog, name, accounts, args)


_HANDLERS: dict[int, _Handler] = {
    0: _initialize_mint, 1: _initialize_account, 2: _initialize_multisig, 3: _transfer, 4: _approve,
    5: _revoke, 6: _set_authority, 7: _restricted, 8: _restricted, 9: _close_account, 10: _restricted,
    11: _restricted, 12: _transfer_checked, 13: _approve, 14: _restricted, 15: _restricted,
    16: _initialize_account, 17: _benign_one_account, 18: _initialize_account, 19: _initialize_multisig,
    20: _initialize_mint, 21: _benign_one_account, 22: _benign_one_account, 23: _benign_one_account,
    24: _benign_one_account,
}  # fmt: skip


def decode_token(index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes) -> DecodedInstruction:
    """Decode one SPL Token or Token-2022 instruction (see the module docstring for the effects)."""
    is_2022 = program_id == programs.TOKEN_2022_PROGRAM
    program = "spl_token_2022" if is_2022 else "spl_token"
    if not data:
        fail(index, f"{program}: empty instruction data")
    tag = data[0]
    handler = _HANDLERS.get(tag)
    if handler is not None:
        return handler(index, program_id, program, accounts, data)
    if is_2022 and tag == 25:
        return _initialize_mint(index, program_id, program, accounts, data)
    if is_2022 and tag in TOKEN_2022_EXTENSIONS:
        name = TOKEN_2022_EXTENSIONS[tag]
        return instruction(
            index, program_id, program, name, accounts, {"data_len": len(data)},
            (Opaque(f"token-2022 extension instruction {name}"),),
        )  # fmt: skip
    if not is_2022 and tag == PTOKEN_BATCH:
        return instruction(
            index, program_id, program, "batch", accounts, {"data_len": len(data)},
            (Opaque("p-token batch instruction"),),
        )  # fmt: skip
    fail(index, f"{program}: unknown instruction tag {tag}")
