"""Review of the rotation transaction check (`policies.rotation`): hostile shapes that the main test file does not
build, each of which must be refused. Transactions come from the IDL-driven helpers (`tests.support.squads_rotation`)
and are decoded by the real decoder, as the enclave does."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.compute_budget import set_compute_unit_limit
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import (
    AdvanceNonceAccountParams,
    AuthorizeNonceAccountParams,
    advance_nonce_account,
    authorize_nonce_account,
)

from policies.errors import DecodeError
from policies.rotation import RotationTransactionError, check_rotation_transaction
from policies.transaction import decode_transaction
from tests.support.builders import unsigned_tx
from tests.support.squads_rotation import add_member as add
from tests.support.squads_rotation import (
    config_create,
    config_execute,
    proposal_approve,
    proposal_create,
    rotation_instructions,
    unsigned,
)
from tests.support.squads_rotation import remove_member as remove

MULTISIG, OTHER_MULTISIG = Pubkey.new_unique(), Pubkey.new_unique()
OWNER, AGENT, NEW_AGENT = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
INDEX = 3


def check(instructions: Sequence[Instruction], payer: Pubkey = OWNER) -> None:
    decoded = decode_transaction(unsigned(instructions, payer))
    check_rotation_transaction(decoded, multisig=MULTISIG, agent=AGENT, new_agent=NEW_AGENT)


def rotation() -> list[Instruction]:
    return rotation_instructions(MULTISIG, owner=OWNER, agent=AGENT, new_agent=NEW_AGENT, index=INDEX)


def with_accounts(ix: Instruction, *extra: AccountMeta) -> Instruction:
    return Instruction(ix.program_id, bytes(ix.data), [*ix.accounts, *extra])


def test_the_helpers_rotation_passes() -> None:
    """The baseline the refusals below change one thing of."""
    check(rotation())


def test_the_agent_among_the_executions_remaining_accounts_is_refused() -> None:
    """``config_transaction_execute`` takes any remaining accounts (spending limits); the agent's signature must not
    reach it through them."""
    ixs = rotation()
    ixs[-1] = with_accounts(ixs[-1], AccountMeta(AGENT, True, True))
    with pytest.raises(RotationTransactionError, match="the agent key is an account of config_transaction_execute"):
        check(ixs)


def nonce_advance(nonce_account: Pubkey, authority: Pubkey = OWNER) -> Instruction:
    return advance_nonce_account(AdvanceNonceAccountParams(nonce_pubkey=nonce_account, authorized_pubkey=authority))


def test_a_durable_nonce_advance_first_is_allowed() -> None:
    """Durable rotations (the owner's MFA-gated KMS signatures take longer than a blockhash lasts): the advance in
    first place, by the owner, with a ComputeBudget price after it."""
    check([nonce_advance(Pubkey.new_unique()), set_compute_unit_limit(400_000), *rotation()])


def test_a_nonce_advance_anywhere_but_first_is_refused() -> None:
    """Only in first place does the runtime take it for a durable nonce; anywhere else it is a System instruction
    doing something of its own in the rotation."""
    with pytest.raises(RotationTransactionError, match="instruction 1: a nonce advance is allowed only as the first"):
        check([set_compute_unit_limit(400_000), nonce_advance(Pubkey.new_unique()), *rotation()])
    with pytest.raises(RotationTransactionError, match="instruction 1: a nonce advance is allowed only as the first"):
        check([nonce_advance(Pubkey.new_unique()), nonce_advance(Pubkey.new_unique()), *rotation()])
    with pytest.raises(RotationTransactionError, match="instruction 5: a nonce advance is allowed only as the first"):
        check([*rotation(), nonce_advance(Pubkey.new_unique())])


def test_the_agent_in_a_nonce_advance_is_refused() -> None:
    """The agent's signature authorizes its approval and nothing else: not as nonce authority, not as the nonce."""
    with pytest.raises(RotationTransactionError, match="instruction 0: the agent key is authority of advance_nonce"):
        check([nonce_advance(Pubkey.new_unique(), authority=AGENT), *rotation()])
    with pytest.raises(RotationTransactionError, match="instruction 0: the agent key is nonce_account of advance"):
        check([nonce_advance(AGENT), *rotation()])


def test_other_system_instructions_are_refused() -> None:
    nonce = Pubkey.new_unique()
    authorize = authorize_nonce_account(
        AuthorizeNonceAccountParams(nonce_pubkey=nonce, authorized_pubkey=OWNER, new_authority=AGENT)
    )
    with pytest.raises(RotationTransactionError, match=r"instruction 0: program 1{32} .* neither ComputeBudget nor"):
        check([authorize, *rotation()])


def test_the_agent_as_a_program_id_is_refused() -> None:
    with pytest.raises(RotationTransactionError, match="neither ComputeBudget nor Squads"):
        check([*rotation(), Instruction(AGENT, b"", [])])


def test_the_config_transaction_on_the_policys_multisig_but_its_proposal_on_another_is_refused() -> None:
    actions = [add(NEW_AGENT), remove(AGENT)]
    ixs = [
        config_create(MULTISIG, INDEX, OWNER, actions),
        proposal_create(OTHER_MULTISIG, INDEX, OWNER),
        proposal_approve(OTHER_MULTISIG, INDEX, AGENT),
    ]
    with pytest.raises(RotationTransactionError, match="proposal_create is on another multisig"):
        check(ixs)


def test_an_approval_of_the_same_index_on_another_multisig_is_refused() -> None:
    ixs = rotation()
    ixs[3] = proposal_approve(OTHER_MULTISIG, INDEX, AGENT)
    with pytest.raises(RotationTransactionError, match="proposal_approve is on another multisig"):
        check(ixs)


def test_an_execution_on_another_multisig_is_refused() -> None:
    with pytest.raises(RotationTransactionError, match="config_transaction_execute is on another multisig"):
        check([*rotation(), config_execute(OTHER_MULTISIG, INDEX, OWNER)])


def test_the_agent_in_a_compute_budget_instruction_does_not_decode() -> None:
    limit = with_accounts(set_compute_unit_limit(200_000), AccountMeta(AGENT, True, True))
    with pytest.raises(DecodeError, match="set_compute_unit_limit: 1 accounts, expected exactly 0"):
        check([limit, *rotation()])


def test_the_agent_behind_a_lookup_table_does_not_decode() -> None:
    """The enclave decodes without tables: a v0 message that resolves any account through one is refused."""
    table = AddressLookupTableAccount(Pubkey.new_unique(), [MULTISIG, NEW_AGENT])
    message = MessageV0.try_compile(OWNER, rotation(), [table], Hash.new_unique())
    assert message.address_table_lookups
    with pytest.raises(DecodeError, match="lookup table"):
        check_rotation_transaction(
            decode_transaction(unsigned_tx(message)), multisig=MULTISIG, agent=AGENT, new_agent=NEW_AGENT
        )
