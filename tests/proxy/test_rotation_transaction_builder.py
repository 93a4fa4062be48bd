"""parent_proxy.rotation_transaction: the unsigned agent-key rotation transaction, checked instruction by instruction
against the independent IDL-driven encoder (tests/support/squads_encoder.py), through the policy engine's decoder
(policies.transaction) and the enclave's rotation check (policies.rotation); and the multisig-state checks."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.compute_budget import set_compute_unit_price
from solders.hash import Hash
from solders.instruction import Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from parent_proxy.rotation_transaction import (
    RotationBuildError,
    SpendingLimitReplacement,
    build_rotation_transaction,
    check_multisig_allows_rotation,
    default_agent,
)
from parent_proxy.squads_multisig_account import Member, MultisigAccount
from parent_proxy.squads_spending_limit_account import parse_spending_limit_account
from policies import programs
from policies.rotation import RotationTransactionError, check_rotation_transaction
from policies.transaction import MAX_TRANSACTION_BYTES, decode_transaction
from tests.support.builders import is_writable
from tests.support.squads_encoder import PROGRAM_ID, SquadsEncoder
from tests.support.squads_rotation import spending_limit_account_data, spending_limit_address

ENC = SquadsEncoder()
NAMES = ["config_transaction_create", "proposal_create", "proposal_approve", "proposal_approve",
         "config_transaction_execute"]  # fmt: skip


def independent_pdas(multisig: Pubkey, index: int) -> tuple[Pubkey, Pubkey]:
    """(config transaction, proposal) PDAs, from the seeds in Squads' state/seeds.rs, derived here."""
    seeds = [b"multisig", bytes(multisig), b"transaction", index.to_bytes(8, "little")]
    transaction = Pubkey.find_program_address(seeds, PROGRAM_ID)[0]
    return transaction, Pubkey.find_program_address([*seeds, b"proposal"], PROGRAM_ID)[0]


def expected_instructions(
    *, multisig: Pubkey, index: int, owner: Pubkey, agent: Pubkey, new_agent: Pubkey, permissions: int
) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(instruction name, accounts, arguments) of the five instructions, in the encoder's vocabulary."""
    transaction, proposal = independent_pdas(multisig, index)
    system = programs.SYSTEM_PROGRAM
    actions = [("add_member", {"new_member": {"key": new_agent, "permissions": {"mask": permissions}}}),
               ("remove_member", {"old_member": agent})]  # fmt: skip
    return [
        ("config_transaction_create", {"multisig": multisig, "transaction": transaction, "creator": owner,
                                       "rent_payer": owner, "system_program": system},
         {"actions": actions, "memo": None}),
        ("proposal_create", {"multisig": multisig, "proposal": proposal, "creator": owner, "rent_payer": owner,
                             "system_program": system}, {"transaction_index": index, "draft": False}),
        ("proposal_approve", {"multisig": multisig, "member": owner, "proposal": proposal}, {"memo": None}),
        ("proposal_approve", {"multisig": multisig, "member": agent, "proposal": proposal}, {"memo": None}),
        ("config_transaction_execute", {"multisig": multisig, "member": owner, "proposal": proposal,
                                        "transaction": transaction, "rent_payer": owner, "system_program": system},
         None),
    ]  # fmt: skip


def keys() -> tuple[Pubkey, Pubkey, Pubkey, Pubkey]:
    create_key = Pubkey.new_unique()
    multisig = Pubkey.find_program_address([b"multisig", b"multisig", bytes(create_key)], PROGRAM_ID)[0]
    return multisig, Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()


def build(**overrides: Any) -> bytes:
    multisig, owner, agent, new_agent = keys()
    arguments: dict[str, Any] = {"multisig": multisig, "transaction_index": 8, "owner": owner, "agent": agent,
                                 "new_agent": new_agent, "recent_blockhash": Hash.new_unique()}  # fmt: skip
    arguments.update(overrides)
    return build_rotation_transaction(**arguments)


def check_against_encoder(
    raw: bytes, *, multisig: Pubkey, index: int, owner: Pubkey, agent: Pubkey, new_agent: Pubkey, permissions: int,
    blockhash: Hash, price: int | None,
) -> None:  # fmt: skip
    tx = VersionedTransaction.from_bytes(raw)
    message = tx.message
    assert isinstance(message, Message)  # legacy
    # Unsigned: one zero signature per required signer; the owner pays, the old agent co-signs.
    assert list(tx.signatures) == [Signature.default()] * 2
    assert list(message.account_keys[:2]) == [owner, agent] and message.header.num_required_signatures == 2
    assert message.recent_blockhash == blockhash
    compiled = list(message.instructions)
    if price is not None:
        budget = compiled.pop(0)
        assert message.account_keys[budget.program_id_index] == programs.COMPUTE_BUDGET_PROGRAM
        assert bytes(budget.data) == bytes(set_compute_unit_price(price).data)
    specs = expected_instructions(
        multisig=multisig, index=index, owner=owner, agent=agent, new_agent=new_agent, permissions=permissions
    )
    assert len(compiled) == len(specs)
    demanded_signers, demanded_writable = {owner}, {owner}  # the fee payer signs and is writable
    for ix, (name, accounts, args) in zip(compiled, specs, strict=True):
        assert message.account_keys[ix.program_id_index] == PROGRAM_ID
        # The data: byte for byte what the IDL-driven encoder writes for the same arguments.
        assert bytes(ix.data) == ENC.data(name, args)
        # The account metas: the IDL's order, and every flag the IDL asks for granted by the message.
        metas = ENC.metas(name, accounts)
        assert [message.account_keys[i] for i in bytes(ix.accounts)] == [m.pubkey for m in metas]
        for i, meta in zip(bytes(ix.accounts), metas, strict=True):
            assert not meta.is_signer or message.is_signer(i)
            assert not meta.is_writable or is_writable(message, i)
            demanded_signers |= {meta.pubkey} if meta.is_signer else set()
            demanded_writable |= {meta.pubkey} if meta.is_writable else set()
    # No flag beyond what the IDL asks for.
    keys_ = list(message.account_keys)
    assert {k for i, k in enumerate(keys_) if message.is_signer(i)} == demanded_signers == {owner, agent}
    assert {k for i, k in enumerate(keys_) if is_writable(message, i)} == demanded_writable
    # And the whole message is the one the encoder's instructions compile to.
    instructions: list[Instruction] = [ENC.instruction(name, accounts, args) for name, accounts, args in specs]
    if price is not None:
        instructions.insert(0, set_compute_unit_price(price))
    assert bytes(message) == bytes(Message.new_with_blockhash(instructions, owner, blockhash))


@pytest.mark.parametrize(("permissions", "price"), [(7, None), (2, 50_000), (6, 0), (3, 2**64 - 1)])
def test_the_transaction_is_the_encoders_five_instructions(permissions: int, price: int | None) -> None:
    multisig, owner, agent, new_agent = keys()
    blockhash = Hash.new_unique()
    raw = build_rotation_transaction(
        multisig=multisig, transaction_index=8, owner=owner, agent=agent, new_agent=new_agent,
        recent_blockhash=blockhash, permissions=permissions, compute_unit_price=price,
    )  # fmt: skip
    check_against_encoder(raw, multisig=multisig, index=8, owner=owner, agent=agent, new_agent=new_agent,
                          permissions=permissions, blockhash=blockhash, price=price)  # fmt: skip
    assert len(raw) <= MAX_TRANSACTION_BYTES
    decoded = decode_transaction(raw)
    budget = ["set_compute_unit_price"] if price is not None else []
    assert [ix.name for ix in decoded.instructions] == [*budget, *NAMES]
    assert decoded.version == "legacy" and decoded.fee_payer == owner
    check_rotation_transaction(decoded, multisig=multisig, agent=agent, new_agent=new_agent)


@settings(max_examples=60, deadline=None)
@given(index=st.integers(1, 2**64 - 1), permissions=st.sampled_from([2, 3, 6, 7]),
       price=st.none() | st.integers(0, 2**64 - 1))  # fmt: skip
def test_property_any_index_and_permissions(index: int, permissions: int, price: int | None) -> None:
    multisig, owner, agent, new_agent = keys()
    blockhash = Hash.new_unique()
    raw = build_rotation_transaction(
        multisig=multisig, transaction_index=index, owner=owner, agent=agent, new_agent=new_agent,
        recent_blockhash=blockhash, permissions=permissions, compute_unit_price=price,
    )  # fmt: skip
    check_against_encoder(raw, multisig=multisig, index=index, owner=owner, agent=agent, new_agent=new_agent,
                          permissions=permissions, blockhash=blockhash, price=price)  # fmt: skip
    check_rotation_transaction(decode_transaction(raw), multisig=multisig, agent=agent, new_agent=new_agent)


def test_the_enclave_check_refuses_it_for_other_keys() -> None:
    """The check is not vacuous: the same transaction under another multisig, agent or candidate is refused."""
    multisig, owner, agent, new_agent = keys()
    decoded = decode_transaction(build(multisig=multisig, owner=owner, agent=agent, new_agent=new_agent))
    for wrong in ({"multisig": Pubkey.new_unique()}, {"agent": Pubkey.new_unique()},
                  {"new_agent": Pubkey.new_unique()}):  # fmt: skip
        arguments = {"multisig": multisig, "agent": agent, "new_agent": new_agent, **wrong}
        with pytest.raises(RotationTransactionError, match="rotation transaction refused"):
            check_rotation_transaction(decoded, **arguments)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"transaction_index": 0}, "transaction_index must be"),
        ({"transaction_index": 2**64}, "transaction_index must be"),
        ({"transaction_index": True}, "transaction_index must be"),
        ({"permissions": 8}, "permissions must be a mask"),
        ({"permissions": 5}, "with Vote"),
        ({"permissions": 0}, "with Vote"),
        ({"permissions": -1}, "permissions must be a mask"),
        ({"compute_unit_price": -1}, "compute_unit_price"),
        ({"compute_unit_price": 2**64}, "compute_unit_price"),
    ],
)
def test_bad_arguments_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(RotationBuildError, match=message):
        build(**overrides)


def test_the_three_keys_must_differ() -> None:
    multisig, owner, agent, _ = keys()
    for arguments in ({"agent": agent, "new_agent": agent}, {"agent": owner, "new_agent": agent},
                      {"agent": agent, "new_agent": owner}):  # fmt: skip
        with pytest.raises(RotationBuildError, match="three different keys"):
            build(multisig=multisig, owner=owner, **arguments)


# -- the multisig's state --------------------------------------------------------------------------------------------


def account(members: list[tuple[Pubkey, int]], **overrides: Any) -> MultisigAccount:
    value = MultisigAccount(
        address=Pubkey.new_unique(), create_key=Pubkey.new_unique(), config_authority=Pubkey.default(), threshold=2,
        time_lock=0, transaction_index=4, stale_transaction_index=4, rent_collector=None, bump=255,
        members=tuple(Member(k, p) for k, p in sorted(members, key=lambda m: bytes(m[0]))),
    )  # fmt: skip
    return dataclasses.replace(value, **overrides)


def test_a_two_of_two_wallet_allows_the_rotation() -> None:
    owner, agent, new_agent = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    multisig = account([(owner, 7), (agent, 7)])
    assert default_agent(multisig, owner) == agent
    check_multisig_allows_rotation(multisig, owner=owner, agent=agent, new_agent=new_agent, permissions=7)
    check_multisig_allows_rotation(account([(owner, 7), (agent, 2)]), owner=owner, agent=agent, new_agent=new_agent,
                                   permissions=2)  # fmt: skip


def test_default_agent_needs_two_members_one_of_them_the_owner() -> None:
    owner, agent = Pubkey.new_unique(), Pubkey.new_unique()
    for members in ([(owner, 7)], [(owner, 7), (agent, 7), (Pubkey.new_unique(), 2)],
                    [(agent, 7), (Pubkey.new_unique(), 7)]):  # fmt: skip
        with pytest.raises(RotationBuildError, match="name the agent key to replace"):
            default_agent(account(members), owner)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"config_authority": Pubkey.new_unique()}, "config authority"),
        ({"time_lock": 1}, "time lock of 1 s"),
        ({"threshold": 1}, "threshold is 1, not 2"),
        ({"threshold": 3}, "threshold is 3, not 2"),
        ({"transaction_index": 2**64 - 1}, "transaction index is exhausted"),
        ({"owner_permissions": 3}, "owner key lacks"),
        ({"owner_permissions": 6}, "owner key lacks"),
        ({"agent_permissions": 5}, "agent key lacks the Vote"),
        ({"owner": "stranger"}, "owner key is not a member"),
        ({"agent": "stranger"}, "agent key is not a member"),
        ({"agent": "owner"}, "agent key is not a member"),
        ({"new_agent": "owner"}, "new agent key is already a member"),
        ({"new_agent": "agent"}, "new agent key is already a member"),
        ({"permissions": 5}, "with Vote"),
        ({"permissions": 8}, "permissions must be a mask"),
    ],
)
def test_each_obstacle_is_named(change: dict[str, Any], message: str) -> None:
    owner, agent, new_agent = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    named = {"owner": owner, "agent": agent, "stranger": Pubkey.new_unique()}
    members = [(owner, change.pop("owner_permissions", 7)), (agent, change.pop("agent_permissions", 7))]
    roles = {"owner": owner, "agent": agent, "new_agent": new_agent}
    for role in ("owner", "agent", "new_agent"):
        if role in change:
            roles[role] = named[change.pop(role)]
    permissions = change.pop("permissions", 7)
    with pytest.raises(RotationBuildError, match=message):
        check_multisig_allows_rotation(account(members, **change), permissions=permissions, **roles)


def test_spending_limit_replacements_match_the_encoder_and_pass_the_enclave_check() -> None:
    """Each replaced limit: RemoveSpendingLimit(old) and AddSpendingLimit(new create key, same terms, members
    [new agent]) in the config transaction, byte for byte as the IDL-driven encoder writes them; the old
    and new limit accounts writable at the end of the execution."""
    multisig, owner, agent, new_agent = keys()
    merchant, mint = Pubkey.new_unique(), Pubkey.new_unique()
    old = parse_spending_limit_account(
        spending_limit_address(multisig, create := Pubkey.new_unique())[0], PROGRAM_ID,
        spending_limit_account_data(multisig, create, members=[agent], mint=mint, amount=7, period=3,
                                    destinations=[merchant]),
    )  # fmt: skip
    replacement = SpendingLimitReplacement(old, Pubkey.new_unique())
    raw = build(multisig=multisig, owner=owner, agent=agent, new_agent=new_agent, spending_limits=[replacement])
    message = VersionedTransaction.from_bytes(raw).message
    assert isinstance(message, Message)  # a legacy message, as `is_writable` reads it
    create_ix, execute_ix = message.instructions[0], message.instructions[-1]
    actions = [("add_member", {"new_member": {"key": new_agent, "permissions": {"mask": 7}}}),
               ("remove_member", {"old_member": agent}),
               ("remove_spending_limit", {"spending_limit": old.address}),
               ("add_spending_limit", {"create_key": replacement.create_key, "vault_index": 0, "mint": mint,
                                       "amount": 7, "period": "month",
                                       "members": [new_agent],
                                       "destinations": [merchant]})]  # fmt: skip
    assert bytes(create_ix.data) == ENC.data("config_transaction_create", {"actions": actions, "memo": None})
    tail = [message.account_keys[i] for i in bytes(execute_ix.accounts)[6:]]
    assert tail == [old.address, spending_limit_address(multisig, replacement.create_key)[0]]
    assert all(is_writable(message, i) for i in bytes(execute_ix.accounts)[6:])
    check_rotation_transaction(decode_transaction(raw), multisig=multisig, agent=agent, new_agent=new_agent)
    # A limit of another multisig, or one not naming the agent, is not replaced; nor one replaced twice.
    stranger = dataclasses.replace(old, multisig=Pubkey.new_unique())
    not_naming = dataclasses.replace(old, members=(owner,))
    wrong = [SpendingLimitReplacement(stranger, Pubkey.new_unique()),
             SpendingLimitReplacement(not_naming, Pubkey.new_unique())]  # fmt: skip
    for limits in ([wrong[0]], [wrong[1]], [replacement, replacement]):
        with pytest.raises(RotationBuildError, match="spending limit"):
            build(multisig=multisig, owner=owner, agent=agent, new_agent=new_agent, spending_limits=limits)


def test_a_spending_limit_naming_anyone_besides_the_agent_is_refused_not_copied() -> None:
    """A limit whose members are the agent and someone else is not the agent's to move: copying its other members
    into the replacement would let them spend from the vault alone (Squads does not require limit members to be
    multisig members). The builder refuses it, naming the limit and its members."""
    multisig, owner, agent, new_agent = keys()
    for others in ([owner], [Pubkey.new_unique()], [Pubkey.new_unique(), Pubkey.new_unique()]):
        create = Pubkey.new_unique()
        data = spending_limit_account_data(multisig, create, members=[agent, *others])
        old = parse_spending_limit_account(spending_limit_address(multisig, create)[0], PROGRAM_ID, data)
        with pytest.raises(RotationBuildError, match=f"spending limit {old.address} names .*{others[0]}.*not only the "
                           f"agent key {agent}: a rotation moves only the agent's own limits"):  # fmt: skip
            build(multisig=multisig, owner=owner, agent=agent, new_agent=new_agent,
                  spending_limits=[SpendingLimitReplacement(old, Pubkey.new_unique())])  # fmt: skip


def test_a_closed_spending_limit_is_removed_alone_and_passes_the_enclave_check() -> None:
    """``closed_spending_limits``: a limit naming the agent (whatever its other members) is removed without a
    replacement, after the replaced ones, byte for byte as the encoder writes it; its account ends the execution's."""
    multisig, owner, agent, new_agent = keys()
    limits = []
    for members in ([agent], [agent, owner]):
        create = Pubkey.new_unique()
        data = spending_limit_account_data(multisig, create, members=members)
        limits.append(parse_spending_limit_account(spending_limit_address(multisig, create)[0], PROGRAM_ID, data))
    own, shared = limits
    replacement = SpendingLimitReplacement(own, Pubkey.new_unique())
    raw = build(multisig=multisig, owner=owner, agent=agent, new_agent=new_agent, spending_limits=[replacement],
                closed_spending_limits=[shared])  # fmt: skip
    message = VersionedTransaction.from_bytes(raw).message
    assert isinstance(message, Message)  # a legacy message, as `is_writable` reads it
    create_ix, execute_ix = message.instructions[0], message.instructions[-1]
    actions = [("add_member", {"new_member": {"key": new_agent, "permissions": {"mask": 7}}}),
               ("remove_member", {"old_member": agent}),
               ("remove_spending_limit", {"spending_limit": own.address}),
               ("add_spending_limit", {"create_key": replacement.create_key, "vault_index": 0, "mint": own.mint,
                                       "amount": own.amount, "period": "day", "members": [new_agent],
                                       "destinations": []}),
               ("remove_spending_limit", {"spending_limit": shared.address})]  # fmt: skip
    assert bytes(create_ix.data) == ENC.data("config_transaction_create", {"actions": actions, "memo": None})
    tail = [message.account_keys[i] for i in bytes(execute_ix.accounts)[6:]]
    assert tail == [own.address, replacement.address(), shared.address]
    assert all(is_writable(message, i) for i in bytes(execute_ix.accounts)[6:])
    check_rotation_transaction(decode_transaction(raw), multisig=multisig, agent=agent, new_agent=new_agent)
    # Only a limit of this multisig naming the agent, and not one replaced too.
    for closed in (dataclasses.replace(shared, members=(owner,)), dataclasses.replace(shared, multisig=owner), own):
        with pytest.raises(RotationBuildError, match="spending limit"):
            build(multisig=multisig, owner=owner, agent=agent, new_agent=new_agent, spending_limits=[replacement],
                  closed_spending_limits=[closed])  # fmt: skip
