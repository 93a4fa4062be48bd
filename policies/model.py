"""Decoded transactions: the contract between the decoders (which produce it) and the evaluator (which reads it).

A decoder turns one compiled instruction into a `DecodedInstruction` whose ``effects`` say, in terms the policy
rules understand, what the instruction does to whose assets. The evaluator never looks at raw instruction data:
if a decoder cannot describe an instruction completely, it says so with an `Opaque` effect (or raises
`DecodeError`), and the evaluator denies.

Amounts are raw units (lamports, token base units) as Python ints. Assets are `NATIVE_SOL` or a mint address in
base58 (and, in reservations and spending windows only, `FEES`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from solders.pubkey import Pubkey

from policies.fastinit import fast_init

NATIVE_SOL = "SOL"
"""Asset name of native SOL (lamports) in effects, limits and reservations."""
FEES = "fees"
"""Asset name of the transaction fees a wallet key pays (lamports), in the fee periods, reservations and ledgers
(reserved under every policy, limited by ``rules.fees.periods`` when it has any). Never a mint (a base58 address has
32 to 44 characters) nor ``NATIVE_SOL``: fees are counted apart from the SOL limits."""


class AccountView(NamedTuple):
    """One account as an instruction sees it, after lookup-table resolution.

    A NamedTuple rather than a frozen dataclass: it is built for every account of every request, and tuple
    construction is several times cheaper (see policies.bench)."""

    pubkey: Pubkey
    is_signer: bool
    is_writable: bool


# ---------------------------------------------------------------------------------------------------------------
# Effects. ``authority`` is always the key whose signature makes the effect happen; the evaluator compares it with
# the wallet's keys to decide whether the effect is the wallet's.


@fast_init
@dataclass(frozen=True, slots=True)
class Outflow:
    """Value leaves an account controlled by ``authority``.

    ``destination`` is the receiving account (a system account for SOL, a token account for tokens).
    ``token_program`` is set for token outflows so that associated-token-account destinations can be matched.
    ``kind`` names the mechanism: "transfer", "transfer_with_seed", "create_account", "nonce_withdraw", ...
    """

    asset: str
    amount: int
    authority: Pubkey
    source: Pubkey
    destination: Pubkey
    kind: str
    token_program: Pubkey | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class UncheckedTokenTransfer:
    """SPL Token `Transfer` (not Checked): the mint is not in the instruction, so no limit can be applied."""

    amount: int
    authority: Pubkey
    source: Pubkey
    destination: Pubkey


@fast_init
@dataclass(frozen=True, slots=True)
class AuthorityChange:
    """Control of ``account`` moves away from ``authority`` (SetAuthority, Assign, AuthorizeNonceAccount...)."""

    authority: Pubkey
    account: Pubkey
    new_authority: Pubkey | None
    what: str


@fast_init
@dataclass(frozen=True, slots=True)
class DelegateApproval:
    """``owner`` lets ``delegate`` spend up to ``amount`` from ``account`` (Approve / ApproveChecked)."""

    authority: Pubkey
    account: Pubkey
    delegate: Pubkey
    amount: int
    mint: str | None


@fast_init
@dataclass(frozen=True, slots=True)
class AccountClose:
    """``account`` is closed by ``authority`` and its lamports go to ``destination``."""

    authority: Pubkey
    account: Pubkey
    destination: Pubkey


@fast_init
@dataclass(frozen=True, slots=True)
class NonceAdvance:
    """AdvanceNonceAccount: the transaction uses (or touches) a durable nonce."""

    authority: Pubkey
    nonce_account: Pubkey


ComputeBudgetField = Literal["unit_limit", "unit_price", "heap_frame", "loaded_accounts_data_size_limit"]


@fast_init
@dataclass(frozen=True, slots=True)
class ComputeBudgetSetting:
    """A ComputeBudget instruction: ``unit_price`` is in micro-lamports per compute unit."""

    field: ComputeBudgetField
    value: int


@fast_init
@dataclass(frozen=True, slots=True)
class Restricted:
    """A fully decoded action that no policy rule can permit (MintTo, Burn, FreezeAccount, ...)."""

    authority: Pubkey | None
    action: str


@fast_init
@dataclass(frozen=True, slots=True)
class Opaque:
    """Recognised but not understood (Token-2022 extensions, p-token Batch, unknown program): always denied."""

    reason: str


Effect = (
    Outflow
    | UncheckedTokenTransfer
    | AuthorityChange
    | DelegateApproval
    | AccountClose
    | NonceAdvance
    | ComputeBudgetSetting
    | Restricted
    | Opaque
)


@fast_init
@dataclass(frozen=True, slots=True)
class DecodedInstruction:
    """One instruction, decoded. An instruction with no effects is benign (Memo, SyncNative, Revoke, ...).

    ``inner`` holds instructions carried inside this one (a Squads vault transaction message), which the
    evaluator checks like top-level ones.
    """

    index: int
    program_id: Pubkey
    program: str
    name: str
    accounts: tuple[AccountView, ...]
    args: Mapping[str, object]
    effects: tuple[Effect, ...]
    inner: tuple[DecodedInstruction, ...] = ()


@fast_init
@dataclass(frozen=True, slots=True)
class DecodedTransaction:
    """A whole transaction: the message the wallet key would sign, its accounts and its decoded instructions."""

    version: Literal["legacy", 0]
    message_bytes: bytes
    fee_payer: Pubkey
    required_signers: tuple[Pubkey, ...]
    account_keys: tuple[Pubkey, ...]
    recent_blockhash: str
    instructions: tuple[DecodedInstruction, ...]
    lookup_tables: tuple[Pubkey, ...] = field(default=())
