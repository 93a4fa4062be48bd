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

Nothing here performs I/O or reads a clock: the caller supplies time and counters in `EvalContext`. The
whole-transaction rules are here, the per-instruction ones (rule 2) in `policies.instruction_checks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from solders.pubkey import Pubkey

from policies.control import AccountParties
from policies.decision import Decision, Reason, Reservation, Verdict
from policies.document import Policy
from policies.errors import DecodeError
from policies.fastinit import fast_init
from policies.fees import FeeSummary, summarize_fees
from policies.instruction_checks import InstructionChecks
from policies.model import FEES, DecodedTransaction
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


class _Evaluation(InstructionChecks):
    """Accumulates reasons and outflows for one evaluation: the whole-transaction rules here, the per-instruction
    ones in `InstructionChecks`."""

    __slots__ = ("ctx", "fee")

    def __init__(self, policy: Policy, ctx: EvalContext) -> None:
        self.policy = policy
        self.ctx = ctx
        self.wallet = ctx.wallet_keys
        self.reasons = []
        self.verdict = Verdict.ALLOW
        self.outflows = {}
        self.fee = 0
        """The fee a wallet key pays (0 when someone else pays), reserved under ``FEES``."""
        self.parties = None

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
