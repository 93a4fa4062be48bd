"""The per-instruction rules of policy evaluation (`policies.evaluate`, DESIGN.md section 5, rule 2).

Each instruction, and each instruction a Squads vault transaction carries, is checked: its program against the
allowlist; each effect: opaque and restricted ones deny, an unchecked token transfer by a wallet key denies, a
durable nonce must be allowed and first, a change of the wallet's authorities, delegates or lamports may freeze,
and an outflow from a wallet key needs an allowed mint and a destination the destination rules accept (also for
whoever the transaction hands a paid account to, `policies.control`). An instruction on the policy's own Squads
multisig makes the vault it names one of the wallet's keys while it and the instructions it carries are checked.

`InstructionChecks` holds what these rules read and add to; `policies.evaluate` extends it with the
whole-transaction rules and sets every attribute when it starts an evaluation.
"""

from __future__ import annotations

from solders.pubkey import Pubkey

from policies.control import AccountParties
from policies.decision import Reason, Verdict
from policies.document import Policy
from policies.model import (
    NATIVE_SOL,
    AccountClose,
    AuthorityChange,
    ComputeBudgetSetting,
    DecodedInstruction,
    DelegateApproval,
    NonceAdvance,
    Opaque,
    Outflow,
    Restricted,
    UncheckedTokenTransfer,
)
from policies.programs import SQUADS_V4_PROGRAM, WRAPPED_SOL_MINTS, associated_token_address
from policies.rules import ANY


class InstructionChecks:
    """Accumulates the reasons and outflows of one evaluation's instructions (the subclass sets the attributes)."""

    __slots__ = ("outflows", "parties", "policy", "reasons", "verdict", "wallet")

    policy: Policy
    wallet: frozenset[Pubkey]
    """The wallet's keys, with the vault of the policy's own multisig while a Squads instruction is checked."""
    reasons: list[Reason]
    verdict: Verdict
    outflows: dict[str, int]
    parties: AccountParties | None
    """Who the transaction names as controlling, or receiving from, each account (`evaluate` sets it)."""

    def raise_to(self, verdict: Verdict, rule: str, message: str, **detail: str | int | None) -> None:
        self.reasons.append(Reason(verdict, rule, message, **detail))  # type: ignore[arg-type]
        self.verdict = max(self.verdict, verdict)

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
