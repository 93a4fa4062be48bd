"""Decoder of the System program: every instruction of its (bincode, u32 little-endian tag) instruction set.

Effects, and why:

- CreateAccount: Outflow(SOL, lamports, funding -> new account, kind "create_account"), and an AuthorityChange
  (what "system:create_account", new_authority = the owner program) whose authority is the new account's own
  signature: when the new account is a wallet key whose address holds no lamports yet (an agent key before it is
  funded, an empty Squads vault), the instruction makes the wallet's own address an account of another program,
  or one with data (a nonce account whose authority the attacker then sets, say), and whatever is later sent to it
  is out of the wallet's reach. The AuthorityChange is left out when the account stays a System account without
  data (owner = the System program, space 0): the instruction is then only the payment, and the wallet keeps its
  address as it was, a plain account it spends from.
- CreateAccountWithSeed: the funder's Outflow only. Its new address must derive from (base, seed, owner), which
  the decoder checks, so it is never a wallet key: not an Ed25519 key (it is a SHA-256 output of base, seed and
  owner), not a program-derived address such as a Squads vault (`Pubkey.create_with_seed`, like the runtime,
  refuses an owner that would let the two collide). Like every create it fails on an address that already holds
  lamports, so it takes nothing from the base's seeded accounts either (AllocateWithSeed and AssignWithSeed, which
  can, are authority changes).
- CreateAccountAllowPrefund: the payer's Outflow (when it funds) and an AuthorityChange of the new account, which
  may already exist with lamports (so it may be the wallet itself).
- Transfer: Outflow(SOL, from -> to, kind "transfer").
- TransferWithSeed: Outflow(SOL, kind "transfer_with_seed"); authority is the base key that signs.
- WithdrawNonceAccount: Outflow(SOL, nonce account -> recipient, kind "nonce_withdraw"); authority is the nonce
  authority.
- Assign / AssignWithSeed: AuthorityChange(what "system:assign[_with_seed]", new_authority = new owner program).
- Allocate / AllocateWithSeed: AuthorityChange(what "system:allocate[_with_seed]"): a system account with data
  can no longer pay fees, so allocating the wallet's account takes it away from the wallet.
- AuthorizeNonceAccount: AuthorityChange(what "system:nonce_authority").
- AdvanceNonceAccount: NonceAdvance.
- InitializeNonceAccount: benign. It needs no signature and only works on an account already allocated to the
  nonce size; the lamports it holds were reported by the CreateAccount outflow that funded it.
- UpgradeNonceAccount: benign. It needs no signature and only rewrites a legacy nonce's version, never its
  authority or lamports.

Data must have exactly the instruction's length (the program itself tolerates trailing bytes; we do not). Account
counts must be exact, except CreateAccountWithSeed whose base account may be the funding account (2 or 3 accounts).
Seeds must be UTF-8 and at most 32 bytes (MAX_SEED_LEN); sysvar accounts must be the expected sysvars.
"""

from __future__ import annotations

from solders.pubkey import Pubkey

from policies import programs
from policies.decoders._common import expect_accounts, expect_len, fail, instruction, pubkey, u32, u64
from policies.errors import DecodeError
from policies.model import (
    NATIVE_SOL,
    AccountView,
    AuthorityChange,
    DecodedInstruction,
    Effect,
    NonceAdvance,
    Outflow,
)

PROGRAM = "system"
MAX_SEED_LEN = 32
"""Longest seed the runtime accepts for `Pubkey::create_with_seed` (solana-pubkey MAX_SEED_LEN)."""


def _seed(index: int, name: str, data: bytes, offset: int) -> tuple[str, int]:
    """Read a bincode String (u64 length, then bytes) at ``offset``; return it and the offset after it."""
    if len(data) < offset + 8:
        fail(index, f"{name}: data too short for the seed length")
    length = u64(data, offset)
    if length > MAX_SEED_LEN:
        fail(index, f"{name}: seed is {length} bytes, more than {MAX_SEED_LEN}")
    end = offset + 8 + length
    if len(data) < end:
        fail(index, f"{name}: data too short for the seed")
    try:
        seed = data[offset + 8 : end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{name}: seed is not UTF-8", instruction_index=index) from exc
    return seed, end


def _check_derived(index: int, name: str, address: Pubkey, *, base: Pubkey, seed: str, owner: Pubkey) -> None:
    if Pubkey.create_with_seed(base, seed, owner) != address:
        fail(index, f"{name}: address does not derive from (base, seed, owner)")


def _check_sysvar(index: int, name: str, account: AccountView, sysvar: Pubkey, label: str) -> None:
    if account.pubkey != sysvar:
        fail(index, f"{name}: expected the {label} sysvar account")


def decode_system(index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes) -> DecodedInstruction:
    """Decode one System program instruction (see the module docstring for the effects)."""
    if len(data) < 4:
        fail(index, "system: data shorter than the 4-byte instruction tag")
    tag = u32(data, 0)

    if tag == 2:  # Transfer { lamports }
        name = "transfer"
        expect_len(index, name, data, 12)
        expect_accounts(index, name, accounts, 2)
        lamports = u64(data, 4)
        source, destination = accounts[0].pubkey, accounts[1].pubkey
        return instruction(
            index, program_id, PROGRAM, name, accounts,
            {"lamports": lamports, "from": source, "to": destination},
            (Outflow(NATIVE_SOL, lamports, source, source, destination, "transfer"),),
        )  # fmt: skip

    if tag == 0:  # CreateAccount { lamports, space, owner }
        name = "create_account"
        expect_len(index, name, data, 52)
        expect_accounts(index, name, accounts, 2)
        lamports, space, owner = u64(data, 4), u64(data, 12), pubkey(data, 20)
        funding, new = accounts[0].pubkey, accounts[1].pubkey
        effects: tuple[Effect, ...] = (Outflow(NATIVE_SOL, lamports, funding, funding, new, "create_account"),)
        # A System account without data is what the new account was before (an empty address): it can still pay
        # fees and transfer, so then the new account gains the lamports and nothing else. Any data (a nonce
        # account whose authority someone else sets, say) or another owner takes the address away from its key.
        if owner != programs.SYSTEM_PROGRAM or space:
            effects += (AuthorityChange(new, new, owner, "system:create_account"),)
        return instruction(
            index, program_id, PROGRAM, name, accounts,
            {"lamports": lamports, "space": space, "owner": owner, "from": funding, "new_account": new}, effects,
        )  # fmt: skip

    if tag == 1:  # Assign { owner }
        name = "assign"
        expect_len(index, name, data, 36)
        expect_accounts(index, name, accounts, 1)
        owner = pubkey(data, 4)
        account = accounts[0].pubkey
        return instruction(
            index, program_id, PROGRAM, name, accounts, {"account": account, "owner": owner},
            (AuthorityChange(account, account, owner, "system:assign"),),
        )  # fmt: skip

    if tag == 3:  # CreateAccountWithSeed { base, seed, lamports, space, owner }
        name = "create_account_with_seed"
        if len(data) < 36:
            fail(index, f"{name}: data too short")
        base = pubkey(data, 4)
        seed, offset = _seed(index, name, data, 36)
        expect_len(index, name, data, offset + 48)
        lamports, space, owner = u64(data, offset), u64(data, offset + 8), pubkey(data, offset + 16)
        if len(accounts) not in (2, 3):
            fail(index, f"{name}: {len(accounts)} accounts, expected 2 or 3")
        funding, new = accounts[0].pubkey, accounts[1].pubkey
        base_account = accounts[2].pubkey if len(accounts) == 3 else funding
        if base_account != base:
            fail(index, f"{name}: the base account does not match the base key")
        _check_derived(index, name, new, base=base, seed=seed, owner=owner)
        return instruction(
            index, program_id, PROGRAM, name, accounts,
            {"lamports": lamports, "space": space, "owner": owner, "base": base, "seed": seed,
             "from": funding, "new_account": new},
            (Outflow(NATIVE_SOL, lamports, funding, funding, new, "create_account"),),
        )  # fmt: skip

    if tag == 4:  # AdvanceNonceAccount
        name = "advance_nonce_account"
        expect_len(index, name, data, 4)
        expect_accounts(index, name, accounts, 3)
        _check_sysvar(index, name, accounts[1], programs.SYSVAR_RECENT_BLOCKHASHES, "RecentBlockhashes")
        nonce, authority = accounts[0].pubkey, accounts[2].pubkey
        return instruction(
            index, program_id, PROGRAM, name, accounts, {"nonce_account": nonce, "authority": authority},
            (NonceAdvance(authority, nonce),),
        )  # fmt: skip

    if tag == 5:  # WithdrawNonceAccount { lamports }
        name = "withdraw_nonce_account"
        expect_len(index, name, data, 12)
        expect_accounts(index, name, accounts, 5)
        _check_sysvar(index, name, accounts[2], programs.SYSVAR_RECENT_BLOCKHASHES, "RecentBlockhashes")
        _check_sysvar(index, name, accounts[3], programs.SYSVAR_RENT, "Rent")
        lamports = u64(data, 4)
        nonce, to, authority = accounts[0].pubkey, accounts[1].pubkey, accounts[4].pubkey
        return instruction(
            index, program_id, PROGRAM, name, accounts,
            {"lamports": lamports, "nonce_account": nonce, "to": to, "authority": authority},
            (Outflow(NATIVE_SOL, lamports, authority, nonce, to, "nonce_withdraw"),),
        )  # fmt: skip

    if tag == 6:  # InitializeNonceAccount { authority }
        name = "initialize_nonce_account"
        expect_len(index, name, data, 36)
        expect_accounts(index, name, accounts, 3)
        _check_sysvar(index, name, accounts[1], programs.SYSVAR_RECENT_BLOCKHASHES, "RecentBlockhashes")
        _check_sysvar(index, name, accounts[2], programs.SYSVAR_RENT, "Rent")
        return instruction(
            index, program_id, PROGRAM, name, accounts,
            {"nonce_account": accounts[0].pubkey, "authority": pubkey(data, 4)},
        )  # fmt: skip

    if tag == 7:  # AuthorizeNonceAccount { new authority }
        name = "authorize_nonce_account"
        expect_len(index, name, data, 36)
        expect_accounts(index, name, accounts, 2)
        new_authority = pubkey(data, 4)
        nonce, authority = accounts[0].pubkey, accounts[1].pubkey
        return instruction(
            index, program_id, PROGRAM, name, accounts,
            {"nonce_account": nonce, "authority": authority, "new_authority": new_authority},
            (AuthorityChange(authority, nonce, new_authority, "system:nonce_authority"),),
        )  # fmt: skip

    if tag == 8:  # Allocate { space }
        name = "allocate"
        expect_len(index, name, data, 12)
        expect_accounts(index, name, accounts, 1)
        account = accounts[0].pubkey
        return instruction(
            index, program_id, PROGRAM, name, accounts, {"account": account, "space": u64(data, 4)},
            (AuthorityChange(account, account, None, "system:allocate"),),
        )  # fmt: skip

    if tag in (9, 10):  # AllocateWithSeed { base, seed, space, owner } / AssignWithSeed { base, seed, owner }
        name = "allocate_with_seed" if tag == 9 else "assign_with_seed"
        if len(data) < 36:
            fail(index, f"{name}: data too short")
        base = pubkey(data, 4)
        seed, offset = _seed(index, name, data, 36)
        args: dict[str, object] = {"base": base, "seed": seed}
        if tag == 9:
            expect_len(index, name, data, offset + 40)
            args["space"] = u64(data, offset)
            offset += 8
        else:
            expect_len(index, name, data, offset + 32)
        owner = pubkey(data, offset)
        expect_accounts(index, name, accounts, 2)
        account = accounts[0].pubkey
        if accounts[1].pubkey != base:
            fail(index, f"{name}: the base account does not match the base key")
        _check_derived(index, name, account, base=base, seed=seed, owner=owner)
        args.update(account=account, owner=owner)
        return instruction(
            index, program_id, PROGRAM, name, accounts, args,
            (AuthorityChange(base, account, owner, f"system:{name}"),),
        )  # fmt: skip

    if tag == 11:  # TransferWithSeed { lamports, from_seed, from_owner }
        name = "transfer_with_seed"
        if len(data) < 12:
            fail(index, f"{name}: data too short")
        lamports = u64(data, 4)
        seed, offset = _seed(index, name, data, 12)
        expect_len(index, name, data, offset + 32)
        from_owner = pubkey(data, offset)
        expect_accounts(index, name, accounts, 3)
        source, base, destination = accounts[0].pubkey, accounts[1].pubkey, accounts[2].pubkey
        _check_derived(index, name, source, base=base, seed=seed, owner=from_owner)
        return instruction(
            index, program_id, PROGRAM, name, accounts,
            {"lamports": lamports, "from": source, "base": base, "seed": seed, "from_owner": from_owner,
             "to": destination},
            (Outflow(NATIVE_SOL, lamports, base, source, destination, "transfer_with_seed"),),
        )  # fmt: skip

    if tag == 12:  # UpgradeNonceAccount
        name = "upgrade_nonce_account"
        expect_len(index, name, data, 4)
        expect_accounts(index, name, accounts, 1)
        return instruction(index, program_id, PROGRAM, name, accounts, {"nonce_account": accounts[0].pubkey})

    if tag == 13:  # CreateAccountAllowPrefund { lamports, space, owner }
        return _create_account_allow_prefund(index, program_id, accounts, data)

    fail(index, f"system: unknown instruction tag {tag}")


def _create_account_allow_prefund(
    index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes
) -> DecodedInstruction:
    """CreateAccountAllowPrefund: allocate and assign ``new_account`` even if it already holds lamports, funded by
    an optional payer (required when lamports > 0).

    Unlike CreateAccount it succeeds on an account that already has lamports, so it could turn the wallet's own
    account into a program-owned one: besides the payer's Outflow it reports an AuthorityChange whose authority
    is the new account's own signature.
    """
    name = "create_account_allow_prefund"
    expect_len(index, name, data, 52)
    lamports, space, owner = u64(data, 4), u64(data, 12), pubkey(data, 20)
    if len(accounts) not in (1, 2):
        fail(index, f"{name}: {len(accounts)} accounts, expected 1 or 2")
    new = accounts[0].pubkey
    effects: list[Effect] = [AuthorityChange(new, new, owner, "system:create_account_allow_prefund")]
    args: dict[str, object] = {"lamports": lamports, "space": space, "owner": owner, "new_account": new}
    if len(accounts) == 2:
        payer = accounts[1].pubkey
        args["from"] = payer
        if lamports:
            effects.insert(0, Outflow(NATIVE_SOL, lamports, payer, payer, new, "create_account"))
    elif lamports:
        fail(index, f"{name}: lamports without a payer account")
    return instruction(index, program_id, PROGRAM, name, accounts, args, tuple(effects))
