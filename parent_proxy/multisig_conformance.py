"""Does a wallet's Squads v4 multisig on chain match DESIGN.md section 10 and the owner's signed policy?

DESIGN.md section 10: each wallet is a Squads v4 multisig whose members are the owner key and the agent key,
threshold 2, no config authority (autonomous); small transfers go through on-chain spending limits (per mint, per
period, members = [agent], a destinations allowlist) that the agent uses alone; and "the off-chain limits never
exceed the on-chain ones". `multisig_conformance` compares what the existing readers returned
(`parent_proxy.squads_multisig_account`, `parent_proxy.squads_spending_limit_account`, through `parent_proxy.chain`)
with the wallet's keys and its policy. It is pure: reading the chain, and what a read failure means, is the
caller's (`parent_proxy.multisig_onchain`: a multisig account that does not exist is the report of
`missing_multisig`, a chain that cannot be read is no report at all).

Checks (stable ids; each is ok or failed, with what was seen and what was expected; anything unexpected fails):

``multisig.exists``              (only when it fails, and then alone) the chain has no account at the address the
                                 policy declares: nothing else can be compared.
``multisig.declared``            the account read is the multisig the policy declares (``rules.squads_multisig``).
``multisig.members``             exactly two members: the owner key and the agent key.
``multisig.owner_permissions``   the owner key has Initiate, Vote and Execute (it proposes, approves and executes
                                 the owner's own config transactions, e.g. an agent-key rotation).
``multisig.agent_permissions``   the agent key has Vote (a 2-of-2 needs both votes; Initiate and Execute are the
                                 owner's to give or not).
``multisig.threshold``           2.
``multisig.config_authority``    ``Pubkey.default()``: autonomous, so only the two members together change it.
``multisig.time_lock``           0 (the rotation transaction approves and executes at once: docs/rotation.md).
``multisig.vault``               the wallet's vault address is a vault PDA of this multisig (seeds
                                 ``[b"multisig", multisig, b"vault", index u8]``, every index 0-255 tried); its
                                 index is the one the spending limits must use. A wallet that names no vault
                                 (``WalletKeys.vault`` None: created without ``vault_address``, or the owner CLI
                                 without ``--vault``) uses the multisig's vault 0 (`DEFAULT_VAULT_INDEX`), which
                                 the check says; it holds by construction.
per spending limit of the multisig (the subject is the limit's address):
``spending_limit.members``       exactly ``[agent key]``: nobody else spends alone (the owner has its own key).
``spending_limit.vault``         the limit spends from the wallet's vault (its ``vault_index``).
``spending_limit.destinations``  when the policy has a destination allowlist: the limit has destinations (an empty
                                 list means any address on chain) and each is on the allowlist; in every case none
                                 is on the policy's denylist. The program compares the ``destination`` account,
                                 which for a token limit is the owner of the receiving token account, so the
                                 addresses compare directly with the policy's (owner) addresses.
``spending_limit.multisig``      the limit belongs to this multisig (the chain adapters refuse another's already).
``spending_limit.amount``        the policy's automatic allowance for the limit's mint over one of the limit's
                                 periods is at most the limit's ``amount`` (below).

The amount comparison, and why in this direction. The on-chain limit is the last line (DESIGN.md section 1): what
the agent key can move alone even if everything off chain is taken over. The owner sets it as the most the wallet
may lose that way, and the signed policy grants the agent automatic spending inside it ("the off-chain limits never
exceed the on-chain ones"). So for each limit, with P its period in seconds (the program's ``Period::to_seconds``:
Day 86 400, Week 604 800, Month 2 592 000):

    allowance(P) = min( a * ceil(P / w)          for every automatic period (w seconds, a units) of the mint,
                        t * r * ceil(P / rw) )   t the per-transaction automatic amount, r requests per rw seconds

is an upper bound of what the policy signs automatically for that mint in any P seconds (rolling windows: any P
seconds are covered by ceil(P / w) windows; every request counts against the rate). The check passes when
allowance(P) <= amount. A mint the policy does not allow (not SOL and not in ``mints``, or without a limit) has
allowance 0. A ``OneTime`` limit never resets, so it passes only with allowance 0 (any automatic period grants
without end). Several limits of one mint are each compared alone (a stricter test than their sum). This compares
rates over equal spans: the chain resets on its own grid (``last_reset``) and its clock is not the proxy's, so near a
reset the two can disagree by up to one period's amount; a failed transfer on chain, not a loss. The *approval*
ceilings are not compared: an approved amount can go through a vault transaction, which needs the owner's vote on
chain and no spending limit. A mint the policy limits but no spending limit covers is no check: without a limit
the agent key moves nothing of the vault alone (every vault transaction needs the owner's vote).

The report conforms when every check is ok (it holds the eight multisig checks, or only the failed
``multisig.exists``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import ceil
from typing import Final

from solders.pubkey import Pubkey

from parent_proxy.squads_multisig_account import (
    PERMISSION_EXECUTE,
    PERMISSION_INITIATE,
    PERMISSION_VOTE,
    MultisigAccount,
    permission_names,
)
from parent_proxy.squads_spending_limit_account import (
    PERIOD_DAY,
    PERIOD_MONTH,
    PERIOD_NAMES,
    PERIOD_WEEK,
    SpendingLimitAccount,
)
from policies.decoders.squads_vault import SEED_PREFIX, SEED_VAULT, squads_vault_address
from policies.document import Policy
from policies.model import NATIVE_SOL
from policies.programs import SQUADS_V4_PROGRAM
from policies.rules import ANY

THRESHOLD: Final = 2
"""DESIGN.md section 10: a 2-of-2 of the owner key and the agent key."""
OWNER_PERMISSIONS: Final = PERMISSION_INITIATE | PERMISSION_VOTE | PERMISSION_EXECUTE
AGENT_PERMISSIONS: Final = PERMISSION_VOTE
PERIOD_SECONDS: Final = {PERIOD_DAY: 24 * 60 * 60, PERIOD_WEEK: 7 * 24 * 60 * 60, PERIOD_MONTH: 30 * 24 * 60 * 60}
"""``Period::to_seconds`` (``state/spending_limit.rs``); ``OneTime`` has none (it never resets)."""
VAULT_INDICES: Final = range(256)
"""A vault index is a u8."""
DEFAULT_VAULT_INDEX: Final = 0
"""The vault of a wallet that names none: the multisig's first vault (index 0)."""


@dataclass(frozen=True)
class WalletKeys:
    """The wallet as the proxy holds it: owner key, agent key, and the vault address it shows (None: it names
    none, and the multisig's vault `DEFAULT_VAULT_INDEX` is its vault)."""

    owner: Pubkey
    agent: Pubkey
    vault: Pubkey | None


@dataclass(frozen=True)
class Check:
    id: str
    """One of the ids in the module docstring."""
    subject: str
    """The account checked: the multisig, or a spending limit."""
    ok: bool
    seen: str
    expected: str


@dataclass(frozen=True)
class ConformanceReport:
    multisig: Pubkey
    checks: tuple[Check, ...]

    @property
    def conforms(self) -> bool:
        """Every check is ok (and there is at least one)."""
        return bool(self.checks) and all(check.ok for check in self.checks)


def _keys(keys: Sequence[Pubkey]) -> str:
    return "[" + ", ".join(str(k) for k in keys) + "]"


def vault_index(multisig: Pubkey, vault: Pubkey) -> int | None:
    """The index whose vault PDA of ``multisig`` is ``vault``, or None (derived here, not through the sign path's
    cached `policies.decoders.squads_vault.squads_vault_address`, whose cache this search would flush)."""
    for index in VAULT_INDICES:
        seeds = [SEED_PREFIX, bytes(multisig), SEED_VAULT, bytes([index])]
        if Pubkey.find_program_address(seeds, SQUADS_V4_PROGRAM)[0] == vault:
            return index
    return None


def automatic_allowance(policy: Policy, asset: str, span_seconds: int) -> int:
    """An upper bound of what ``policy`` signs automatically of ``asset`` in any ``span_seconds`` (module docstring)."""
    rules = policy.rules
    limit = policy.limit_by_asset.get(asset)
    if limit is None or (asset != NATIVE_SOL and asset not in rules.mints):
        return 0  # the evaluator denies it
    bounds = [period.tier.automatic * ceil(span_seconds / period.window_seconds) for period in limit.periods]
    requests = rules.rate.max_requests * ceil(span_seconds / rules.rate.window_seconds)
    bounds.append(limit.per_transaction.automatic * requests)
    return min(bounds)


def _vault_check(wallet: WalletKeys, account: MultisigAccount, vault: int | None) -> Check:
    expected = "a vault PDA of this multisig"
    if wallet.vault is None:  # nothing named: the default vault, which is one by construction
        address = squads_vault_address(account.address, DEFAULT_VAULT_INDEX)
        seen = f"{address} (vault {DEFAULT_VAULT_INDEX}: the wallet names no vault, so the multisig's default)"
        return Check("multisig.vault", str(account.address), True, seen, expected)
    named = "not a vault of this multisig" if vault is None else f"vault {vault}"
    return Check("multisig.vault", str(account.address), vault is not None, f"{wallet.vault} ({named})", expected)


def _multisig_checks(wallet: WalletKeys, policy: Policy, account: MultisigAccount, vault: int | None) -> list[Check]:
    subject = str(account.address)

    def check(check_id: str, ok: bool, seen: object, expected: str) -> Check:
        return Check(check_id, subject, ok, str(seen), expected)

    declared = policy.rules.squads_multisig
    members = [m.key for m in account.members]
    owner, agent = account.member(wallet.owner), account.member(wallet.agent)
    pair = sorted((wallet.owner, wallet.agent), key=bytes)
    return [
        check("multisig.declared", declared == account.address, account.address,
              f"the multisig the policy declares ({declared})"),
        check("multisig.members", wallet.owner != wallet.agent and sorted(members, key=bytes) == pair, _keys(members),
              f"exactly the owner key and the agent key {_keys(pair)}"),
        check("multisig.owner_permissions", owner is not None and owner.has(OWNER_PERMISSIONS),
              "not a member" if owner is None else permission_names(owner.permissions),
              permission_names(OWNER_PERMISSIONS)),
        check("multisig.agent_permissions", agent is not None and agent.has(AGENT_PERMISSIONS),
              "not a member" if agent is None else permission_names(agent.permissions),
              f"at least {permission_names(AGENT_PERMISSIONS)}"),
        check("multisig.threshold", account.threshold == THRESHOLD, account.threshold, str(THRESHOLD)),
        check("multisig.config_authority", account.config_authority == Pubkey.default(), account.config_authority,
              f"{Pubkey.default()} (none: autonomous)"),
        check("multisig.time_lock", account.time_lock == 0, account.time_lock, "0"),
        _vault_check(wallet, account, vault),
    ]  # fmt: skip


def _destinations_check(policy: Policy, limit: SpendingLimitAccount) -> Check:
    rules = policy.rules.destinations
    seen = "any (empty list)" if not limit.destinations else _keys(limit.destinations)
    denied = [d for d in limit.destinations if d in rules.deny]
    if rules.allow == ANY:
        # An empty list lets the agent key pay any address, the policy's denied ones included.
        ok = not denied and (bool(limit.destinations) or not rules.deny)
        expected = "none on the policy's denylist (an empty list only when the policy denies no address)"
    else:
        ok = bool(limit.destinations) and not denied and all(d in rules.allow for d in limit.destinations)
        expected = "a non-empty list within the policy's destination allowlist, none on its denylist"
    return Check("spending_limit.destinations", str(limit.address), ok, seen, expected)


def _amount_check(policy: Policy, limit: SpendingLimitAccount) -> Check:
    asset = NATIVE_SOL if limit.mint == Pubkey.default() else str(limit.mint)
    subject, name = str(limit.address), PERIOD_NAMES[limit.period]
    seconds = PERIOD_SECONDS.get(limit.period)
    if seconds is None:  # OneTime: it never resets, so no span bounds what the policy grants against it
        granted = automatic_allowance(policy, asset, 1) > 0
        seen = f"{asset}: the policy allows it automatically, without end" if granted else f"{asset}: never automatic"
        return Check("spending_limit.amount", subject, not granted, seen,
                     f"no automatic {asset} in the policy (a {name} limit of {limit.amount} never resets)")  # fmt: skip
    allowance = automatic_allowance(policy, asset, seconds)
    return Check("spending_limit.amount", subject, allowance <= limit.amount,
                 f"{asset}: the policy allows up to {allowance} automatically in any {seconds} s",
                 f"at most the limit's {limit.amount} per {name}")  # fmt: skip


def _limit_checks(wallet: WalletKeys, policy: Policy, vault: int | None, limit: SpendingLimitAccount) -> list[Check]:
    subject = str(limit.address)
    return [
        Check("spending_limit.members", subject, list(limit.members) == [wallet.agent], _keys(limit.members),
              f"exactly the agent key [{wallet.agent}]"),
        Check("spending_limit.vault", subject, vault is not None and limit.vault_index == vault,
              f"vault {limit.vault_index}", "the wallet's vault" + ("" if vault is None else f" (vault {vault})")),
        _destinations_check(policy, limit),
        _amount_check(policy, limit),
    ]  # fmt: skip


def multisig_conformance(
    wallet: WalletKeys, policy: Policy, account: MultisigAccount, limits: Sequence[SpendingLimitAccount]
) -> ConformanceReport:
    """The checks of the module docstring for the wallet's multisig ``account`` and every spending limit of it
    (``limits``: `parent_proxy.chain.Chain.spending_limits` of ``account.address``). A limit of another multisig is
    a failed ``spending_limit.multisig`` check (the chain adapters refuse one already)."""
    vault = DEFAULT_VAULT_INDEX if wallet.vault is None else vault_index(account.address, wallet.vault)
    checks = _multisig_checks(wallet, policy, account, vault)
    for limit in limits:
        if limit.multisig != account.address:
            checks.append(Check("spending_limit.multisig", str(limit.address), False, str(limit.multisig),
                                f"the wallet's multisig {account.address}"))  # fmt: skip
        checks.extend(_limit_checks(wallet, policy, vault, limit))
    return ConformanceReport(account.address, tuple(checks))


def missing_multisig(multisig: Pubkey) -> ConformanceReport:
    """The report when the chain has no account at ``multisig`` (the address the policy declares): one failed
    ``multisig.exists`` check, so it never conforms."""
    check = Check("multisig.exists", str(multisig), False, "no account at this address",
                  "the Squads v4 multisig the policy declares, set up on chain")  # fmt: skip
    return ConformanceReport(multisig, (check,))
