"""Policy evaluation: a pure function of (policy, decoded transaction, context) -> `Decision`.

Semantics (DESIGN.md section 5):
1. Default deny: a decode failure, an opaque or restricted instruction, a program off the allowlist, an asset
   without a limit, a spending window the context does not report, a policy past its ``expires_at``: DENY, never
   a guess.
2. Every instruction is checked (inner instructions of vault transactions too); effects whose authority is one
   of the wallet's keys count against the wallet's limits and destination rules, which also judge whoever the
   transaction hands a paid account to (`policies.control`).
3. Deny overrides allow; the strictest tier over all rules and instructions wins.
4. A DENY that completes a burst of denials (``freeze.denials``) becomes FREEZE.

Nothing here performs I/O or reads a clock: the caller supplies time and counters in `EvalContext`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from solders.pubkey import Pubkey

from policies.control import AccountParties
from policies.decision import Decision, Reason, Reservation, Verdict
from policies.document import Policy, associated_token_address
from policies.errors import DecodeError
from policies.fastinit import fast_init
from policies.fees import FeeSummary, summarize_fees
from policies.model import (
    FEES,
    NATIVE_SOL,
    AccountClose,
    AuthorityChange,
    ComputeBudgetSetting,
    DecodedInstruction,
    DecodedTransaction,
    DelegateApproval,
    NonceAdvance,
    Opaque,
    Outflow,
    Restricted,
    UncheckedTokenTransfer,
)
from policies.programs import SQUADS_V4_PROGRAM, WRAPPED_SOL_MINTS
from policies.rules import ANY, PeriodLimit


@fast_init
@dataclass(frozen=True, slots=True)
class EvalContext:
    """What the caller knows besides the policy and the transaction.

    ``spent`` maps every ``policy.spend_windows()`` entry (asset, window_seconds) to the amount already committed
    or reserved in that rolling window. ``requests_in_window`` counts earlier requests within the policy's rate
    window; ``denials_in_window`` earlier denials within its ``freeze.denials`` window.
    """

    now: datetime
    wallet_keys: frozenset[Pubkey]
    spent: Mapping[tuple[str, int], int]
    requests_in_window: int
    denials_in_window: int


class _Evaluation:
    """Accumulates reasons and outflows for one evaluation."""

    __slots__ = ("ctx", "fee", "outflows", "parties", "policy", "reasons", "verdict", "wallet")

    def __init__(self, policy: Policy, ctx: EvalContext) -> None:
        self.policy = policy
        self.ctx = ctx
        self.wallet = ctx.wallet_keys
        self.reasons: list[Reason] = []
        self.verdict = Verdict.ALLOW
        self.outflows: dict[str, int] = {}
        self.fee = 0
        """The fee a wallet key pays (0 when someone else pays), reserved under ``FEES``."""
        self.parties: AccountParties | None = None
        """Who the transaction names as controlling, or receiving from, each account (`evaluate` sets it)."""

    def raise_to(self, verdict: Verdict, rule: str, message: str, **detail: str | int | None) -> None:
        self.reasons.append(Reason(verdict, rule, message, **detail))  # type: ignore[arg-type]
        self.verdict = max(self.verdict, verdict)

    # -- whole-transaction rules -----------------------------------------------------------------------------

    def check_request(self) -> None:
        rules = self.policy.rules
        now = self.ctx.now
        if (expired := expiry_reason(self.policy, now)) is not None:
            self.reasons.append(expired)
            self.verdict = max(self.verdict, expired.verdict)
        if rules.time_windows != ANY:
            minute = now.hour * 60 + now.minute
            weekday = now.weekday()
            if not any(weekday in w.days and w.start_minute <= minute < w.end_minute for w in rules.time_windows):
                self.raise_to(
                    Verdict.DENY,
                    "time_windows",
                    "request outside the policy's time windows",
                    seen=now.strftime("%a %H:%M UTC"),
                )
        if self.ctx.requests_in_window >= rules.rate.max_requests:
            self.raise_to(
                Verdict.DENY,
                "rate",
                "request rate limit reached",
                seen=self.ctx.requests_in_window + 1,
                allowed=rules.rate.max_requests,
            )

    def check_signers(self, tx: DecodedTransaction) -> None:
        if self.ctx.wallet_keys.isdisjoint(tx.required_signers):
            self.raise_to(Verdict.DENY, "wallet.signer", "no wallet key is a required signer of this transaction")

    def check_fees(self, tx: DecodedTransaction, fees: FeeSummary) -> None:
        if tx.fee_payer not in self.ctx.wallet_keys:
            return
        caps = self.policy.rules.fees
        if fees.unit_price > caps.max_compute_unit_price:
            self.raise_to(
                Verdict.DENY,
                "fees.compute_unit_price",
                "compute-unit price above the cap",
                seen=fees.unit_price,
                allowed=caps.max_compute_unit_price,
            )
        if fees.requested_unit_limit is not None and fees.requested_unit_limit > caps.max_compute_unit_limit:
            self.raise_to(
                Verdict.DENY,
                "fees.compute_unit_limit",
                "compute-unit limit above the cap",
                seen=fees.requested_unit_limit,
                allowed=caps.max_compute_unit_limit,
            )
        if fees.total_lamports > caps.max_total_fee_lamports:
            self.raise_to(
                Verdict.DENY,
                "fees.total_fee",
                "total fee above the cap",
                seen=fees.total_lamports,
                allowed=caps.max_total_fee_lamports,
            )
        # Reserved whether or not the policy has fee periods, so that periods added later count the fees already
        # paid in their windows.
        self.fee = fees.total_lamports
        for period in caps.periods:
            self._period_tier("fees.periods", FEES, period, self.fee)

    def check_limits(self) -> None:
        for asset, amount in self.outflows.items():
            limit = self.policy.limit_by_asset.get(asset)
            if limit is None:
                self.raise_to(Verdict.DENY, "limits", f"the policy sets no limit for {asset}", seen=str(amount))
                continue
            section = f"limits.{limit.id}"
            tier = limit.per_transaction
            if amount > tier.automatic:
                self._raise_tier(tier.automatic, tier.approval, f"{section}.per_transaction",
                                 f"{asset} per transaction", amount)  # fmt: skip
            for period in limit.periods:
                self._period_tier(section, asset, period, amount)

    def _period_tier(self, section: str, asset: str, period: PeriodLimit, amount: int) -> None:
        """Apply ``period``'s tier to what ``asset`` already took in its window plus ``amount`` (DENY when the
        context does not report the window); the reason's rule id is ``<section>.<period id>``. Rule ids and
        messages are formatted only when a reason is raised (most requests raise none)."""
        spent = self.ctx.spent.get((asset, period.window_seconds))
        if spent is None or spent < 0:
            self.raise_to(Verdict.DENY, f"{section}.{period.id}", "the spending state for this window is missing")
            return
        total = spent + amount
        tier = period.tier
        if total > tier.automatic:
            self._raise_tier(tier.automatic, tier.approval, f"{section}.{period.id}",
                             f"{asset} in {period.window_seconds}s (already {spent})", total)  # fmt: skip

    def _raise_tier(self, automatic: int, approval: int, rule: str, scope: str, total: int) -> None:
        """ESCALATE above ``automatic``, DENY above ``approval`` (the caller checked ``total > automatic``)."""
        if total > approval:
            verdict, bound, what = Verdict.DENY, approval, "above the approval ceiling"
        else:
            verdict, bound, what = Verdict.ESCALATE, automatic, "above the automatic threshold"
        self.raise_to(verdict, rule, f"{scope} {what}", seen=str(total), allowed=str(bound))

    # -- per instruction ---------------------------------------------------------------------------------------

    def _check_instruction(self, ix: DecodedInstruction, top: int, inner: int | None) -> None:
        where = {"instruction": top, "inner": inner}
        if ix.program_id not in self.policy.rules.programs:
            self.raise_to(
                Verdict.DENY,
                "programs.allow",
                f"program {ix.program} is not on the allowlist",
                seen=str(ix.program_id),
                **where,
            )
        for effect in ix.effects:
            if isinstance(effect, Outflow):
                self._outflow(effect, ix, where)
            elif isinstance(effect, ComputeBudgetSetting):
                continue  # summarised once per transaction by policies.fees
            elif isinstance(effect, Opaque):
                self.raise_to(Verdict.DENY, "decode.opaque", f"{ix.program}.{ix.name}: {effect.reason}", **where)
            elif isinstance(effect, Restricted):
                self.raise_to(
                    Verdict.DENY,
                    "restricted",
                    f"{ix.program}.{ix.name} is not permitted by any policy",
                    seen=effect.action,
                    **where,
                )
            elif isinstance(effect, UncheckedTokenTransfer):
                if effect.authority in self.wallet:
                    self.raise_to(
                        Verdict.DENY,
                        "token.transfer_checked_required",
                        "token Transfer without a mint cannot be limited; use TransferChecked",
                        **where,
                    )
            elif isinstance(effect, NonceAdvance):
                self._nonce(effect, top, inner, where)
            else:
                self._wallet_control(effect, where)
        for j, child in enumerate(ix.inner):
            self.check_instruction(child, top, j)

    def check_instruction(self, ix: DecodedInstruction, top: int, inner: int | None) -> None:
        if ix.program_id != SQUADS_V4_PROGRAM:
            self._check_instruction(ix, top, inner)
            return
        # Squads: only the wallet's own multisig (rules.squads_multisig, declared by the owner); the vault an
        # instruction on it names is the wallet's while that instruction and those it carries are checked.
        own = self.policy.rules.squads_multisig
        multisig = ix.args.get("multisig")
        if own is None or multisig != own:
            self.raise_to(Verdict.DENY, "squads.multisig", "Squads instruction on a multisig that is not this wallet's",
                          seen=str(multisig), instruction=top, inner=inner)  # fmt: skip
        vault = ix.args.get("vault")
        if not isinstance(vault, Pubkey) or own is None or multisig != own:
            self._check_instruction(ix, top, inner)
            return
        outer = self.wallet
        self.wallet = outer | {vault}
        try:
            self._check_instruction(ix, top, inner)
        finally:
            self.wallet = outer

    def _wallet_control(
        self, effect: AuthorityChange | DelegateApproval | AccountClose, where: dict[str, int | None]
    ) -> None:
        if effect.authority not in self.wallet:
            return
        triggers = self.policy.rules.freeze
        if isinstance(effect, AuthorityChange):
            tier = Verdict.FREEZE if triggers.on_authority_change else Verdict.DENY
            self.raise_to(
                tier,
                "freeze.authority_change",
                f"wallet authority change ({effect.what})",
                seen=str(effect.account),
                **where,
            )
        elif isinstance(effect, DelegateApproval):
            tier = Verdict.FREEZE if triggers.on_delegate_approval else Verdict.DENY
            self.raise_to(
                tier, "freeze.delegate_approval", "wallet approves a delegate", seen=str(effect.delegate), **where
            )
        elif effect.destination not in self.wallet:
            tier = Verdict.FREEZE if triggers.on_close_to_stranger else Verdict.DENY
            self.raise_to(
                tier,
                "freeze.close_to_stranger",
                "account closed with its lamports sent away from the wallet",
                seen=str(effect.destination),
                **where,
            )

    def _nonce(self, effect: NonceAdvance, top: int, inner: int | None, where: dict[str, int | None]) -> None:
        rule = self.policy.rules.durable_nonce
        if not rule.allowed:
            self.raise_to(Verdict.DENY, "durable_nonce", "durable-nonce transactions are not allowed", **where)
        elif effect.nonce_account not in rule.nonce_accounts:
            self.raise_to(
                Verdict.DENY,
                "durable_nonce",
                "nonce account is not on the policy's list",
                seen=str(effect.nonce_account),
                **where,
            )
        elif top != 0 or inner is not None:
            self.raise_to(Verdict.DENY, "durable_nonce", "AdvanceNonceAccount must be the first instruction", **where)

    def _outflow(self, effect: Outflow, ix: DecodedInstruction, where: dict[str, int | None]) -> None:
        if effect.authority not in self.wallet:
            return
        asset = effect.asset
        if asset != NATIVE_SOL and asset not in self.policy.rules.mints:
            self.raise_to(Verdict.DENY, "mints.allow", "mint is not on the allowlist", seen=asset, **where)
        if effect.kind == "squads_rent":
            pass  # a new account of the policy's own multisig (the Squads rule checked that): counted, nowhere sent
        elif effect.kind == "ata_rent":
            # Rent for a new associated token account can be reclaimed only by its owner: the owner is the
            # party the destination rules judge (see policies.decoders.ata).
            owner = ix.args.get("owner")
            if not isinstance(owner, Pubkey):
                self.raise_to(Verdict.DENY, "decode", "associated account owner missing", **where)
            elif owner not in self.wallet:
                self._destination(owner, None, where)
        elif effect.destination not in self.wallet:
            self._destination(effect.destination, effect, where)
            if effect.kind == "squads_spending_limit" and effect.token_program is not None:
                # The program requires the destination token account to be owned by args["destination"]: a
                # denied owner is denied whatever token account of theirs receives (not only the associated one).
                owner = ix.args.get("destination")
                if isinstance(owner, Pubkey) and owner in self.policy.rules.destinations.deny:
                    self.raise_to(Verdict.DENY, "destinations.deny", "destination owner is on the denylist",
                                  seen=str(owner), **where)  # fmt: skip
        if effect.kind != "squads_rent" and effect.destination not in self.wallet and self.parties is not None:
            # Whoever the transaction hands the destination to (a new associated account's owner was judged above).
            judged = ix.args.get("owner") if effect.kind == "ata_rent" else None
            for rule, message, party in self.parties.findings(self.policy, effect.destination, self.wallet, judged):
                self.raise_to(Verdict.DENY, rule, message, seen=str(party), **where)
        self.outflows[asset] = self.outflows.get(asset, 0) + effect.amount

    def _destination(self, dest: Pubkey, outflow: Outflow | None, where: dict[str, int | None]) -> None:
        """Apply the destination rules to ``dest``; ``outflow``, when given, may land in the wallet's own
        associated account, which is derived only when nothing cheaper matched."""
        policy = self.policy
        if (
            dest in policy.rules.destinations.deny
            or dest in policy.denied_token_accounts
            or (outflow is not None and outflow.asset == NATIVE_SOL and dest in policy.denied_wrapped_sol_accounts)
        ):
            self.raise_to(Verdict.DENY, "destinations.deny", "destination is on the denylist", seen=str(dest), **where)
            return
        allow = policy.rules.destinations.allow
        if allow == ANY or dest in allow:
            return
        # An allowed owner's associated token accounts stand for the owner in token transfers only: for SOL (and
        # for the owner of a new associated account) they are addresses off the list, and under the token program
        # that does not own the mint, addresses no account can ever occupy (lamports sent there are lost).
        if outflow is not None and outflow.asset != NATIVE_SOL and dest in policy.allowed_token_accounts:
            return
        if outflow is not None and self._own_token_account(outflow):
            return
        self.raise_to(
            Verdict.DENY, "destinations.allow", "destination is not on the allowlist", seen=str(dest), **where
        )

    def _own_token_account(self, effect: Outflow) -> bool:
        """Is the destination the wallet's own associated account: for the outflow's mint, or for wrapped SOL (each
        native mint under the token program that owns it: any other pairing names an address where no account can
        ever be created, and lamports sent there are lost)?"""
        pairs: tuple[tuple[Pubkey, Pubkey], ...]
        if effect.asset == NATIVE_SOL:
            pairs = WRAPPED_SOL_MINTS
        elif effect.token_program is not None:
            pairs = ((Pubkey.from_string(effect.asset), effect.token_program),)
        else:
            return False
        return any(
            associated_token_address(key, mint, program) == effect.destination
            for key in self.wallet
            for mint, program in pairs
        )

    def finish(self) -> Decision:
        burst = self.policy.rules.freeze.denials
        if self.verdict is Verdict.DENY and burst is not None and self.ctx.denials_in_window + 1 >= burst.count:
            self.raise_to(
                Verdict.FREEZE,
                "freeze.denials",
                "burst of denied requests",
                seen=self.ctx.denials_in_window + 1,
                allowed=burst.count - 1,
            )
        reservations: tuple[Reservation, ...] = ()
        if self.verdict <= Verdict.ESCALATE:
            amounts = {**self.outflows, FEES: self.fee} if self.fee else self.outflows
            reservations = tuple([Reservation(asset, amount) for asset, amount in sorted(amounts.items())])
        return Decision(self.verdict, tuple(self.reasons), reservations, self.policy.sequence)


def evaluate_message(policy: Policy, ctx: EvalContext) -> Decision:
    """The policy's decision on signing an off-chain message (it moves no funds, so only the request rules apply):
    ``offchain_messages`` must allow it, the policy must not have expired, the time windows and the request rate
    apply, and a DENY that completes a burst of denials becomes FREEZE, as for a transaction. ``ctx.spent`` is
    not read. Pure, like `evaluate`."""
    run = _Evaluation(policy, _checked_context(ctx))
    if not policy.rules.offchain_messages:
        run.raise_to(Verdict.DENY, "offchain_messages", "the policy does not allow off-chain messages")
    run.check_request()
    return run.finish()


def expiry_reason(policy: Policy, now: datetime) -> Reason | None:
    """The DENY reason (rule ``policy_expired``) of ``policy`` at ``now`` (timezone-aware), or None while it is in
    force. Evaluation raises it; every other use of a policy (off-chain messages) must refuse on it too."""
    if not policy.expired(now):
        return None
    return Reason(
        Verdict.DENY,
        "policy_expired",
        "the policy has expired: the owner must sign a new one",
        seen=now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        allowed=f"before {datetime.fromtimestamp(policy.expires_at or 0, UTC):%Y-%m-%dT%H:%M:%SZ}",
    )


def _checked_context(ctx: EvalContext) -> EvalContext:
    offset = ctx.now.utcoffset()  # None when tzinfo is None, or when the tzinfo gives no offset
    if offset is None:
        raise ValueError("EvalContext.now must be timezone-aware")
    if not ctx.wallet_keys:
        raise ValueError("EvalContext.wallet_keys must name at least one key")
    if offset:
        return replace(ctx, now=ctx.now.astimezone(UTC))
    return ctx


def evaluate(policy: Policy, tx: DecodedTransaction | DecodeError, ctx: EvalContext) -> Decision:
    """Evaluate a decoded transaction (or the `DecodeError` its decoding raised) against ``policy``."""
    run = _Evaluation(policy, _checked_context(ctx))
    run.check_request()
    if isinstance(tx, DecodeError):
        run.raise_to(Verdict.DENY, "decode", str(tx), instruction=tx.instruction_index)
        return run.finish()
    run.check_signers(tx)
    parties = AccountParties(tx.instructions, run.wallet)
    run.parties = parties if parties else None
    for ix in tx.instructions:
        run.check_instruction(ix, ix.index, None)
    try:
        fees = summarize_fees(tx)
    except DecodeError as exc:
        run.raise_to(Verdict.DENY, "fees", str(exc), instruction=exc.instruction_index)
    else:
        run.check_fees(tx, fees)
    run.check_limits()
    return run.finish()
