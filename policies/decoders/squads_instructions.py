"""The Squads v4 instructions decoded from their own accounts and arguments: every instruction of the program but
``vault_transaction_create``, whose carried message is decoded through the registry (`policies.decoders.squads`,
which dispatches to `SPECS` here). Effects, and why (the wallet is a 2-of-2 multisig of the owner key and the agent
key):

- ``spending_limit_use``: ``Outflow`` from the vault (authority = the vault: the member's signature spends it
  through the on-chain spending limit), asset SOL when no mint is given, else the mint; for tokens the source and
  destination are the token accounts and ``token_program`` is set, so the evaluator's associated-account matching
  applies to the destination token account (its owner is ``args["destination"]``, which the program checks).
  Accounts and arguments must be consistent (SOL: the System program, no token accounts, 9 decimals; tokens: both
  token accounts and SPL Token or Token-2022), else `DecodeError`: the program would fail.
- ``proposal_create``: the rent of the proposal account (`squads_rent.proposal_rent`), paid by ``rent_payer``, is
  an ``Outflow`` of kind ``squads_rent`` (the proposal address must derive from the multisig and transaction index).
- ``proposal_approve``, ``proposal_activate``, ``vault_transaction_execute``: `Opaque`: what they approve or run is
  stored on chain, not in view. `link_vault_transactions` (``squads_vault.py``, run by the transaction decoder)
  clears that when the same transaction also creates the vault transaction (decoded) and its proposal.
- ``proposal_reject``, ``proposal_cancel(_v2)``: `Restricted`: with threshold 2 of 2, one vote against kills a
  proposal, so the agent could block the owner's own proposals (removing the agent key, for one).
- config transactions and the config-authority instructions (members, threshold, time lock, spending limits,
  rent collector, config authority): `AuthorityChange` of the multisig; the agent never changes the multisig.
  ``config_transaction_create`` also pays the config transaction's rent (`squads_rent.config_transaction_rent`).
- ``multisig_create(_v2)``, ``program_config_*``, ``batch_create``, ``transaction_buffer_*``: `Restricted`.
- ``batch_add_transaction``, ``batch_execute_transaction``, ``vault_transaction_create_from_buffer``: `Opaque`
  (the vault or the message lives in another account).
- the permissionless ``*_accounts_close`` instructions: benign (rent goes to the multisig's rent collector).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from solders.pubkey import Pubkey

from policies import programs
from policies.decoders import squads_config as config
from policies.decoders.squads_message import BorshReader
from policies.decoders.squads_rent import config_transaction_rent, proposal_rent
from policies.decoders.squads_vault import UNSEEN, squads_proposal_address
from policies.model import (
    NATIVE_SOL,
    AccountView,
    AuthorityChange,
    DecodedInstruction,
    Effect,
    Opaque,
    Outflow,
    Restricted,
)

PROGRAM = "squads_v4"
SOL_DECIMALS = 9
"""``spending_limit_use`` of SOL requires ``decimals == 9``."""

Handler = Callable[[int, Pubkey, str, tuple[AccountView, ...], BorshReader], DecodedInstruction]
"""Decodes one instruction: (index, program id, instruction name, accounts, a reader after the discriminator)."""


def build(  # noqa: PLR0917 - the fields of a DecodedInstruction
    index: int,
    pid: Pubkey,
    name: str,
    accounts: tuple[AccountView, ...],
    args: Mapping[str, object],
    effects: tuple[Effect, ...] = (),
    inner: tuple[DecodedInstruction, ...] = (),
) -> DecodedInstruction:
    """A Squads v4 `DecodedInstruction` (its ``args`` frozen)."""
    return DecodedInstruction(index, pid, PROGRAM, name, accounts, MappingProxyType(dict(args)), effects, inner)


def optional_account(accounts: tuple[AccountView, ...], position: int, pid: Pubkey) -> Pubkey | None:
    """An Anchor optional account: absent when missing at the end or given as the program id."""
    if position >= len(accounts) or accounts[position].pubkey == pid:
        return None
    return accounts[position].pubkey


def _spending_limit_use(
    index: int, pid: Pubkey, name: str, accounts: tuple[AccountView, ...], r: BorshReader
) -> DecodedInstruction:
    amount, decimals, memo = r.u64("amount"), r.u8("decimals"), r.option_string("memo")
    r.finish()
    multisig, member, limit, vault, destination = (a.pubkey for a in accounts[:5])
    system, mint = optional_account(accounts, 5, pid), optional_account(accounts, 6, pid)
    vault_token, destination_token = optional_account(accounts, 7, pid), optional_account(accounts, 8, pid)
    token_program = optional_account(accounts, 9, pid)
    if system is not None and system != programs.SYSTEM_PROGRAM:
        r.fail("the system_program account is not the System program")
    args: dict[str, object] = {
        "multisig": multisig, "member": member, "spending_limit": limit, "vault": vault,
        "destination": destination, "amount": amount, "decimals": decimals, "memo": memo,
    }  # fmt: skip
    if mint is None:
        if system is None:
            r.fail("a SOL spending limit needs the System program")
        if (vault_token, destination_token, token_program) != (None, None, None):
            r.fail("token accounts given without a mint")
        if decimals != SOL_DECIMALS:
            r.fail(f"SOL has {SOL_DECIMALS} decimals, not {decimals}")
        effect = Outflow(NATIVE_SOL, amount, vault, vault, destination, "squads_spending_limit")
    else:
        if vault_token is None or destination_token is None or token_program is None:
            r.fail("a token spending limit needs both token accounts and the token program")
        if token_program not in programs.TOKEN_PROGRAMS:
            r.fail("the token program is neither SPL Token nor Token-2022")
        args.update(mint=mint, vault_token_account=vault_token, destination_token_account=destination_token,
                    token_program=token_program)  # fmt: skip
        effect = Outflow(str(mint), amount, vault, vault_token, destination_token, "squads_spending_limit",
                         token_program)  # fmt: skip
    return build(index, pid, name, accounts, args, (effect,))


def _proposal_create(
    index: int, pid: Pubkey, name: str, accounts: tuple[AccountView, ...], r: BorshReader
) -> DecodedInstruction:
    transaction_index, draft = r.u64("transaction_index"), r.boolean("draft")
    r.finish()
    multisig, proposal = accounts[0].pubkey, accounts[1].pubkey
    if squads_proposal_address(multisig, transaction_index) != proposal:
        r.fail("the proposal account does not derive from (multisig, transaction index)")
    args = {"multisig": multisig, "proposal": proposal, "creator": accounts[2].pubkey,
            "rent_payer": accounts[3].pubkey, "transaction_index": transaction_index, "draft": draft}  # fmt: skip
    rent = Outflow(NATIVE_SOL, proposal_rent(), accounts[3].pubkey, accounts[3].pubkey, proposal, "squads_rent")
    return build(index, pid, name, accounts, args, (rent,))


def _vote(index: int, pid: Pubkey, name: str, accounts: tuple[AccountView, ...], r: BorshReader) -> DecodedInstruction:
    memo = None if name == "proposal_activate" else r.option_string("memo")
    r.finish()
    multisig, member, proposal = (a.pubkey for a in accounts[:3])
    args = {"multisig": multisig, "member": member, "proposal": proposal, "memo": memo}
    if name in ("proposal_approve", "proposal_activate"):
        effect: Effect = Opaque(UNSEEN)
    else:
        effect = Restricted(member, f"squads:{name}")
    return build(index, pid, name, accounts, args, (effect,))


def _vault_transaction_execute(
    index: int, pid: Pubkey, name: str, accounts: tuple[AccountView, ...], r: BorshReader
) -> DecodedInstruction:
    r.finish()
    multisig, proposal, transaction, member = (a.pubkey for a in accounts[:4])
    args = {"multisig": multisig, "proposal": proposal, "transaction": transaction, "member": member,
            "message_accounts": len(accounts) - 4}  # fmt: skip
    return build(index, pid, name, accounts, args, (Opaque(UNSEEN),))


def _config_transaction_create(
    index: int, pid: Pubkey, name: str, accounts: tuple[AccountView, ...], r: BorshReader
) -> DecodedInstruction:
    start = r.offset + 4  # after the vector's length
    actions = config.read_config_actions(r)
    actions_size = r.offset - start
    memo = r.option_string("memo")
    r.finish()
    multisig, transaction, creator, rent_payer = (a.pubkey for a in accounts[:4])
    effects: tuple[Effect, ...] = tuple(
        AuthorityChange(creator, multisig, key, f"squads:config:{action}") for action, _, key in actions
    ) or (AuthorityChange(creator, multisig, None, f"squads:{name}"),)
    rent_amount = config_transaction_rent(actions_size)
    rent = Outflow(NATIVE_SOL, rent_amount, rent_payer, rent_payer, transaction, "squads_rent")
    kept = tuple((action, MappingProxyType(fields)) for action, fields, _ in actions)
    args = {"multisig": multisig, "transaction": transaction, "creator": creator, "rent_payer": rent_payer,
            "memo": memo, "actions": kept}  # fmt: skip
    return build(index, pid, name, accounts, args, (*effects, rent))


def _config_authority(
    index: int, pid: Pubkey, name: str, accounts: tuple[AccountView, ...], r: BorshReader
) -> DecodedInstruction:
    fields, new_key = config.read_multisig_config_args(r, name)
    r.finish()
    multisig, authority = accounts[0].pubkey, accounts[1].pubkey
    args = {"multisig": multisig, "config_authority": authority, **fields}
    return build(index, pid, name, accounts, args, (AuthorityChange(authority, multisig, new_key, f"squads:{name}"),))


def _config_transaction_execute(
    index: int, pid: Pubkey, name: str, accounts: tuple[AccountView, ...], r: BorshReader
) -> DecodedInstruction:
    r.finish()
    multisig, member, proposal, transaction = (a.pubkey for a in accounts[:4])
    rent_payer = optional_account(accounts, 4, pid)
    args = {"multisig": multisig, "member": member, "proposal": proposal, "transaction": transaction,
            "rent_payer": rent_payer}  # fmt: skip
    effects: tuple[Effect, ...] = (AuthorityChange(member, multisig, None, f"squads:{name}"),)
    if rent_payer is not None:
        # It funds what the stored actions make (the multisig's growth, new spending limits): an amount this
        # instruction does not show. Paying it is taking part in the change, as the executor does.
        effects += (AuthorityChange(rent_payer, multisig, None, f"squads:{name}:rent_payer"),)
    return build(index, pid, name, accounts, args, effects)


def _multisig_create_v2(
    index: int, pid: Pubkey, name: str, accounts: tuple[AccountView, ...], r: BorshReader
) -> DecodedInstruction:
    args = config.read_multisig_create_v2(r)
    r.finish()
    creator = accounts[4].pubkey
    args.update(multisig=accounts[2].pubkey, create_key=accounts[3].pubkey, creator=creator)
    return build(index, pid, name, accounts, args, (Restricted(creator, f"squads:{name}"),))


def _restricted(
    index: int, pid: Pubkey, name: str, accounts: tuple[AccountView, ...], r: BorshReader
) -> DecodedInstruction:
    """Instructions no policy permits; the signer named in `_RESTRICTED_SIGNER` is the authority."""
    args: dict[str, object] = {}
    reader_args = _RESTRICTED_ARGS.get(name)
    if reader_args is not None:
        args.update(reader_args(r))
    r.finish()
    signer = accounts[_RESTRICTED_SIGNER[name]].pubkey if name in _RESTRICTED_SIGNER else None
    args["signer"] = signer
    return build(index, pid, name, accounts, args, (Restricted(signer, f"squads:{name}"),))


def _opaque(
    index: int, pid: Pubkey, name: str, accounts: tuple[AccountView, ...], r: BorshReader
) -> DecodedInstruction:
    """Instructions whose content lives in another account (a buffer, a batch)."""
    args: dict[str, object] = {}
    if name == "vault_transaction_create_from_buffer":
        args = {"vault_index": r.u8("vault_index"), "ephemeral_signers": r.u8("ephemeral_signers"),
                "message_len": len(r.byte_vec("transaction_message")), "memo": r.option_string("memo")}  # fmt: skip
        reason = "the vault transaction message is in a transaction buffer account, not in view"
    elif name == "batch_add_transaction":
        args = {"ephemeral_signers": r.u8("ephemeral_signers"), "message_len": len(r.byte_vec("transaction_message"))}
        reason = "batch transaction: its vault is recorded in the batch account, not in view"
    else:
        reason = "batch transaction: what it executes is stored on chain, not in view"
    r.finish()
    return build(index, pid, name, accounts, args, (Opaque(reason),))


def _benign(
    index: int, pid: Pubkey, name: str, accounts: tuple[AccountView, ...], r: BorshReader
) -> DecodedInstruction:
    """Permissionless account closes: rent goes to the multisig's rent collector, checked by the program."""
    r.finish()
    return build(index, pid, name, accounts, {"multisig": accounts[0].pubkey})


def _buffer_create(r: BorshReader) -> dict[str, object]:
    return {"buffer_index": r.u8("buffer_index"), "vault_index": r.u8("vault_index"),
            "final_buffer_hash": r.take(32, "final_buffer_hash"), "final_buffer_size": r.u16("final_buffer_size"),
            "buffer_len": len(r.byte_vec("buffer"))}  # fmt: skip


_RESTRICTED_ARGS: Final[dict[str, Callable[[BorshReader], dict[str, object]]]] = {
    "program_config_init": lambda r: {
        "authority": r.pubkey("authority"),
        "fee": r.u64("multisig_creation_fee"),
        "treasury": r.pubkey("treasury"),
    },
    "program_config_set_authority": lambda r: {"new_authority": r.pubkey("new_authority")},
    "program_config_set_multisig_creation_fee": lambda r: {"fee": r.u64("new_multisig_creation_fee")},
    "program_config_set_treasury": lambda r: {"new_treasury": r.pubkey("new_treasury")},
    "transaction_buffer_create": _buffer_create,
    "transaction_buffer_extend": lambda r: {"buffer_len": len(r.byte_vec("buffer"))},
    "batch_create": lambda r: {"vault_index": r.u8("vault_index"), "memo": r.option_string("memo")},
}
_RESTRICTED_SIGNER: Final = {
    "program_config_init": 1, "program_config_set_authority": 1, "program_config_set_multisig_creation_fee": 1,
    "program_config_set_treasury": 1, "transaction_buffer_create": 2, "transaction_buffer_extend": 2,
    "transaction_buffer_close": 2, "batch_create": 2,
}  # fmt: skip

_CONFIG_AUTHORITY = (
    "multisig_add_member", "multisig_remove_member", "multisig_set_time_lock",
    "multisig_change_threshold", "multisig_set_config_authority", "multisig_set_rent_collector",
)  # fmt: skip

# name -> (handler, fewest accounts, most accounts or None for remaining accounts), per the IDL; trailing Anchor
# optional accounts may be left out (the program is built with ``allow-missing-optionals``).
SPECS: Final[dict[str, tuple[Handler, int, int | None]]] = {
    "program_config_init": (_restricted, 3, 3),
    "program_config_set_authority": (_restricted, 2, 2),
    "program_config_set_multisig_creation_fee": (_restricted, 2, 2),
    "program_config_set_treasury": (_restricted, 2, 2),
    "multisig_create": (_restricted, 1, 1),
    "multisig_create_v2": (_multisig_create_v2, 6, 6),
    **{name: (_config_authority, 2, 4) for name in _CONFIG_AUTHORITY},
    "multisig_add_spending_limit": (_config_authority, 5, 5),
    "multisig_remove_spending_limit": (_config_authority, 4, 4),
    "config_transaction_create": (_config_transaction_create, 5, 5),
    "config_transaction_execute": (_config_transaction_execute, 4, None),
    "transaction_buffer_create": (_restricted, 5, 5),
    "transaction_buffer_close": (_restricted, 3, 3),
    "transaction_buffer_extend": (_restricted, 3, 3),
    "vault_transaction_create_from_buffer": (_opaque, 7, 7),
    "vault_transaction_execute": (_vault_transaction_execute, 4, None),
    "batch_create": (_restricted, 5, 5),
    "batch_add_transaction": (_opaque, 7, 7),
    "batch_execute_transaction": (_opaque, 5, None),
    "proposal_create": (_proposal_create, 5, 5),
    "proposal_activate": (_vote, 3, 3),
    "proposal_approve": (_vote, 3, 3),
    "proposal_reject": (_vote, 3, 3),
    "proposal_cancel": (_vote, 3, 3),
    "proposal_cancel_v2": (_vote, 4, 4),
    "spending_limit_use": (_spending_limit_use, 5, 10),
    "config_transaction_accounts_close": (_benign, 5, 5),
    "vault_transaction_accounts_close": (_benign, 5, 5),
    "vault_batch_transaction_account_close": (_benign, 6, 6),
    "batch_accounts_close": (_benign, 5, 5),
}
