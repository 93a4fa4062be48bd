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

A token amount is also shown in whole tokens when its instruction states the mint's decimals: TransferChecked,
ApproveChecked, MintToChecked, BurnChecked and Squads' spending-limit use carry them, and the chain refuses the
instruction if they are not the mint's (so the figure shown is the one that can execute). Exact: integer arithmetic,
never a float. Elsewhere the decimals are unknown offline (a policy's mint entries do not declare them) and the
amount stays in raw units only. Minting and burning, which no policy can allow, show their amounts too.

A token account does not say whose it is: a merchant's associated token account and an attacker's look alike. Given
the addresses the owner's own policy names (`Recipients`: its destination allow and deny lists), each value-moving
line also says whose associated token account the destination is (derived from the mint and token program: the
account only that owner controls), or that it is none of theirs; a SOL destination is matched as it is. Without a
policy nothing is added.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from solders.pubkey import Pubkey

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
from policies.programs import associated_token_address

SOL_DECIMALS = 9
"""A lamport is 10**-9 SOL: SOL amounts are shown as whole tokens at 9 decimals (`whole_tokens`)."""
INDENT = "  "


@dataclass(frozen=True, slots=True)
class Recipients:
    """The addresses a policy names as destinations, each with how it names them (``"allowlisted"``,
    ``"denylisted"``): what a value-moving line's destination is matched against."""

    named: Mapping[Pubkey, str]

    @classmethod
    def of(cls, allow: Iterable[Pubkey], deny: Iterable[Pubkey]) -> Recipients:
        named = {owner: "allowlisted" for owner in allow}
        named.update((owner, "denylisted") for owner in deny)  # a denial is the one to show
        return cls(named)

    def whose(self, effect: Outflow) -> str:
        """`` (...)``: whose the destination is, as far as the policy's addresses tell."""
        if effect.asset == NATIVE_SOL or effect.token_program is None:
            how = self.named.get(effect.destination)
            return f" (the policy's {how} address)" if how else " (an address the policy does not name)"
        mint = Pubkey.from_string(effect.asset)
        for owner, how in self.named.items():
            if associated_token_address(owner, mint, effect.token_program) == effect.destination:
                return f" (the associated token account of {owner}, the policy's {how} address)"
        return " (not the associated token account of any address the policy names)"


def describe_transaction(tx: DecodedTransaction, recipients: Recipients | None = None) -> list[str]:
    """The lines: the transaction's header (version, fee payer, signers, lookup tables), then each instruction;
    with ``recipients``, value-moving lines say whose their destination is."""
    lines = [
        f"transaction ({tx.version if tx.version == 'legacy' else 'v0'}), fee payer {tx.fee_payer}",
        f"signers: {', '.join(str(k) for k in tx.required_signers)}",
    ]
    if tx.lookup_tables:
        lines.append(f"lookup tables: {', '.join(str(k) for k in tx.lookup_tables)}")
    lines.extend(_instructions(tx.instructions, depth=0, recipients=recipients))
    return lines


def _instructions(
    instructions: tuple[DecodedInstruction, ...], *, depth: int, recipients: Recipients | None
) -> Iterator[str]:
    pad = INDENT * depth
    for ix in instructions:
        yield f"{pad}#{ix.index} {ix.program}.{ix.name} (program {ix.program_id})"
        if not ix.effects and not ix.inner:
            yield f"{pad}{INDENT}no effect on any account's value or control"
        for effect in ix.effects:
            yield f"{pad}{INDENT}{describe_effect(effect, ix.args, recipients)}"
        if ix.inner:
            yield f"{pad}{INDENT}carries {len(ix.inner)} instruction(s):"
            yield from _instructions(ix.inner, depth=depth + 2, recipients=recipients)


def describe_effect(
    effect: Effect, args: Mapping[str, object] | None = None, recipients: Recipients | None = None
) -> str:
    """One effect in a line. ``args`` are its instruction's decoded arguments: they give the mint's decimals of a
    checked instruction (`stated_decimals`) and the amount a restricted mint or burn names. With ``recipients``,
    an outflow's destination says whose it is (`Recipients.whose`)."""
    decimals = stated_decimals(args or {})
    if isinstance(effect, Outflow):
        whose = "" if recipients is None else recipients.whose(effect)
        return (
            f"moves {amount(effect.asset, effect.amount, decimals.get(effect.asset))} from {effect.source} to "
            f"{effect.destination}{whose} ({effect.kind}, signed by {effect.authority})"
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
        limit = (
            f"{effect.amount} raw units"
            if effect.mint is None
            else amount(effect.mint, effect.amount, decimals.get(effect.mint))
        )
        return f"lets {effect.delegate} spend up to {limit} from {effect.account} (signed by {effect.authority})"
    if isinstance(effect, AccountClose):
        return f"closes {effect.account}, its lamports to {effect.destination} (signed by {effect.authority})"
    if isinstance(effect, NonceAdvance):
        return f"advances the durable nonce {effect.nonce_account} (signed by {effect.authority})"
    if isinstance(effect, ComputeBudgetSetting):
        unit = " micro-lamports per compute unit" if effect.field == "unit_price" else ""
        return f"sets the compute budget's {effect.field} to {effect.value}{unit}"
    if isinstance(effect, Restricted):
        by = "" if effect.authority is None else f" (signed by {effect.authority})"
        return f"{effect.action}{_restricted_amount(args or {}, decimals)}{by}: no policy can allow it"
    if isinstance(effect, Opaque):
        return f"not understood ({effect.reason}): no policy can allow it"
    raise TypeError(f"unknown effect {type(effect).__name__}")  # a new effect type must be described here


def _restricted_amount(args: Mapping[str, object], decimals: Mapping[str, int]) -> str:
    """`` of N raw units of mint M`` for a restricted instruction that names an amount and a mint (minting,
    burning), else nothing."""
    raw, mint = args.get("amount"), args.get("mint")
    if type(raw) is not int or not isinstance(mint, Pubkey):
        return ""
    return f" of {amount(str(mint), raw, decimals.get(str(mint)))}"


def stated_decimals(args: Mapping[str, object]) -> dict[str, int]:
    """``{mint: decimals}`` when an instruction's decoded arguments state both (the checked token instructions,
    Squads' token spending-limit use), else empty."""
    mint, decimals = args.get("mint"), args.get("decimals")
    if isinstance(mint, Pubkey) and type(decimals) is int and decimals >= 0:
        return {str(mint): decimals}
    return {}


def whole_tokens(raw: int, decimals: int) -> str:
    """``raw`` base units as whole tokens at ``decimals``, exactly (integer arithmetic): ``1500, 3`` -> ``1.5``,
    ``7, 0`` -> ``7``, ``1, 9`` -> ``0.000000001``."""
    whole, fraction = divmod(raw, 10**decimals)
    if fraction == 0:
        return str(whole)
    return f"{whole}.{fraction:0{decimals}d}".rstrip("0")


def amount(asset: str, raw: int, decimals: int | None = None) -> str:
    """``raw`` units of ``asset``: lamports with their SOL value, or raw units of a mint, with their value in whole
    tokens when the mint's ``decimals`` are known."""
    if asset == NATIVE_SOL:
        return f"{raw} lamports ({whole_tokens(raw, SOL_DECIMALS)} SOL)"
    if decimals is None:
        return f"{raw} raw units of mint {asset}"
    return f"{raw} raw units of mint {asset} (= {whole_tokens(raw, decimals)} in whole tokens, {decimals} decimals)"
