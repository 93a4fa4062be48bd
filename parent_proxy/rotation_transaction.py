"""The one Solana transaction that rotates a wallet's agent key on chain (DESIGN.md section 3, Rotation).

Five Squads v4 instructions, all for the config transaction at index ``transaction_index`` (the multisig's
current ``transaction_index`` + 1: `config_transaction_create` takes exactly that one):

1. ``config_transaction_create``   actions ``[AddMember{new agent, permissions}, RemoveMember{old agent}]``, then
                                   for each spending limit of the old agent ``RemoveSpendingLimit{it}`` and
                                   ``AddSpendingLimit{same vault, mint, amount, period, destinations; members
                                   [new agent]}``, then ``RemoveSpendingLimit{it}`` alone for each limit the owner
                                   chose to close instead; no memo; creator and rent payer: the owner;
2. ``proposal_create``             for that index, not a draft; creator and rent payer: the owner;
3. ``proposal_approve``            by the owner, no memo;
4. ``proposal_approve``            by the old agent, no memo (the 2-of-2 threshold is met here);
5. ``config_transaction_execute``  by the owner, with the owner as rent payer and the System program (optional
                                   accounts the program needs when the new member makes the account grow), then
                                   each replaced spending limit and its replacement, then each closed limit
                                   (writable: the program finds them by address, closes or creates them).

Spending limits: a rotation that left a limit naming the old agent key would leave the new key unable to use it,
and, on Squads program versions whose ``spending_limit_use`` checks only the limit's own member list (not multisig
membership; the program's source has had both), the old key able to spend through it. Each such limit is replaced
in the same config transaction (`SpendingLimitReplacement`); the proxy refuses the switch while any limit of the
multisig still names the old key. About two replacements fit in one transaction (`RotationBuildError` beyond).
Only the agent's own limits are moved: members exactly ``[old agent]`` (DESIGN.md section 10). A limit naming the
old agent and anyone else is refused, not copied: its other members could spend from the vault alone (the program
does not require limit members to be multisig members), and copying them would carry that over to a limit the
enclave co-signs into being (`policies.rotation` refuses one too). Such a limit can instead be closed in the
rotation without a replacement (``closed_spending_limits``; ``rotation-transaction --close-spending-limit``): the
enclave's policy treats every other config transaction as an authority change and refuses to vote for it, so the
rotation is the one transaction that can take it off the multisig.

Blockhash: a recent one (valid for about a minute) or a durable nonce (`NonceAccount`, whose authority must be the
owner): then the transaction starts with the System ``AdvanceNonceAccount`` of that account, signed by the owner,
carries the stored nonce as its blockhash, and stays valid until the nonce advances.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from solders.compute_budget import set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import AdvanceNonceAccountParams, advance_nonce_account
from solders.transaction import VersionedTransaction

from parent_proxy.nonce_account import NonceAccount
from parent_proxy.squads_multisig_account import (
    PERMISSION_EXECUTE,
    PERMISSION_INITIATE,
    PERMISSION_VOTE,
    PERMISSIONS_ALL,
    MultisigAccount,
)
from parent_proxy.squads_spending_limit_account import SpendingLimitAccount, spending_limit_address
from policies.decoders.squads import discriminator
from policies.decoders.squads_config import CONFIG_ACTIONS
from policies.decoders.squads_vault import squads_proposal_address, squads_transaction_address
from policies.programs import SQUADS_V4_PROGRAM, SYSTEM_PROGRAM
from policies.transaction import MAX_TRANSACTION_BYTES

MAX_U64: Final = 2**64 - 1

_ADD_MEMBER, _REMOVE_MEMBER, _ADD_SPENDING_LIMIT, _REMOVE_SPENDING_LIMIT = (
    CONFIG_ACTIONS.index(name)
    for name in ("add_member", "remove_member", "add_spending_limit", "remove_spending_limit")
)
"""``ConfigAction`` variant indexes (IDL order, as the decoder reads them)."""
_NONE = b"\x00"
"""Borsh ``Option::None`` (every memo here)."""


CONFIG_TRANSACTION_CREATE: Final = discriminator("config_transaction_create")
PROPOSAL_CREATE: Final = discriminator("proposal_create")
PROPOSAL_APPROVE: Final = discriminator("proposal_approve")
CONFIG_TRANSACTION_EXECUTE: Final = discriminator("config_transaction_execute")


class RotationBuildError(ValueError):
    """The arguments cannot make a valid rotation transaction (the message names the argument)."""


@dataclass(frozen=True)
class SpendingLimitReplacement:
    """A spending limit of the old agent key (``old``, read from the chain: members exactly ``[old agent]``), and
    the seed of the limit that replaces it (``create_key``: any fresh key; it only derives the new limit's address).
    The replacement has ``old``'s vault, mint, amount, period and destinations, and members ``[new agent]``."""

    old: SpendingLimitAccount
    create_key: Pubkey

    def address(self) -> Pubkey:
        """The replacement limit's address."""
        return spending_limit_address(self.old.multisig, self.create_key)[0]


def _keys(keys: Sequence[Pubkey]) -> bytes:
    return struct.pack("<I", len(keys)) + b"".join(bytes(key) for key in keys)


def config_actions_data(
    new_agent: Pubkey,
    permissions: int,
    agent: Pubkey,
    limits: Sequence[SpendingLimitReplacement] = (),
    closed: Sequence[SpendingLimitAccount] = (),
) -> bytes:
    """``ConfigTransactionCreateArgs { actions, memo: None }``, discriminator first: ``AddMember``,
    ``RemoveMember``, then ``RemoveSpendingLimit`` and ``AddSpendingLimit`` for each replaced limit, then
    ``RemoveSpendingLimit`` for each closed one."""
    actions = struct.pack("<I", 2 + 2 * len(limits) + len(closed))
    actions += bytes([_ADD_MEMBER]) + bytes(new_agent) + bytes([permissions])
    actions += bytes([_REMOVE_MEMBER]) + bytes(agent)
    for limit in limits:
        old = limit.old
        actions += bytes([_REMOVE_SPENDING_LIMIT]) + bytes(old.address)
        actions += bytes([_ADD_SPENDING_LIMIT]) + bytes(limit.create_key) + bytes([old.vault_index]) + bytes(old.mint)
        actions += struct.pack("<QB", old.amount, old.period)
        actions += _keys([new_agent]) + _keys(old.destinations)
    for limit_account in closed:
        actions += bytes([_REMOVE_SPENDING_LIMIT]) + bytes(limit_account.address)
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


def _check_limits(
    multisig: Pubkey, agent: Pubkey, limits: Sequence[SpendingLimitReplacement], closed: Sequence[SpendingLimitAccount]
) -> None:
    addresses = [limit.old.address for limit in limits] + [limit.address() for limit in limits]
    addresses += [limit.address for limit in closed]
    if len(set(addresses)) != len(addresses):
        raise RotationBuildError(
            "each spending limit is replaced or closed once, each replaced by a limit of a fresh create key"
        )
    for old in [*(limit.old for limit in limits), *closed]:
        if old.multisig != multisig or not old.names(agent):
            raise RotationBuildError(f"spending limit {old.address} is not one of this multisig naming the agent")
    for limit in limits:
        if limit.old.members != (agent,):
            raise RotationBuildError(
                f"spending limit {limit.old.address} names [{', '.join(map(str, limit.old.members))}], not only the "
                f"agent key {agent}: a rotation moves only the agent's own limits (members exactly [agent], "
                "DESIGN.md section 10), and its other members can spend from the vault alone. Close it in the "
                f"rotation instead, without a replacement (rotation-transaction --close-spending-limit "
                f"{limit.old.address}; its other members lose it too)"
            )


def rotation_instructions(
    *, multisig: Pubkey, transaction_index: int, owner: Pubkey, agent: Pubkey, new_agent: Pubkey, permissions: int,
    spending_limits: Sequence[SpendingLimitReplacement] = (),
    closed_spending_limits: Sequence[SpendingLimitAccount] = (),
) -> list[Instruction]:  # fmt: skip
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
        config_actions_data(new_agent, permissions, agent, spending_limits, closed_spending_limits),
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
         meta(owner, signer=True, writable=True), meta(SYSTEM_PROGRAM),
         *(meta(key, writable=True) for limit in spending_limits for key in (limit.old.address, limit.address())),
         *(meta(limit.address, writable=True) for limit in closed_spending_limits)],
    )  # fmt: skip
    return [create, propose, approve(owner), approve(agent), execute]


def build_rotation_transaction(
    *,
    multisig: Pubkey,
    transaction_index: int,
    owner: Pubkey,
    agent: Pubkey,
    new_agent: Pubkey,
    recent_blockhash: Hash | None = None,
    nonce: NonceAccount | None = None,
    permissions: int = PERMISSIONS_ALL,
    compute_unit_price: int | None = None,
    spending_limits: Sequence[SpendingLimitReplacement] = (),
    closed_spending_limits: Sequence[SpendingLimitAccount] = (),
) -> bytes:
    """The unsigned, serialized legacy transaction described in the module docstring, with ``recent_blockhash`` or
    the durable ``nonce`` (exactly one); `RotationBuildError` for arguments that cannot make one. Signers: the owner
    (fee payer, slot 0) and the old agent. ``spending_limits`` are replaced, ``closed_spending_limits`` (limits of
    the multisig naming the agent, whatever their other members) closed without a replacement."""
    _check(transaction_index=transaction_index, owner=owner, agent=agent, new_agent=new_agent,
           permissions=permissions, compute_unit_price=compute_unit_price)  # fmt: skip
    _check_limits(multisig, agent, spending_limits, closed_spending_limits)
    blockhash = _blockhash(recent_blockhash, nonce, owner=owner, agent=agent)
    instructions = rotation_instructions(
        multisig=multisig, transaction_index=transaction_index, owner=owner, agent=agent, new_agent=new_agent,
        permissions=permissions, spending_limits=spending_limits, closed_spending_limits=closed_spending_limits,
    )  # fmt: skip
    if compute_unit_price is not None:
        instructions.insert(0, set_compute_unit_price(compute_unit_price))
    if nonce is not None:  # the runtime takes a transaction as durable only when this is its first instruction
        instructions.insert(0, advance_nonce_instruction(nonce.address, owner))
    message = Message.new_with_blockhash(instructions, owner, blockhash)
    unsigned = VersionedTransaction.populate(message, [Signature.default()] * message.header.num_required_signatures)
    raw = bytes(unsigned)
    if len(raw) > MAX_TRANSACTION_BYTES:  # about 600 bytes, and about 250 more per replaced spending limit
        raise RotationBuildError(
            f"the rotation transaction ({len(raw)} bytes, {len(spending_limits)} spending limits replaced, "
            f"{len(closed_spending_limits)} closed) is larger than a Solana packet"
        )
    return raw


def advance_nonce_instruction(nonce_account: Pubkey, authority: Pubkey) -> Instruction:
    """System ``AdvanceNonceAccount`` of ``nonce_account`` signed by ``authority``."""
    return advance_nonce_account(AdvanceNonceAccountParams(nonce_pubkey=nonce_account, authorized_pubkey=authority))


def _blockhash(recent: Hash | None, nonce: NonceAccount | None, *, owner: Pubkey, agent: Pubkey) -> Hash:
    if nonce is None:
        if recent is None:
            raise RotationBuildError("give a recent blockhash or a durable nonce")
        return recent
    if recent is not None:
        raise RotationBuildError("give a recent blockhash or a durable nonce, not both")
    if nonce.authority != owner:
        raise RotationBuildError(
            f"the nonce account's authority is {nonce.authority}, not the owner key: the transaction's only other "
            "signer is the agent key, which signs nothing but its approval"
        )
    if nonce.address in (owner, agent):
        raise RotationBuildError("the nonce account is the owner or the agent key")
    return nonce.durable_nonce


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
