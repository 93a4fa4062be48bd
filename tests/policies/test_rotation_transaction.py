"""The agent-key rotation transaction check (`policies.rotation`): what the old agent key may co-sign.

Transactions are compiled by solders from instructions built by the independent, IDL-driven Squads encoder
(`tests.support.squads_encoder`), decoded by the real transaction decoder and checked. Squads PDAs are derived here
from the program's seeds, not with the helpers of the code under test. The compiled Squads program is not available
offline, so nothing here runs on LiteSVM: the on-chain behaviour is taken from the program sources and the IDL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.compute_budget import request_heap_frame, set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer

from policies.errors import DecodeError, PolicyEngineError
from policies.rotation import RotationTransactionError, check_rotation_transaction, spending_limit_replacements
from policies.transaction import decode_transaction
from tests.support.builders import unsigned_tx
from tests.support.squads_encoder import PROGRAM_ID, SquadsEncoder, compile_vault_message

ENC = SquadsEncoder()
SYSTEM = Pubkey.from_string("11111111111111111111111111111111")
MEMO = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
MULTISIG, OTHER_MULTISIG = Pubkey.new_unique(), Pubkey.new_unique()
OWNER, AGENT, NEW_AGENT, STRANGER = (Pubkey.new_unique() for _ in range(4))
INDEX = 7
BLOCKHASH = Hash.new_unique()


def _index(index: int) -> bytes:
    return index.to_bytes(8, "little")


def transaction_pda(index: int = INDEX, multisig: Pubkey = MULTISIG) -> Pubkey:
    return Pubkey.find_program_address([b"multisig", bytes(multisig), b"transaction", _index(index)], PROGRAM_ID)[0]


def proposal_pda(index: int = INDEX, multisig: Pubkey = MULTISIG) -> Pubkey:
    seeds = [b"multisig", bytes(multisig), b"transaction", _index(index), b"proposal"]
    return Pubkey.find_program_address(seeds, PROGRAM_ID)[0]


VAULT = Pubkey.find_program_address([b"multisig", bytes(MULTISIG), b"vault", bytes([0])], PROGRAM_ID)[0]

# -- instructions ------------------------------------------------------------------------------------------------

Action = tuple[str, dict[str, Any]]


def add(key: Pubkey = NEW_AGENT, mask: int = 7) -> Action:
    return ("add_member", {"new_member": {"key": key, "permissions": {"mask": mask}}})


def remove(key: Pubkey = AGENT) -> Action:
    return ("remove_member", {"old_member": key})


def config_create(
    *actions: Action,
    creator: Pubkey = OWNER,
    rent_payer: Pubkey = OWNER,
    index: int = INDEX,
    multisig: Pubkey = MULTISIG,
) -> Instruction:
    accounts = {"multisig": multisig, "transaction": transaction_pda(index, multisig), "creator": creator,
                "rent_payer": rent_payer, "system_program": SYSTEM}  # fmt: skip
    chosen = actions or (add(), remove())
    return ENC.instruction("config_transaction_create", accounts, {"actions": list(chosen), "memo": None})


def proposal_create(
    creator: Pubkey = OWNER, rent_payer: Pubkey = OWNER, index: int = INDEX, multisig: Pubkey = MULTISIG
) -> Instruction:
    accounts = {"multisig": multisig, "proposal": proposal_pda(index, multisig), "creator": creator,
                "rent_payer": rent_payer, "system_program": SYSTEM}  # fmt: skip
    return ENC.instruction("proposal_create", accounts, {"transaction_index": index, "draft": False})


def vote(
    member: Pubkey, index: int = INDEX, multisig: Pubkey = MULTISIG, name: str = "proposal_approve"
) -> Instruction:
    accounts = {"multisig": multisig, "member": member, "proposal": proposal_pda(index, multisig)}
    return ENC.instruction(name, accounts, {"memo": None})


def execute(
    member: Pubkey = OWNER, rent_payer: Pubkey | None = OWNER, index: int = INDEX, transaction_index: int = INDEX
) -> Instruction:
    accounts = {"multisig": MULTISIG, "member": member, "proposal": proposal_pda(index),
                "transaction": transaction_pda(transaction_index), "rent_payer": rent_payer,
                "system_program": SYSTEM}  # fmt: skip
    return ENC.instruction("config_transaction_execute", accounts)


def vault_create(*inner: Instruction) -> Instruction:
    accounts = {"multisig": MULTISIG, "transaction": transaction_pda(INDEX + 1), "creator": OWNER,
                "rent_payer": OWNER, "system_program": SYSTEM}  # fmt: skip
    args = {"vault_index": 0, "ephemeral_signers": 0, "transaction_message": compile_vault_message(VAULT, inner),
            "memo": None}  # fmt: skip
    return ENC.instruction("vault_transaction_create", accounts, args)


def pay(source: Pubkey, lamports: int = 1_000) -> Instruction:
    return transfer(TransferParams(from_pubkey=source, to_pubkey=STRANGER, lamports=lamports))


def memo(signer: Pubkey) -> Instruction:
    return Instruction(MEMO, b"rotate", [AccountMeta(signer, True, False)])


def minimal() -> list[Instruction]:
    return [config_create(), proposal_create(), vote(AGENT)]


def full() -> list[Instruction]:
    return [set_compute_unit_price(5_000), set_compute_unit_limit(200_000), config_create(), proposal_create(),
            vote(OWNER), vote(AGENT), execute()]  # fmt: skip


# -- checking ----------------------------------------------------------------------------------------------------


def raw(instructions: Sequence[Instruction], payer: Pubkey = OWNER) -> bytes:
    return unsigned_tx(Message.new_with_blockhash(list(instructions), payer, BLOCKHASH))


def check(instructions: Sequence[Instruction], payer: Pubkey = OWNER, **keys: Pubkey) -> None:
    chosen = {"multisig": MULTISIG, "agent": AGENT, "new_agent": NEW_AGENT, **keys}
    check_rotation_transaction(decode_transaction(raw(instructions, payer)), **chosen)


def test_the_full_rotation_passes() -> None:
    check(full())


def test_the_minimal_rotation_passes() -> None:
    check(minimal())


def test_actions_in_either_order_and_any_order_of_instructions_pass() -> None:
    check([vote(AGENT), proposal_create(), config_create(remove(), add(mask=2)), request_heap_frame(64 * 1024)])


def test_spending_limits_naming_the_agent_are_replaced_for_the_new_key_or_closed() -> None:
    """A rotation may replace spending limits (each removal directly followed by the addition of a limit whose
    members are exactly the new agent key) and close others (a removal alone)."""
    check([config_create(add(), remove(), LIMIT_REMOVED, limit_added(NEW_AGENT)), proposal_create(), vote(AGENT)])
    check([config_create(LIMIT_REMOVED, limit_added(NEW_AGENT), add(), LIMIT_REMOVED, limit_added(NEW_AGENT),
                         remove()), proposal_create(), vote(AGENT)])  # fmt: skip
    check([config_create(add(), remove(), LIMIT_REMOVED), proposal_create(), vote(AGENT)])
    check([config_create(add(), LIMIT_REMOVED, LIMIT_REMOVED, limit_added(NEW_AGENT), remove(), LIMIT_REMOVED),
           proposal_create(), vote(AGENT)])  # fmt: skip


def test_the_pairing_rule_is_one_function_the_owners_cosign_reads_limits_with() -> None:
    """`spending_limit_replacements` (what `check_rotation_transaction` and `waiaas owner cosign` both apply): each
    removal with the addition right after it, or None; the refusals are the check's."""
    first, second = Pubkey.new_unique(), Pubkey.new_unique()
    instructions = [config_create(add(), ("remove_spending_limit", {"spending_limit": first}), limit_added(NEW_AGENT),
                                  remove(), ("remove_spending_limit", {"spending_limit": second})),
                    proposal_create(), vote(AGENT)]  # fmt: skip
    actions = decode_transaction(raw(instructions)).instructions[0].args["actions"]
    assert isinstance(actions, tuple)
    pairs = spending_limit_replacements(actions, new_agent=NEW_AGENT)
    read = [(removed["spending_limit"], added and added["members"]) for removed, added in pairs]
    assert read == [(first, (NEW_AGENT,)), (second, None)]
    with pytest.raises(RotationTransactionError, match="must be exactly the new agent key"):
        spending_limit_replacements(actions, new_agent=STRANGER)
    with pytest.raises(RotationTransactionError, match=r"^rotation transaction refused: instruction 4: .* replaces no"):
        spending_limit_replacements([limit_added(NEW_AGENT)], new_agent=NEW_AGENT, instruction_index=4)


def test_a_v0_message_without_lookup_tables_passes_and_one_with_tables_does_not_decode() -> None:
    message = MessageV0.try_compile(OWNER, full(), [], BLOCKHASH)
    check_rotation_transaction(decode_transaction(unsigned_tx(message)), multisig=MULTISIG, agent=AGENT,
                               new_agent=NEW_AGENT)  # fmt: skip
    table = AddressLookupTableAccount(Pubkey.new_unique(), [SYSTEM, MULTISIG])
    with pytest.raises(DecodeError, match="lookup"):
        decode_transaction(unsigned_tx(MessageV0.try_compile(OWNER, full(), [table], BLOCKHASH)))


def _not_signing(ix: Instruction, key: Pubkey) -> Instruction:
    metas = [AccountMeta(m.pubkey, False, m.is_writable) if m.pubkey == key else m for m in ix.accounts]
    return Instruction(ix.program_id, bytes(ix.data), metas)


EXTRA_ACTIONS: list[Action] = [
    ("change_threshold", {"new_threshold": 1}),
    ("set_time_lock", {"new_time_lock": 0}),
    ("set_rent_collector", {"new_rent_collector": STRANGER}),
    ("set_rent_collector", {"new_rent_collector": None}),
]


def limit_added(*members: Pubkey) -> Action:
    fields = {"create_key": STRANGER, "vault_index": 0, "mint": Pubkey.default(), "amount": 10**12, "period": "day",
              "members": list(members), "destinations": []}  # fmt: skip
    return ("add_spending_limit", fields)


LIMIT_REMOVED: Action = ("remove_spending_limit", {"spending_limit": STRANGER})

# (name, instructions, fee payer, expected message, instruction index named or None)
REFUSALS: list[tuple[str, list[Instruction], Pubkey, str, int | None]] = [
    ("agent is the fee payer", full(), AGENT, "the agent key is the fee payer", None),
    ("agent is not a signer", [config_create(), proposal_create(), _not_signing(vote(AGENT), AGENT)], OWNER,
     "not a required signer", None),
    ("agent absent", [config_create(), proposal_create(), vote(OWNER)], OWNER, "not a required signer", None),
    ("agent creates the config transaction", [config_create(creator=AGENT), proposal_create(), vote(AGENT)], OWNER,
     "the agent key is creator of config_transaction_create", 0),
    ("agent pays the config transaction's rent", [config_create(rent_payer=AGENT), proposal_create(), vote(AGENT)],
     OWNER, "the agent key is rent_payer of config_transaction_create", 0),
    ("agent creates the proposal", [config_create(), proposal_create(creator=AGENT), vote(AGENT)], OWNER,
     "the agent key is creator of proposal_create", 1),
    ("agent pays the proposal's rent", [config_create(), proposal_create(rent_payer=AGENT), vote(AGENT)], OWNER,
     "the agent key is rent_payer of proposal_create", 1),
    ("agent executes", [*minimal(), execute(member=AGENT)], OWNER,
     "the agent key is member of config_transaction_execute", 3),
    ("agent pays the execution's rent", [*minimal(), execute(rent_payer=AGENT)], OWNER,
     "the agent key is rent_payer of config_transaction_execute", 3),
    ("a system transfer from the owner", [*minimal(), pay(OWNER)], OWNER, "neither ComputeBudget nor Squads", 3),
    ("a system transfer from the agent", [pay(AGENT), *minimal()], OWNER, "neither ComputeBudget nor Squads", 0),
    ("a memo", [*minimal(), memo(OWNER)], OWNER, "neither ComputeBudget nor Squads", 3),
    ("a second config transaction", [*minimal(), config_create(index=INDEX + 1)], OWNER,
     "2 config_transaction_create instructions", 3),
    ("no config transaction", [proposal_create(), vote(AGENT)], OWNER, "0 config_transaction_create", None),
    ("a second proposal", [*minimal(), proposal_create(index=INDEX + 1)], OWNER, "2 proposal_create", 3),
    ("no proposal", [config_create(), vote(AGENT)], OWNER, "0 proposal_create", None),
    *[(f"extra action {a[0]}", [config_create(add(), remove(), a), proposal_create(), vote(AGENT)], OWNER,
       f"config action {a[0]} is not part of a rotation", 0) for a in EXTRA_ACTIONS],
    *[(f"{a[0]} instead of remove_member", [config_create(add(), a), proposal_create(), vote(AGENT)], OWNER,
       f"config action {a[0]} is not part of a rotation", 0) for a in EXTRA_ACTIONS],
    ("a spending limit added, none removed", [config_create(add(), remove(), limit_added(NEW_AGENT)),
                                              proposal_create(), vote(AGENT)], OWNER,
     "add_spending_limit replaces no removed limit", 0),
    ("a spending limit added before the one it would replace is removed",
     [config_create(add(), remove(), limit_added(NEW_AGENT), LIMIT_REMOVED), proposal_create(), vote(AGENT)],
     OWNER, "add_spending_limit replaces no removed limit", 0),
    ("a replacement limit naming the old agent", [config_create(add(), remove(), LIMIT_REMOVED, limit_added(AGENT)),
                                                  proposal_create(), vote(AGENT)], OWNER,
     "add_spending_limit members .*: must be exactly the new agent key", 0),
    ("a replacement limit naming both agents", [config_create(add(), remove(), LIMIT_REMOVED,
                                                              limit_added(NEW_AGENT, AGENT)),
                                                proposal_create(), vote(AGENT)], OWNER,
     "add_spending_limit members .*: must be exactly the new agent key", 0),
    ("a replacement limit not naming the new agent", [config_create(add(), remove(), LIMIT_REMOVED,
                                                                    limit_added(OWNER)),
                                                      proposal_create(), vote(AGENT)], OWNER,
     "add_spending_limit members .*: must be exactly the new agent key", 0),
    ("a replacement limit naming the new agent and a stranger",
     [config_create(add(), remove(), LIMIT_REMOVED, limit_added(NEW_AGENT, STRANGER)), proposal_create(),
      vote(AGENT)], OWNER, f"add_spending_limit members .*{STRANGER}.*: must be exactly the new agent key", 0),
    ("a replacement limit naming the new agent and the owner",
     [config_create(add(), remove(), LIMIT_REMOVED, limit_added(OWNER, NEW_AGENT)), proposal_create(), vote(AGENT)],
     OWNER, "add_spending_limit members .*: must be exactly the new agent key", 0),
    ("a replacement limit naming nobody", [config_create(add(), remove(), LIMIT_REMOVED, limit_added()),
                                           proposal_create(), vote(AGENT)], OWNER,
     r"add_spending_limit members \[\]: must be exactly the new agent key", 0),
    ("remove_spending_limit instead of remove_member", [config_create(add(), LIMIT_REMOVED), proposal_create(),
                                                         vote(AGENT)], OWNER, "lack add_member or remove_member", 0),
    ("a spending limit added after the member, not the removal", [config_create(add(), LIMIT_REMOVED, remove(),
                                                                                limit_added(NEW_AGENT)),
                                                                  proposal_create(), vote(AGENT)], OWNER,
     "add_spending_limit replaces no removed limit", 0),
    ("two limits added for one removed", [config_create(add(), remove(), LIMIT_REMOVED, limit_added(NEW_AGENT),
                                                        limit_added(NEW_AGENT)), proposal_create(), vote(AGENT)],
     OWNER, "add_spending_limit replaces no removed limit", 0),
    ("add_member of another key", [config_create(add(STRANGER), remove()), proposal_create(), vote(AGENT)], OWNER,
     "add_member adds .* not the new agent key", 0),
    ("add_member of the old agent", [config_create(add(AGENT), remove()), proposal_create(), vote(AGENT)], OWNER,
     "add_member adds .* not the new agent key", 0),
    ("remove_member of the owner", [config_create(add(), remove(OWNER)), proposal_create(), vote(AGENT)], OWNER,
     "remove_member removes .* not the agent key", 0),
    ("remove_member of the new agent", [config_create(add(), remove(NEW_AGENT)), proposal_create(), vote(AGENT)],
     OWNER, "remove_member removes .* not the agent key", 0),
    ("add without remove", [config_create(add()), proposal_create(), vote(AGENT)], OWNER, "1 config actions", 0),
    ("remove without add", [config_create(remove()), proposal_create(), vote(AGENT)], OWNER, "1 config actions", 0),
    ("add twice", [config_create(add(), add()), proposal_create(), vote(AGENT)], OWNER,
     "a second add_member is not part", 0),
    ("remove twice", [config_create(remove(), remove()), proposal_create(), vote(AGENT)], OWNER,
     "a second remove_member is not part", 0),
    *[(f"permissions {mask}", [config_create(add(mask=mask), remove()), proposal_create(), vote(AGENT)], OWNER,
       f"permissions {mask}: must include Vote and be at most 7", 0) for mask in (0, 1, 4, 5, 8, 10, 15, 255)],
    ("everything on another multisig", [config_create(multisig=OTHER_MULTISIG), proposal_create(
     multisig=OTHER_MULTISIG), vote(AGENT, multisig=OTHER_MULTISIG)], OWNER, "on another multisig", 0),
    ("owner approves on another multisig", [*minimal(), vote(OWNER, multisig=OTHER_MULTISIG)], OWNER,
     "proposal_approve is on another multisig", 3),
    ("agent approves another proposal", [config_create(), proposal_create(), vote(AGENT, INDEX + 1)], OWNER,
     f"proposal_approve of another proposal than index {INDEX}", 2),
    ("agent approves an older proposal", [config_create(), proposal_create(), vote(AGENT, INDEX - 1)], OWNER,
     f"proposal_approve of another proposal than index {INDEX}", 2),
    ("agent approves twice", [*minimal(), vote(AGENT)], OWNER, "the agent key approves 2 times", None),
    ("owner approves another proposal", [*minimal(), vote(OWNER, INDEX + 1)], OWNER,
     "proposal_approve of another proposal", 3),
    ("the proposal is of another index", [config_create(index=INDEX + 1), proposal_create(), vote(AGENT)], OWNER,
     f"the config transaction is not the one of proposal index {INDEX}", 0),
    ("execution of another proposal", [*minimal(), execute(index=INDEX + 1, transaction_index=INDEX + 1)], OWNER,
     "config_transaction_execute of another proposal", 3),
    ("execution of another config transaction", [*minimal(), execute(transaction_index=INDEX + 1)], OWNER,
     "config_transaction_execute of another config transaction", 3),
    ("a vault transaction", [*minimal(), vault_create(pay(VAULT))], OWNER, "carries inner instructions", 3),
    ("a vault transaction with no instruction", [*minimal(), vault_create()], OWNER,
     "Squads vault_transaction_create is not part of a rotation", 3),
    ("the owner rejects", [*minimal(), vote(OWNER, name="proposal_reject")], OWNER,
     "Squads proposal_reject is not part", 3),
    ("the agent rejects", [config_create(), proposal_create(), vote(AGENT, name="proposal_reject")], OWNER,
     "Squads proposal_reject is not part", 2),
    ("the owner cancels", [*minimal(), vote(OWNER, name="proposal_cancel")], OWNER,
     "Squads proposal_cancel is not part", 3),
]  # fmt: skip


@pytest.mark.parametrize(("instructions", "payer", "message", "index"), [c[1:] for c in REFUSALS],
                         ids=[c[0] for c in REFUSALS])  # fmt: skip
def test_refusals(instructions: list[Instruction], payer: Pubkey, message: str, index: int | None) -> None:
    with pytest.raises(RotationTransactionError, match=f"^rotation transaction refused: .*{message}") as info:
        check(instructions, payer)
    assert info.value.instruction_index == index


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"agent": NEW_AGENT, "new_agent": NEW_AGENT}, "the new agent key is the agent key"),
        ({"new_agent": STRANGER}, "add_member adds"),
        ({"agent": STRANGER}, "not a required signer"),
        ({"multisig": OTHER_MULTISIG}, "on another multisig"),
    ],
)
def test_the_callers_keys_are_what_is_checked(keys: dict[str, Pubkey], message: str) -> None:
    with pytest.raises(RotationTransactionError, match=message):
        check(full(), **keys)


def test_the_error_is_a_policy_engine_error() -> None:
    assert issubclass(RotationTransactionError, PolicyEngineError)


# -- properties --------------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_never_passes(data: bytes) -> None:
    with pytest.raises(PolicyEngineError):
        check_rotation_transaction(decode_transaction(data), multisig=MULTISIG, agent=AGENT, new_agent=NEW_AGENT)


GOOD = {
    "price": set_compute_unit_price(1),
    "limit": set_compute_unit_limit(100_000),
    "config": config_create(),
    "config_reversed": config_create(remove(), add()),
    "proposal": proposal_create(),
    "approve_owner": vote(OWNER),
    "approve_agent": vote(AGENT),
    "execute": execute(),
}
BAD = {
    "memo": memo(OWNER),
    "transfer": pay(OWNER),
    "reject": vote(OWNER, name="proposal_reject"),
    "approve_agent_other": vote(AGENT, INDEX + 1),
    "config_threshold": config_create(add(), remove(), ("change_threshold", {"new_threshold": 1})),
    "config_stranger": config_create(add(STRANGER), remove()),
    "config_other_index": config_create(index=INDEX + 1),
    "execute_agent": execute(member=AGENT),
    "proposal_agent": proposal_create(rent_payer=AGENT),
}
PIECES = sorted({**GOOD, **BAD})


OPTIONAL = ["price", "limit", "approve_owner", "execute"]
CORE = ["config", "proposal", "approve_agent"]


@st.composite
def piece_names(draw: st.DrawFn) -> list[str]:
    """The core of a rotation and extras, in any order: extras only optional good pieces half of the time (so that
    many examples pass), any piece (bad ones, duplicates of the core) otherwise; sometimes a core piece dropped."""
    extras = draw(st.lists(st.sampled_from(OPTIONAL), max_size=4) | st.lists(st.sampled_from(PIECES), max_size=4))
    core = [name for name in CORE if draw(st.integers(0, 9)) > 0]
    return draw(st.permutations([*core, *extras]))


@settings(max_examples=150, deadline=None)
@given(piece_names())
def test_a_transaction_passes_exactly_when_it_is_a_rotation(names: list[str]) -> None:
    """Any mix of good and bad pieces: passes iff no bad piece, one config transaction (either action order), one
    proposal and one agent approval; owner approvals, executions and compute budget settings in any number."""
    configs = names.count("config") + names.count("config_reversed")
    expected = (
        not any(name in BAD for name in names)
        and configs == 1
        and names.count("proposal") == 1
        and names.count("approve_agent") == 1
    )
    instructions = [{**GOOD, **BAD}[name] for name in names]
    try:
        transaction = decode_transaction(raw(instructions))
    except DecodeError:
        return  # too large, or a duplicate compute budget setting: never reaches the check
    if expected:
        check_rotation_transaction(transaction, multisig=MULTISIG, agent=AGENT, new_agent=NEW_AGENT)
    else:
        with pytest.raises(RotationTransactionError):
            check_rotation_transaction(transaction, multisig=MULTISIG, agent=AGENT, new_agent=NEW_AGENT)
