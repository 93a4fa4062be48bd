"""The agent-key rotation transaction: what the old agent key may co-sign to hand its seat in the multisig over.

A wallet is a Squads v4 2-of-2 multisig of the owner key and the agent key. A rotation swaps the agent key for a
candidate the enclave made, with one Solana transaction that creates, approves and (optionally) executes a config
transaction. The owner's rotation order (`policies.orders.check_rotation_order`) binds that exact message; this
check is the enclave's own defence on top of it, so that an owner mistake or a hostile parent's substitution cannot
make the old agent approve anything but "add the enclave-made candidate, remove me". The rules:

1. the agent key is a required signer of the message, and not its fee payer (it pays nothing);
2. every top-level instruction is a ComputeBudget or a Squads v4 instruction (no Memo, System or anything else),
   and none carries inner instructions; the one exception is a System ``advance_nonce_account`` as instruction 0,
   which makes the transaction durable (valid until the nonce advances instead of for about a minute); rule 6
   keeps the agent key out of it (neither the nonce account nor its authority);
3. the Squads instructions are only ``config_transaction_create``, ``proposal_create``, ``proposal_approve`` and
   ``config_transaction_execute``, each on ``multisig``;
4. exactly one ``config_transaction_create``, whose actions are exactly one ``add_member`` of ``new_agent`` with
   the Vote permission (mask at most `PERMISSIONS_ALL`) and one ``remove_member`` of ``agent``, in either order,
   and spending limits: any number of ``remove_spending_limit``, each either alone (the limit is closed) or
   directly followed by the one ``add_spending_limit`` that replaces it, whose members are exactly ``[new_agent]``
   (DESIGN.md section 10: a limit's members are ``[agent]``); no other ``add_spending_limit``. A limit still naming
   the old key would keep it spending on program versions whose ``spending_limit_use`` checks only the limit's
   members, and the new key could use none; a limit naming any other key would let that key spend from the vault
   alone (the program does not require limit members to be multisig members). Closing a limit only takes spending
   power away (`spending_limit_replacements`, the one statement of this pairing, which ``waiaas owner cosign``
   uses too). `parent_proxy.rotation_transaction` builds these actions. What this check cannot see:
   ``remove_spending_limit`` names only the removed limit's address, and the enclave reads no chain, so whether a
   replacement keeps the removed limit's vault, mint, amount, period and destinations is the builder's (it copies
   them) and the owner's (``waiaas owner sign-rotation`` prints them; the order binds the exact message);
5. exactly one ``proposal_create``; its transaction index derives the config transaction's address and the
   proposal every ``proposal_approve`` and ``config_transaction_execute`` names (the owner may approve and execute
   in the same transaction, but nothing else);
6. the agent key is in the accounts of exactly one instruction, a ``proposal_approve`` whose member it is (so it is
   not a creator, rent payer or executor, and approves only this proposal).

The caller decodes the transaction with `policies.transaction.decode_transaction` and no lookup tables (a v0
message that uses tables does not decode), checks the owner's rotation order for the message's SHA-256, and checks
that ``agent`` is the wallet's agent key, ``new_agent`` the candidate it made and ``multisig`` the policy's
``rules.squads_multisig``. Errors: `RotationTransactionError` (a `PolicyEngineError`), naming the instruction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from solders.pubkey import Pubkey

from policies import programs
from policies.decoders.squads_vault import squads_proposal_address, squads_transaction_address
from policies.errors import PolicyEngineError
from policies.model import DecodedInstruction, DecodedTransaction

PERMISSION_VOTE: Final = 2
"""Squads ``Permissions`` mask bits: Initiate = 1, Vote = 2, Execute = 4."""
PERMISSIONS_ALL: Final = 7

_SQUADS_ALLOWED: Final = frozenset(
    {"config_transaction_create", "proposal_create", "proposal_approve", "config_transaction_execute"}
)


_ADVANCE_NONCE: Final = "advance_nonce_account"
_LIMIT_ACTIONS: Final = ("remove_spending_limit", "add_spending_limit")


class RotationTransactionError(PolicyEngineError):
    """The transaction is not exactly an agent-key rotation the old agent key may co-sign.

    ``instruction_index`` names the top-level instruction at fault, when the refusal belongs to one.
    """

    def __init__(self, message: str, *, instruction_index: int | None = None) -> None:
        where = "" if instruction_index is None else f"instruction {instruction_index}: "
        super().__init__(f"rotation transaction refused: {where}{message}")
        self.instruction_index = instruction_index


def check_rotation_transaction(
    transaction: DecodedTransaction, *, multisig: Pubkey, agent: Pubkey, new_agent: Pubkey
) -> None:
    """Return if ``transaction`` only replaces ``agent`` by ``new_agent`` in ``multisig`` (rules in the module
    docstring); raise `RotationTransactionError` otherwise."""
    if new_agent == agent:
        raise RotationTransactionError("the new agent key is the agent key")
    # 1. The agent signs, and pays nothing.
    if agent not in transaction.required_signers:
        raise RotationTransactionError("the agent key is not a required signer")
    if transaction.fee_payer == agent:
        raise RotationTransactionError("the agent key is the fee payer")
    # 2. and 3. ComputeBudget and the four Squads instructions on this multisig, nothing else (but a durable
    # nonce's advance in first place).
    squads: list[DecodedInstruction] = []
    for position, ix in enumerate(transaction.instructions):
        if ix.inner:
            raise RotationTransactionError("carries inner instructions", instruction_index=ix.index)
        if ix.program_id == programs.COMPUTE_BUDGET_PROGRAM:
            continue
        if ix.program_id == programs.SYSTEM_PROGRAM and ix.name == _ADVANCE_NONCE:
            if position == 0:
                continue
            raise RotationTransactionError(
                "a nonce advance is allowed only as the first instruction", instruction_index=ix.index
            )
        if ix.program_id != programs.SQUADS_V4_PROGRAM:
            raise RotationTransactionError(
                f"program {ix.program_id} ({ix.program}) is neither ComputeBudget nor Squads v4",
                instruction_index=ix.index,
            )
        if ix.name not in _SQUADS_ALLOWED:
            raise RotationTransactionError(f"Squads {ix.name} is not part of a rotation", instruction_index=ix.index)
        if ix.args.get("multisig") != multisig:
            raise RotationTransactionError(f"{ix.name} is on another multisig", instruction_index=ix.index)
        squads.append(ix)
    # 4. One config transaction: add the candidate, remove the agent.
    config = _only(squads, "config_transaction_create")
    _check_actions(config, agent=agent, new_agent=new_agent)
    # 5. One proposal, of that config transaction; every approval and execution is of it.
    proposal_create = _only(squads, "proposal_create")
    transaction_index = proposal_create.args.get("transaction_index")
    if type(transaction_index) is not int:
        raise RotationTransactionError("no transaction index", instruction_index=proposal_create.index)
    config_address = squads_transaction_address(multisig, transaction_index)
    proposal = squads_proposal_address(multisig, transaction_index)
    if config.args.get("transaction") != config_address:
        raise RotationTransactionError(
            f"the config transaction is not the one of proposal index {transaction_index}",
            instruction_index=config.index,
        )
    if proposal_create.args.get("proposal") != proposal:
        raise RotationTransactionError(
            "the proposal does not derive from its index", instruction_index=proposal_create.index
        )
    for ix in squads:
        if ix.name in ("proposal_approve", "config_transaction_execute") and ix.args.get("proposal") != proposal:
            raise RotationTransactionError(
                f"{ix.name} of another proposal than index {transaction_index}", instruction_index=ix.index
            )
        if ix.name == "config_transaction_execute" and ix.args.get("transaction") != config_address:
            raise RotationTransactionError(
                "config_transaction_execute of another config transaction", instruction_index=ix.index
            )
    # 6. The agent's key is used once: as the member approving that proposal.
    uses = [ix for ix in transaction.instructions if any(account.pubkey == agent for account in ix.accounts)]
    for ix in uses:
        if ix.name != "proposal_approve" or ix.args.get("member") != agent:
            roles = " and ".join(key for key, value in ix.args.items() if value == agent) or "an account"
            raise RotationTransactionError(f"the agent key is {roles} of {ix.name}", instruction_index=ix.index)
    if len(uses) != 1:
        raise RotationTransactionError(f"the agent key approves {len(uses)} times, not once")


def _only(squads: list[DecodedInstruction], name: str) -> DecodedInstruction:
    found = [ix for ix in squads if ix.name == name]
    if len(found) != 1:
        where = found[1].index if len(found) > 1 else None
        raise RotationTransactionError(f"{len(found)} {name} instructions, not exactly one", instruction_index=where)
    return found[0]


def _check_actions(config: DecodedInstruction, *, agent: Pubkey, new_agent: Pubkey) -> None:
    actions = config.args.get("actions")
    if not isinstance(actions, tuple) or len(actions) < 2:
        count = len(actions) if isinstance(actions, tuple) else 0
        raise RotationTransactionError(
            f"{count} config actions, not add_member and remove_member", instruction_index=config.index
        )
    added = removed = False
    for name, fields in actions:
        if not isinstance(fields, Mapping):
            raise RotationTransactionError(f"malformed {name} action", instruction_index=config.index)
        if name == "add_member" and not added:
            key, mask = fields.get("key"), fields.get("permissions")
            if key != new_agent:
                raise RotationTransactionError(
                    f"add_member adds {key}, not the new agent key", instruction_index=config.index
                )
            if type(mask) is not int or not 0 <= mask <= PERMISSIONS_ALL or not mask & PERMISSION_VOTE:
                raise RotationTransactionError(
                    f"add_member permissions {mask}: must include Vote and be at most {PERMISSIONS_ALL}",
                    instruction_index=config.index,
                )
            added = True
        elif name == "remove_member" and not removed:
            if fields.get("old_member") != agent:
                raise RotationTransactionError(
                    f"remove_member removes {fields.get('old_member')}, not the agent key",
                    instruction_index=config.index,
                )
            removed = True
        elif name not in _LIMIT_ACTIONS:
            what = f"a second {name}" if name in ("add_member", "remove_member") else f"config action {name}"
            raise RotationTransactionError(f"{what} is not part of a rotation", instruction_index=config.index)
    spending_limit_replacements(actions, new_agent=new_agent, instruction_index=config.index)
    if not (added and removed):
        raise RotationTransactionError(
            "the config actions lack add_member or remove_member", instruction_index=config.index
        )


def spending_limit_replacements(
    actions: Iterable[tuple[str, object]], *, new_agent: Pubkey, instruction_index: int | None = None
) -> list[tuple[Mapping[str, object], Mapping[str, object] | None]]:
    """Rule 4's spending-limit actions among a config transaction's ``actions`` ((name, fields), in order): for each
    ``remove_spending_limit``, its fields and those of the ``add_spending_limit`` directly after it that replaces it
    (members exactly ``[new_agent]``), or None (the limit is closed). Other actions are skipped, but an
    ``add_spending_limit`` after one of them replaces nothing. `RotationTransactionError` (naming
    ``instruction_index``, the config transaction's) for an ``add_spending_limit`` that replaces no removed limit or
    names other members, or malformed fields."""
    pairs: list[tuple[Mapping[str, object], Mapping[str, object] | None]] = []
    after_removal = False  # the previous action is a remove_spending_limit (an add_spending_limit may replace it)
    for name, fields in actions:
        replaces, after_removal = after_removal, name == "remove_spending_limit"
        if name not in _LIMIT_ACTIONS:
            continue
        if not isinstance(fields, Mapping):
            raise RotationTransactionError(f"malformed {name} action", instruction_index=instruction_index)
        if name == "remove_spending_limit":
            pairs.append((fields, None))
            continue
        if not replaces:
            raise RotationTransactionError(
                "add_spending_limit replaces no removed limit (each directly follows the remove_spending_limit "
                "it replaces): a rotation adds no spending limit", instruction_index=instruction_index,
            )  # fmt: skip
        members = fields.get("members")
        if members != (new_agent,):
            shown = ", ".join(map(str, members)) if isinstance(members, tuple) else members
            raise RotationTransactionError(
                f"add_spending_limit members [{shown}]: must be exactly the new agent key",
                instruction_index=instruction_index,
            )
        pairs[-1] = (pairs[-1][0], fields)
    return pairs
