"""What ``waiaas owner cosign`` agrees to sign, and how the owner sees it (docs/rotation.md).

The owner key is the rotation transaction's fee payer, creator, rent payer, approver and executor, and the
authority of its durable nonce: a transaction it signs can move its SOL or hand its nonce away. ``cosign`` gets the
transaction back from someone else (the parent proxy, after the enclave's co-signature), so it signs only a
transaction it recognizes exactly (`recognize`), and only the message the owner checked before (``--message-hash``,
compared by the command). Two shapes are recognized, each the very transaction an owner command builds:

* an agent-key rotation as `parent_proxy.rotation_transaction.build_rotation_transaction` builds it: the
  parameters are read from the message (multisig, transaction index, owner = fee payer, old and new agent key,
  permissions, priority fee, blockhash or durable nonce, the spending-limit replacements), the builder makes the
  transaction again from them, and the two messages must be equal byte for byte. So nothing but the builder's
  instructions, accounts and order is signed; the spending limits are read by the enclave's own pairing rule
  (`policies.rotation.spending_limit_replacements`), so every replacement limit has members exactly ``[new agent]``;
* a durable nonce's advance as ``advance-nonce-transaction`` builds it: the System ``AdvanceNonceAccount`` alone,
  the owner its authority and fee payer.

Anything else is refused (`CosignRefused`), naming what the transaction holds. `describe_rotation` is the human
summary of a rotation, which ``sign-rotation`` and ``cosign`` print: the keys, the fees, how long the transaction
lasts and each replaced spending limit's terms. What neither can show: a ``RemoveSpendingLimit`` names only the
address of the limit it closes, so whether the replacement keeps that limit's terms is the builder's (it copies
them from the chain as the RPC answered) and the owner's to compare (`rotation-transaction` prints the terms it
read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from solders.message import Message, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from parent_proxy.nonce_account import NonceAccount
from parent_proxy.owner_cli_common import OwnerInputError
from parent_proxy.rotation_transaction import (
    RotationBuildError,
    SpendingLimitReplacement,
    advance_nonce_instruction,
    build_rotation_transaction,
)
from parent_proxy.squads_multisig_account import permission_names
from parent_proxy.squads_spending_limit_account import SpendingLimitAccount
from policies.decoders.squads_config import PERIODS
from policies.errors import PolicyEngineError
from policies.model import DecodedInstruction, DecodedTransaction
from policies.rotation import RotationTransactionError, spending_limit_replacements
from policies.transaction import decode_transaction

_PERIOD_TEXT: Final = {"one_time": "in all (OneTime: it never resets)", "day": "per day", "week": "per week",
                       "month": "per month (30 days)"}  # fmt: skip


class CosignRefused(OwnerInputError):
    """The transaction is not one the owner commands build: the owner key does not sign it (exit 2)."""


class _NotThisShape(Exception):
    """A parameter of the recognized shape is missing or malformed (the caller refuses)."""


def _key(value: object) -> Pubkey:
    if not isinstance(value, Pubkey):
        raise _NotThisShape
    return value


def _int(value: object) -> int:
    if type(value) is not int:
        raise _NotThisShape
    return value


def _keys(values: object) -> tuple[Pubkey, ...]:
    if not isinstance(values, tuple):
        raise _NotThisShape
    return tuple(_key(value) for value in values)


def _list(keys: Sequence[Pubkey]) -> str:
    return "[" + ", ".join(map(str, keys)) + "]"


def _config(decoded: DecodedTransaction) -> DecodedInstruction:
    found = [ix for ix in decoded.instructions if ix.name == "config_transaction_create"]
    if len(found) != 1:
        raise _NotThisShape
    return found[0]


def _actions(config: DecodedInstruction) -> list[tuple[str, Mapping[str, object]]]:
    actions = config.args.get("actions")
    if not isinstance(actions, tuple):
        raise _NotThisShape
    out: list[tuple[str, Mapping[str, object]]] = []
    for action in actions:
        if not (isinstance(action, tuple) and len(action) == 2 and isinstance(action[1], Mapping)):
            raise _NotThisShape
        out.append((str(action[0]), action[1]))
    return out


def describe_limit(removed: Pubkey, fields: Mapping[str, object]) -> str:
    """One line for a ``remove_spending_limit`` of ``removed`` and the ``add_spending_limit`` ``fields`` replacing
    it."""
    mint = _key(fields.get("mint"))
    asset = "SOL (lamports)" if mint == Pubkey.default() else f"mint {mint} (base units)"
    destinations = _keys(fields.get("destinations"))
    period = _PERIOD_TEXT.get(str(fields.get("period")))
    if period is None:
        raise _NotThisShape
    return (
        f"spending limit {removed} is closed and replaced by a limit with members {_list(_keys(fields.get('members')))}"
        f", vault {_int(fields.get('vault_index'))}, {asset}, amount {_int(fields.get('amount'))} {period}, "
        f"destinations {_list(destinations) if destinations else 'ANY address'} "
        f"(create key {_key(fields.get('create_key'))})"
    )


def describe_rotation(decoded: DecodedTransaction) -> list[str]:
    """Summary lines of a rotation transaction (one `policies.rotation.check_rotation_transaction` accepted, or that
    `recognize` rebuilt): what the owner's signature, and the order naming its message, agree to."""
    try:
        return _describe(decoded)
    except _NotThisShape as exc:
        raise CosignRefused("the transaction is not a rotation transaction") from exc


def _new_agent(actions: list[tuple[str, Mapping[str, object]]]) -> Pubkey:
    """The key the one ``add_member`` adds."""
    added = [fields for name, fields in actions if name == "add_member"]
    if len(added) != 1:
        raise _NotThisShape
    return _key(added[0].get("key"))


def _limit_actions(
    actions: list[tuple[str, Mapping[str, object]]], new_agent: Pubkey
) -> list[tuple[Pubkey, Mapping[str, object] | None]]:
    """Each ``remove_spending_limit``'s address with the ``add_spending_limit`` replacing it, or None (the limit is
    closed), by the enclave's own rule (`policies.rotation.spending_limit_replacements`: a replacement directly
    follows the removal and names exactly ``new_agent``); anything else is not a rotation's."""
    try:
        pairs = spending_limit_replacements(actions, new_agent=new_agent)
    except RotationTransactionError as exc:
        raise _NotThisShape from exc
    return [(_key(removed.get("spending_limit")), replacement) for removed, replacement in pairs]


def _describe(decoded: DecodedTransaction) -> list[str]:
    config = _config(decoded)
    actions = _actions(config)
    lines: list[str] = []
    for name, fields in actions:
        if name == "add_member":
            mask = _int(fields.get("permissions"))
            lines.append(f"add member {_key(fields.get('key'))} (permissions {mask}: {permission_names(mask)})")
        elif name == "remove_member":
            lines.append(f"remove member {_key(fields.get('old_member'))}")
        elif name not in ("remove_spending_limit", "add_spending_limit"):
            raise _NotThisShape
    for removed, replacement in _limit_actions(actions, _new_agent(actions)):
        if replacement is None:
            lines.append(f"spending limit {removed} is closed, without a replacement")
        else:
            lines.append(describe_limit(removed, replacement))
    index = next(
        (ix.args.get("transaction_index") for ix in decoded.instructions if ix.name == "proposal_create"), None
    )
    head = f"agent-key rotation in multisig {_key(config.args.get('multisig'))}, config transaction {_int(index)}"
    price = next((ix.args.get("unit_price") for ix in decoded.instructions if ix.name == "set_compute_unit_price"), 0)
    first = decoded.instructions[0] if decoded.instructions else None
    lasts = (
        f"durable nonce {_key(first.args.get('nonce_account'))} (authority {_key(first.args.get('authority'))}): "
        "valid until the nonce advances or the multisig's index moves on"
        if first is not None and first.name == "advance_nonce_account"
        else f"recent blockhash {decoded.recent_blockhash}: valid for about a minute"
    )
    fees = f"fee payer {decoded.fee_payer}, priority fee {_int(price)} micro-lamports per compute unit"
    return [head, *lines, fees, lasts]


def recognize(tx: VersionedTransaction) -> tuple[Pubkey, list[str]]:
    """(the owner key the transaction is built for, summary lines) if ``tx`` is exactly one of the shapes in the
    module docstring; `CosignRefused` otherwise."""
    message = tx.message
    try:
        decoded = decode_transaction(bytes(tx))
    except PolicyEngineError as exc:
        raise CosignRefused(f"the transaction does not decode ({exc}): not signed") from exc
    if isinstance(message, Message):
        try:
            if [ix.name for ix in decoded.instructions] == ["advance_nonce_account"]:
                return decoded.fee_payer, _nonce_advance(message, decoded)
            if any(ix.name == "config_transaction_create" for ix in decoded.instructions):
                return decoded.fee_payer, _rotation(message, decoded)
        except (_NotThisShape, RotationBuildError, ValueError):
            pass
    held = ", ".join(f"{ix.program} {ix.name}" for ix in decoded.instructions) or "no instruction"
    raise CosignRefused(
        f"the transaction is neither an agent-key rotation nor a nonce advance exactly as `waiaas owner "
        f"rotation-transaction` and `advance-nonce-transaction` build them (it holds: {held}): not signed"
    )


def _same(message: Message, raw: bytes) -> bool:
    return bytes(to_bytes_versioned(message)) == bytes(to_bytes_versioned(VersionedTransaction.from_bytes(raw).message))


def _nonce_advance(message: Message, decoded: DecodedTransaction) -> list[str]:
    (ix,) = decoded.instructions
    nonce, owner = _key(ix.args.get("nonce_account")), decoded.fee_payer
    rebuilt = Message.new_with_blockhash([advance_nonce_instruction(nonce, owner)], owner, message.recent_blockhash)
    if bytes(rebuilt) != bytes(message) or _key(ix.args.get("authority")) != owner:
        raise _NotThisShape
    return [f"advance durable nonce {nonce} (authority and fee payer {owner}): every transaction carrying its "
            "current value becomes void"]  # fmt: skip


def _rotation(message: Message, decoded: DecodedTransaction) -> list[str]:
    owner = decoded.fee_payer
    config = _config(decoded)
    multisig = _key(config.args.get("multisig"))
    actions = _actions(config)
    named: dict[str, list[Mapping[str, object]]] = {}
    for name, fields in actions:
        named.setdefault(name, []).append(fields)
    (added,), (gone,) = named.get("add_member", []), named.get("remove_member", [])
    agent, new_agent = _key(gone.get("old_member")), _key(added.get("key"))
    limit_actions = _limit_actions(actions, new_agent)
    limits = [_replacement(multisig, agent, old, fields) for old, fields in limit_actions if fields is not None]
    closed = [_closed(multisig, agent, old) for old, fields in limit_actions if fields is None]
    (proposal,) = [ix for ix in decoded.instructions if ix.name == "proposal_create"]
    prices = [ix.args.get("unit_price") for ix in decoded.instructions if ix.name == "set_compute_unit_price"]
    first = decoded.instructions[0]
    nonce = None
    if first.name == "advance_nonce_account":
        nonce = NonceAccount(_key(first.args.get("nonce_account")), owner, message.recent_blockhash, 0)
    raw = build_rotation_transaction(
        multisig=multisig, transaction_index=_int(proposal.args.get("transaction_index")), owner=owner, agent=agent,
        new_agent=new_agent, recent_blockhash=None if nonce else message.recent_blockhash, nonce=nonce,
        permissions=_int(added.get("permissions")), compute_unit_price=_int(prices[0]) if prices else None,
        spending_limits=limits, closed_spending_limits=closed,
    )  # fmt: skip
    if not _same(message, raw):
        raise _NotThisShape
    return describe_rotation(decoded)


def _replacement(
    multisig: Pubkey, agent: Pubkey, old: Pubkey, fields: Mapping[str, object]
) -> SpendingLimitReplacement:
    """The replacement the builder would have made of a limit at ``old`` with the added limit's terms (the old
    limit's own terms are not in the transaction; the builder copies them, so they are the added ones)."""
    period = fields.get("period")
    if period not in PERIODS:
        raise _NotThisShape
    account = SpendingLimitAccount(
        address=old, multisig=multisig, create_key=Pubkey.default(), vault_index=_int(fields.get("vault_index")),
        mint=_key(fields.get("mint")), amount=_int(fields.get("amount")), period=PERIODS.index(str(period)),
        remaining_amount=0, last_reset=0, bump=0, members=(agent,), destinations=_keys(fields.get("destinations")),
    )  # fmt: skip
    return SpendingLimitReplacement(account, _key(fields.get("create_key")))


def _closed(multisig: Pubkey, agent: Pubkey, address: Pubkey) -> SpendingLimitAccount:
    """A limit the builder would have closed at ``address`` (only its address is in the transaction)."""
    return SpendingLimitAccount(
        address=address, multisig=multisig, create_key=Pubkey.default(), vault_index=0, mint=Pubkey.default(),
        amount=0, period=0, remaining_amount=0, last_reset=0, bump=0, members=(agent,), destinations=(),
    )  # fmt: skip
