"""Agent-key rotation transactions for tests, built with the independent IDL-driven encoder
(`tests.support.squads_encoder`): the Squads v4 membership change that adds the candidate and removes the old agent,
proposed, approved by both members and executed in one transaction whose fee payer is the owner."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from solders.account import Account
from solders.hash import Hash
from solders.instruction import Instruction
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from policies import programs
from policies.decoders.squads_config import PERIODS
from policies.decoders.squads_vault import squads_proposal_address, squads_transaction_address, squads_vault_address
from tests.support.policies import EXAMPLE_MINT, MERCHANT, TREASURY
from tests.support.squads_encoder import PROGRAM_ID, SquadsEncoder, snake

ENC = SquadsEncoder()
ALL_PERMISSIONS = 7  # Initiate | Vote | Execute


def config_create(
    multisig: Pubkey, index: int, creator: Pubkey, actions: Sequence[object], *, rent_payer: Pubkey | None = None
) -> Instruction:
    accounts = {"multisig": multisig, "transaction": squads_transaction_address(multisig, index), "creator": creator,
                "rent_payer": rent_payer or creator, "system_program": programs.SYSTEM_PROGRAM}  # fmt: skip
    return ENC.instruction("config_transaction_create", accounts, {"actions": list(actions), "memo": None})


def add_member(key: Pubkey, permissions: int = ALL_PERMISSIONS) -> object:
    return ("add_member", {"new_member": {"key": key, "permissions": {"mask": permissions}}})


def remove_member(key: Pubkey) -> object:
    return ("remove_member", {"old_member": key})


def proposal_create(multisig: Pubkey, index: int, creator: Pubkey) -> Instruction:
    accounts = {"multisig": multisig, "proposal": squads_proposal_address(multisig, index), "creator": creator,
                "rent_payer": creator, "system_program": programs.SYSTEM_PROGRAM}  # fmt: skip
    return ENC.instruction("proposal_create", accounts, {"transaction_index": index, "draft": False})


def proposal_approve(multisig: Pubkey, index: int, member: Pubkey) -> Instruction:
    accounts = {"multisig": multisig, "member": member, "proposal": squads_proposal_address(multisig, index)}
    return ENC.instruction("proposal_approve", accounts, {"memo": None})


def config_execute(multisig: Pubkey, index: int, member: Pubkey) -> Instruction:
    accounts = {"multisig": multisig, "member": member, "proposal": squads_proposal_address(multisig, index),
                "transaction": squads_transaction_address(multisig, index), "rent_payer": member,
                "system_program": programs.SYSTEM_PROGRAM}  # fmt: skip
    return ENC.instruction("config_transaction_execute", accounts)


def rotation_instructions(
    multisig: Pubkey, *, owner: Pubkey, agent: Pubkey, new_agent: Pubkey, index: int = 1
) -> list[Instruction]:
    """The whole change in one transaction: create, propose, both members approve, the owner executes."""
    return [
        config_create(multisig, index, owner, [add_member(new_agent), remove_member(agent)]),
        proposal_create(multisig, index, owner),
        proposal_approve(multisig, index, owner),
        proposal_approve(multisig, index, agent),
        config_execute(multisig, index, owner),
    ]


def unsigned(instructions: Sequence[Instruction], fee_payer: Pubkey, blockhash: Hash | None = None) -> bytes:
    message = Message.new_with_blockhash(list(instructions), fee_payer, blockhash or Hash.default())
    return bytes(Transaction.new_unsigned(message))


def rotation_transaction(
    multisig: Pubkey, *, owner: Pubkey, agent: Pubkey, new_agent: Pubkey, index: int = 1, blockhash: Hash | None = None
) -> bytes:
    """The unsigned rotation transaction, the owner paying the fee."""
    ixs = rotation_instructions(multisig, owner=owner, agent=agent, new_agent=new_agent, index=index)
    return unsigned(ixs, owner, blockhash)


def multisig_address(create_key: Pubkey) -> tuple[Pubkey, int]:
    """The multisig PDA of ``create_key`` and its bump (seeds "multisig", "multisig", create_key)."""
    return Pubkey.find_program_address([b"multisig", b"multisig", bytes(create_key)], PROGRAM_ID)


EXAMPLE_CREATE_KEY = Pubkey.from_string("9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin")
"""The create key of the multisig the multisig tests put on chain (`EXAMPLE_MULTISIG`, its vault 0 `EXAMPLE_VAULT`)."""
EXAMPLE_MULTISIG = multisig_address(EXAMPLE_CREATE_KEY)[0]
EXAMPLE_VAULT = squads_vault_address(EXAMPLE_MULTISIG, 0)


def multisig_account_data(
    create_key: Pubkey,
    members: Sequence[Pubkey],
    *,
    transaction_index: int = 0,
    threshold: int = 2,
    config_authority: Pubkey = Pubkey.default(),  # noqa: B008 (a constant)
    time_lock: int = 0,
    permissions: Mapping[Pubkey, int] | None = None,
) -> bytes:
    """A Squads v4 ``Multisig`` account (Anchor discriminator + the IDL's Borsh layout, padded as the program sizes
    it) with ``members`` (all permissions, unless ``permissions`` gives a member's mask), threshold 2, no config
    authority and no time lock unless given."""
    masks = permissions or {}
    listed = [{"key": key, "permissions": {"mask": masks.get(key, ALL_PERMISSIONS)}}
              for key in sorted(members, key=bytes)]  # fmt: skip
    value = {"create_key": create_key, "config_authority": config_authority, "threshold": threshold,
             "time_lock": time_lock, "transaction_index": transaction_index, "stale_transaction_index": 0,
             "rent_collector": None, "bump": multisig_address(create_key)[1], "members": listed}  # fmt: skip
    data = hashlib.sha256(b"account:Multisig").digest()[:8] + ENC.defined("Multisig", value)
    return data.ljust(8 + 32 + 32 + 2 + 4 + 8 + 8 + 1 + 32 + 1 + 4 + 33 * len(members), b"\x00")


def put_multisig(svm: LiteSVM, create_key: Pubkey, members: Sequence[Pubkey], **fields: Any) -> Pubkey:
    """Write the multisig account of ``create_key`` into an embedded chain and return its address (the Squads
    program itself is not available offline: the account stands for what its execution would have left); ``fields``
    are `multisig_account_data`'s keyword arguments."""
    address = multisig_address(create_key)[0]
    data = multisig_account_data(create_key, members, **fields)
    svm.set_account(address, Account(lamports=svm.minimum_balance_for_rent_exemption(len(data)), data=data,
                                     owner=PROGRAM_ID, executable=False))  # fmt: skip
    return address


def spending_limit_address(multisig: Pubkey, create_key: Pubkey) -> tuple[Pubkey, int]:
    """The spending-limit PDA of ``create_key`` under ``multisig`` and its bump (seeds "multisig", multisig,
    "spending_limit", create_key)."""
    return Pubkey.find_program_address([b"multisig", bytes(multisig), b"spending_limit", bytes(create_key)], PROGRAM_ID)


def spending_limit_account_data(
    multisig: Pubkey,
    create_key: Pubkey,
    *,
    members: Sequence[Pubkey],
    mint: Pubkey = Pubkey.default(),  # noqa: B008 (a constant)
    amount: int = 1_000_000_000,
    period: int = 1,
    destinations: Sequence[Pubkey] = (),
    vault_index: int = 0,
    remaining_amount: int | None = None,
    last_reset: int = 1_700_000_000,
    bump: int | None = None,
) -> bytes:
    """A Squads v4 ``SpendingLimit`` account (Anchor discriminator + the IDL's Borsh layout, exactly as long as
    ``SpendingLimit::size``): ``members`` sorted as the program stores them, ``period`` the IDL's ``Period``
    variant index (0 OneTime, 1 Day, 2 Week, 3 Month)."""
    variants = [v["name"] for v in ENC.types["Period"]["variants"]]
    value = {"multisig": multisig, "create_key": create_key, "vault_index": vault_index, "mint": mint,
             "amount": amount, "period": snake(variants[period]),
             "remaining_amount": amount if remaining_amount is None else remaining_amount, "last_reset": last_reset,
             "bump": spending_limit_address(multisig, create_key)[1] if bump is None else bump,
             "members": sorted(members, key=bytes), "destinations": list(destinations)}  # fmt: skip
    return hashlib.sha256(b"account:SpendingLimit").digest()[:8] + ENC.defined("SpendingLimit", value)


def put_spending_limit(
    svm: LiteSVM,
    multisig: Pubkey,
    create_key: Pubkey,
    *,
    members: Sequence[Pubkey],
    mint: Pubkey = Pubkey.default(),  # noqa: B008 (a constant)
    amount: int = 1_000_000_000,
    period: int = 1,
    destinations: Sequence[Pubkey] = (),
    vault_index: int = 0,
) -> Pubkey:
    """Write the spending limit ``create_key`` of ``multisig`` into an embedded chain, owned by the Squads program
    (standing for what ``config_transaction_execute``'s ``AddSpendingLimit`` would have left), and return its
    address."""
    address = spending_limit_address(multisig, create_key)[0]
    data = spending_limit_account_data(multisig, create_key, members=members, mint=mint, amount=amount,
                                       period=period, destinations=destinations, vault_index=vault_index)  # fmt: skip
    svm.set_account(address, Account(lamports=svm.minimum_balance_for_rent_exemption(len(data)), data=data,
                                     owner=PROGRAM_ID, executable=False))  # fmt: skip
    return address


def put_conforming_chain(svm: LiteSVM, owner: Pubkey, agent: Pubkey, *, vault_index: int = 0, **multisig: Any) -> None:
    """Write `EXAMPLE_MULTISIG` of ``owner`` and ``agent`` (``multisig``: `multisig_account_data`'s keyword
    arguments) and two spending limits of the agent that the example policy (`tests.support.policies`) conforms to:
    5 SOL and 500 000 000 of its token a day, to its merchants, from vault ``vault_index``."""
    put_multisig(svm, EXAMPLE_CREATE_KEY, [owner, agent], **multisig)
    day = PERIODS.index("day")
    put_spending_limit(svm, EXAMPLE_MULTISIG, Pubkey.new_unique(), members=[agent], amount=5_000_000_000,
                       period=day, destinations=[MERCHANT], vault_index=vault_index)  # fmt: skip
    put_spending_limit(svm, EXAMPLE_MULTISIG, Pubkey.new_unique(), members=[agent], mint=EXAMPLE_MINT,
                       amount=500_000_000, period=day, destinations=[TREASURY],
                       vault_index=vault_index)  # fmt: skip
