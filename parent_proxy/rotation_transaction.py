"""The one Solana transaction that rotates a wallet's agent key on chain (DESIGN.md section 3, Rotation).

Five Squads v4 instructions, all for the config transaction at index ``transaction_index`` (the multisig's
current ``transaction_index`` + 1: `config_transaction_create` takes exactly that one):

1. ``config_transaction_create``   actions ``[AddMember{new agent, permissions}, RemoveMember{old agent}]``, no memo;
                                   creator and rent payer: the owner;
2. ``proposal_create``             for that index, not a draft; creator and rent payer: the owner;
3. ``proposal_approve``            by the owner, no memo;
4. ``proposal_approve``            by the old agent, no memo (the 2-of-2 threshold is met here);
5. ``config_transaction_execute``  by the owner, with the owner as rent payer and the System program (optional
                                   accounts the program needs when the new member makes the account grow).

An optional ``SetComputeUnitPrice`` goes first. The owner pays the fee. The result is an unsigned legacy
transaction (every signature slot zero): the owner signs an agent-key rotation order
(`policies.orders.AGENT_KEY_ROTATION_PURPOSE`) over its message, the enclave co-signs as the old agent, and the
owner adds their own signature (``waiaas owner cosign``).

`check_multisig_allows_rotation` says, from the multisig account (`parent_proxy.squads_multisig_account`), whether
the program would execute it: autonomous, no time lock, threshold 2, the owner a member with every permission, the
agent a voting member, the candidate not a member. `default_agent` names the agent of a two-member multisig.

The instruction data is written here, for exactly these instructions (Anchor: discriminator
``sha256("global:<name>")[:8]``, then the Borsh arguments of the IDL ``squads_multisig_program.json``); account
lists follow the IDL's order and flags. The tests check both against an independent IDL-driven encoder.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

from solders.compute_budget import set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from parent_proxy.squads_multisig_account import (
    PERMISSION_EXECUTE,
    PERMISSION_INITIATE,
    PERMISSION_VOTE,
    PERMISSIONS_ALL,
    MultisigAccount,
)
from policies.decoders.squads_vault import squads_proposal_address, squads_transaction_address
from policies.programs import SQUADS_V4_PROGRAM, SYSTEM_PROGRAM
from policies.transaction import MAX_TRANSACTION_BYTES

MAX_U64: Final = 2**64 - 1

_ADD_MEMBER, _REMOVE_MEMBER = 0, 1
"""``ConfigAction`` variant indexes (IDL order)."""
_NONE = b"\x00"
"""Borsh ``Option::None`` (every memo here)."""


def _discriminator(name: str) -> bytes:
    return hashlib.sha256(f"global:{name}".encode()).digest()[:8]


CONFIG_TRANSACTION_CREATE: Final = _discriminator("config_transaction_create")
PROPOSAL_CREATE: Final = _discriminator("proposal_create")
PROPOSAL_APPROVE: Final = _discriminator("proposal_approve")
CONFIG_TRANSACTION_EXECUTE: Final = _discriminator("config_transaction_execute")


class RotationBuildError(ValueError):
    """The arguments cannot make a valid rotation transaction (the message names the argument)."""


def config_actions_data(new_agent: Pubkey, permissions: int, agent: Pubkey) -> bytes:
    """``ConfigTransactionCreateArgs { actions: [AddMember, RemoveMember], memo: None }``, discriminator first."""
    actions = struct.pack("<I", 2)
    actions += bytes([_ADD_MEMBER]) + bytes(new_agent) + bytes([permissions])
    actions += bytes([_REMOVE_MEMBER]) + bytes(agent)
    return CONFIG_TRANSACTION_CREATE + actions + _NONE


def _check_permissions(permissions: int) -> None:
    if type(permissions) is not int or not 0 <= permissions <= PERMISSIONS_ALL or not permissions & PERMISSION_VOTE:
        raise RotationBuildError(
            f"permissions must be a mask of at most {PERMISSIONS_ALL} with Vote ({PERMISSION_VOTE})"
        )


def _check(*, transaction_index: int, owner: Pubkey, agent: Pubkey, new_agent: Pubkey, permissions: int,
           compute_unit_price: int | None) -> None:  # fmt: skip
    if type(transaction_index) is not int or not 1 <= transaction_index <= MAX_U64:
        raise RotationBuildError("transaction_index must be 1 .. 2**64-1 (the multisig's index + 1)")
    _check_permissions(permissions)
    if compute_unit_price is not None and (
        type(compute_unit_price) is not int or not 0 <= compute_unit_price <= MAX_U64
    ):
        raise RotationBuildError("compute_unit_price must be 0 .. 2**64-1 micro-lamports")
    if len({owner, agent, new_agent}) != 3:
        raise RotationBuildError("the owner, the agent and the new agent must be three different keys")


def rotation_instructions(
    *, multisig: Pubkey, transaction_index: int, owner: Pubkey, agent: Pubkey, new_agent: Pubkey, permissions: int
) -> list[Instruction]:
    """The five Squads instructions, in order (arguments not checked: see `build_rotation_transaction`)."""
    transaction = squads_transaction_address(multisig, transaction_index)
    proposal = squads_proposal_address(multisig, transaction_index)

    def meta(key: Pubkey, *, signer: bool = False, writable: bool = False) -> AccountMeta:
        return AccountMeta(key, signer, writable)

    def approve(member: Pubkey) -> Instruction:
        accounts = [meta(multisig), meta(member, signer=True, writable=True), meta(proposal, writable=True)]
        return Instruction(SQUADS_V4_PROGRAM, PROPOSAL_APPROVE + _NONE, accounts)

    create = Instruction(
        SQUADS_V4_PROGRAM,
        config_actions_data(new_agent, permissions, agent),
        [meta(multisig, writable=True), meta(transaction, writable=True), meta(owner, signer=True),
         meta(owner, signer=True, writable=True), meta(SYSTEM_PROGRAM)],
    )  # fmt: skip
    propose = Instruction(
        SQUADS_V4_PROGRAM,
        PROPOSAL_CREATE + struct.pack("<Q", transaction_index) + b"\x00",  # draft: false
        [meta(multisig), meta(proposal, writable=True), meta(owner, signer=True),
         meta(owner, signer=True, writable=True), meta(SYSTEM_PROGRAM)],
    )  # fmt: skip
    execute = Instruction(
        SQUADS_V4_PROGRAM,
        CONFIG_TRANSACTION_EXECUTE,
        [meta(multisig, writable=True), meta(owner, signer=True), meta(proposal, writable=True), meta(transaction),
         meta(owner, signer=True, writable=True), meta(SYSTEM_PROGRAM)],
    )  # fmt: skip
    return [create, propose, approve(owner), approve(agent), execute]


def build_rotation_transaction(
    *,
    multisig: Pubkey,
    transaction_index: int,
    owner: Pubkey,
    agent: Pubkey,
    new_agent: Pubkey,
    recent_blockhash: Hash,
    permissions: int = PERMISSIONS_ALL,
    compute_unit_price: int | None = None,
) -> bytes:
    """The unsigned, serialized legacy transaction described in the module docstring; `RotationBuildError` for
    arguments that cannot make one. Signers: the owner (fee payer, slot 0) and the old agent."""
    _check(transaction_index=transaction_index, owner=owner, agent=agent, new_agent=new_agent,
           permissions=permissions, compute_unit_price=compute_unit_price)  # fmt: skip
    instructions = rotation_instructions(
        multisig=multisig, transaction_index=transaction_index, owner=owner, agent=agent, new_agent=new_agent,
        permissions=permissions,
    )  # fmt: skip
    if compute_unit_price is not None:
        instructions.insert(0, set_compute_unit_price(compute_unit_price))
    message = Message.new_with_blockhash(instructions, owner, recent_blockhash)
    unsigned = VersionedTransaction.populate(message, [Signature.default()] * message.header.num_required_signatures)
    raw = bytes(unsigned)
    if len(raw) > MAX_TRANSACTION_BYTES:  # about 600 bytes; a guard, not an expected case
        raise RotationBuildError("the rotation transaction is larger than a Solana packet")
    return raw


REQUIRED_THRESHOLD: Final = 2
"""The transaction carries exactly two approvals (owner, old agent): with threshold 1 the owner's approval alone
settles the proposal and the agent's then fails (``proposal_approve`` needs an Active proposal); with more than 2
it never settles and the execution fails."""


def default_agent(account: MultisigAccount, owner: Pubkey) -> Pubkey:
    """The agent key of a two-member multisig: the member that is not ``owner``."""
    others = [m.key for m in account.members if m.key != owner]
    if len(account.members) != 2 or len(others) != 1:
        raise RotationBuildError(
            f"the multisig has {len(account.members)} members, the owner key among them: "
            f"{'yes' if len(others) < len(account.members) else 'no'}; name the agent key to replace"
        )
    return others[0]


def check_multisig_allows_rotation(
    account: MultisigAccount, *, owner: Pubkey, agent: Pubkey, new_agent: Pubkey, permissions: int
) -> None:
    """Return if `build_rotation_transaction` for ``account`` would execute on chain as far as the multisig's state
    tells (the program's checks in ``config_transaction_create``, ``proposal_approve`` and
    ``config_transaction_execute``); raise `RotationBuildError` naming the first obstacle. Signatures, balances and
    the blockhash are the caller's."""
    # 1. Autonomous: a controlled multisig (config authority set) refuses config transactions.
    if account.config_authority != Pubkey.default():
        raise RotationBuildError("the multisig has a config authority; config transactions are not supported on it")
    # 2. No time lock: the execution is in the same transaction as the approvals.
    if account.time_lock != 0:
        raise RotationBuildError(f"the multisig has a time lock of {account.time_lock} s; it must be 0")
    # 3. Threshold: exactly the two approvals this transaction carries.
    if account.threshold != REQUIRED_THRESHOLD:
        raise RotationBuildError(f"the multisig threshold is {account.threshold}, not {REQUIRED_THRESHOLD}")
    # 4. The owner creates, approves and executes; the agent approves; the new key is not a member yet.
    owner_member = account.member(owner)
    if owner_member is None:
        raise RotationBuildError("the owner key is not a member of the multisig")
    if not owner_member.has(PERMISSION_INITIATE | PERMISSION_VOTE | PERMISSION_EXECUTE):
        raise RotationBuildError("the owner key lacks the Initiate, Vote or Execute permission")
    agent_member = account.member(agent)
    if agent_member is None or agent == owner:
        raise RotationBuildError("the agent key is not a member of the multisig (or is the owner key)")
    if not agent_member.has(PERMISSION_VOTE):
        raise RotationBuildError("the agent key lacks the Vote permission")
    if account.member(new_agent) is not None:
        raise RotationBuildError("the new agent key is already a member of the multisig")
    # 5. The next transaction index exists.
    if account.transaction_index >= MAX_U64:
        raise RotationBuildError("the multisig's transaction index is exhausted")
    # 6. The new member's permissions: known bits, with Vote. With it, the owner's Vote and threshold 2, the
    # multisig keeps enough voters (``Multisig::invariant``), and the owner keeps Initiate and Execute.
    _check_permissions(permissions)
