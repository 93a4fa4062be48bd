"""What a decoded transaction does, in lines a person reads before approving it.

The owner approves an escalated transaction by signing its message hash (`policies.orders`). The transaction comes
to the owner through the parent, which is not trusted (DESIGN.md section 1): a parent could show one transfer and
ask for the approval of another. So ``waiaas owner approve`` decodes the very bytes whose hash it signs and prints
`describe_transaction` of them first; what the owner reads is what the approval covers.

Every instruction gets one line (its program and instruction name), then one line per effect the decoders found
(`policies.model`: value leaving an account, authority changes, delegations, closes, compute budget settings,
restricted and opaque actions). Amounts are raw units, with SOL also in SOL; addresses are base58 in full (a
shortened address is what an attacker's vanity key imitates). Instructions carried inside another (a Squads vault
transaction's message) are indented under it. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

from policies.model import (
    NATIVE_SOL,
    AccountClose,
    AuthorityChange,
    ComputeBudgetSetting,
    DecodedInstruction,
    DecodedTransaction,
    DelegateApproval,
    Effect,
    NonceAdvance,
    Opaque,
    Outflow,
    Restricted,
    UncheckedTokenTransfer,
)

LAMPORTS_PER_SOL = 1_000_000_000
INDENT = "  "


def describe_transaction(tx: DecodedTransaction) -> list[str]:
    """The lines: the transaction's header (version, fee payer, signers, lookup tables), then each instruction."""
    lines = [
        f"transaction ({tx.version if tx.version == 'legacy' else 'v0'}), fee payer {tx.fee_payer}",
        f"signers: {', '.join(str(k) for k in tx.required_signers)}",
    ]
    if tx.lookup_tables:
        lines.append(f"lookup tables: {', '.join(str(k) for k in tx.lookup_tables)}")
    lines.extend(_instructions(tx.instructions, depth=0))
    return lines


def _instructions(instructions: tuple[DecodedInstruction, ...], *, depth: int) -> Iterator[str]:
    pad = INDENT * depth
    for ix in instructions:
        yield f"{pad}#{ix.index} {ix.program}.{ix.name} (program {ix.program_id})"
        if not ix.effects and not ix.inner:
            yield f"{pad}{INDENT}no effect on any account's value or control"
        for effect in ix.effects:
            yield f"{pad}{INDENT}{describe_effect(effect)}"
        if ix.inner:
            yield f"{pad}{INDENT}carries {len(ix.inner)} instruction(s):"
            yield from _instructions(ix.inner, depth=depth + 2)


def describe_effect(effect: Effect) -> str:
    """One effect in a line."""
    if isinstance(effect, Outflow):
        return (
            f"moves {amount(effect.asset, effect.amount)} from {effect.source} to {effect.destination} "
            f"({effect.kind}, signed by {effect.authority})"
        )
    if isinstance(effect, UncheckedTokenTransfer):
        return (
            f"moves {effect.amount} raw units of an unnamed mint (unchecked Transfer) from {effect.source} to "
            f"{effect.destination} (signed by {effect.authority})"
        )
    if isinstance(effect, AuthorityChange):
        new = "nobody" if effect.new_authority is None else str(effect.new_authority)
        return f"gives {effect.what} of {effect.account} to {new} (from {effect.authority})"
    if isinstance(effect, DelegateApproval):
        mint = "" if effect.mint is None else f" of mint {effect.mint}"
        return (
            f"lets {effect.delegate} spend up to {effect.amount} raw units{mint} from {effect.account} "
            f"(signed by {effect.authority})"
        )
    if isinstance(effect, AccountClose):
        return f"closes {effect.account}, its lamports to {effect.destination} (signed by {effect.authority})"
    if isinstance(effect, NonceAdvance):
        return f"advances the durable nonce {effect.nonce_account} (signed by {effect.authority})"
    if isinstance(effect, ComputeBudgetSetting):
        unit = " micro-lamports per compute unit" if effect.field == "unit_price" else ""
        return f"sets the compute budget's {effect.field} to {effect.value}{unit}"
    if isinstance(effect, Restricted):
        by = "" if effect.authority is None else f" (signed by {effect.authority})"
        return f"{effect.action}{by}: no policy can allow it"
    if isinstance(effect, Opaque):
        return f"not understood ({effect.reason}): no policy can allow it"
    raise TypeError(f"unknown effect {type(effect).__name__}")  # a new effect type must be described here


def amount(asset: str, raw: int) -> str:
    """``raw`` units of ``asset``: lamports with their SOL value, or raw units of a mint."""
    if asset == NATIVE_SOL:
        sol = Decimal(raw) / LAMPORTS_PER_SOL
        return f"{raw} lamports ({sol.normalize():f} SOL)"
    return f"{raw} raw units of mint {asset}"
