"""Evaluation semantics: tier boundaries, strictest-wins, reservations, switches in the policy, context checks."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest
import spl.token.instructions as tok
import spl.token.models as spl
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from policies.decision import Verdict
from policies.evaluate import evaluate
from policies.model import DecodedInstruction, Outflow
from policies.programs import MEMO_V2_PROGRAM, TOKEN_PROGRAM
from policies.transaction import decode_transaction
from tests.support.policies import BLOCKED, MERCHANT
from tests.support.scenario import FEE, Scenario

SOL = 1_000_000_000
STRANGER = Keypair().pubkey()


@pytest.mark.parametrize(
    ("lamports", "verdict"),
    [(SOL, Verdict.ALLOW), (SOL + 1, Verdict.ESCALATE), (10 * SOL, Verdict.ESCALATE), (10 * SOL + 1, Verdict.DENY)],
)
def test_per_transaction_tier_boundaries(lamports: int, verdict: Verdict) -> None:
    s = Scenario()
    assert s.decide(s.legacy(s.pay(lamports))).verdict is verdict


@pytest.mark.parametrize(
    ("spent", "verdict"),
    [(4 * SOL, Verdict.ALLOW), (4 * SOL + 1, Verdict.ESCALATE), (19 * SOL, Verdict.ESCALATE),
     (19 * SOL + 1, Verdict.DENY)],
)  # fmt: skip
def test_period_tier_counts_what_was_spent(spent: int, verdict: Verdict) -> None:
    s = Scenario(spent={("SOL", 86_400): spent})
    decision = s.decide(s.legacy(s.pay(SOL)))
    assert decision.verdict is verdict
    assert {r.rule for r in decision.reasons} <= {"limits.sol.sol-daily"}


def test_strictest_tier_wins_and_every_reason_is_kept() -> None:
    s = Scenario()
    decision = s.decide(s.legacy(s.pay(2 * SOL), s.pay(1, BLOCKED)))
    assert decision.verdict is Verdict.DENY
    assert [(r.verdict, r.rule, r.instruction) for r in decision.reasons] == [
        (Verdict.DENY, "destinations.deny", 3),
        (Verdict.ESCALATE, "limits.sol.per_transaction", None),
    ]
    assert decision.reservations == ()


def test_freeze_overrides_deny() -> None:
    s = Scenario()
    approve = tok.approve(spl.ApproveParams(program_id=TOKEN_PROGRAM, source=STRANGER, delegate=STRANGER,
                                                   owner=s.wallet, amount=1))  # fmt: skip
    decision = s.decide(s.legacy(s.pay(1, BLOCKED), approve))
    assert decision.verdict is Verdict.FREEZE
    assert {r.verdict for r in decision.reasons} == {Verdict.DENY, Verdict.FREEZE}


def test_escalation_reserves_the_outflows() -> None:
    s = Scenario()
    decision = s.decide(s.legacy(s.pay(SOL), s.pay(SOL)))
    assert decision.verdict is Verdict.ESCALATE
    assert [(r.asset, r.amount) for r in decision.reservations] == [("SOL", 2 * SOL), ("fees", FEE)]


def test_disabled_freeze_triggers_still_deny() -> None:
    s = Scenario()
    s.doc["rules"]["freeze"] = {"on_authority_change": False, "on_delegate_approval": False,
                                "on_close_to_stranger": False, "denials": None}  # fmt: skip
    approve = tok.approve(spl.ApproveParams(program_id=TOKEN_PROGRAM, source=STRANGER, delegate=STRANGER,
                                                   owner=s.wallet, amount=1))  # fmt: skip
    decision = s.decide(s.legacy(approve))
    assert (decision.verdict, decision.reasons[0].rule) == (Verdict.DENY, "freeze.delegate_approval")
    s.denials = 10_000
    assert s.decide(s.legacy(s.pay(1, BLOCKED))).verdict is Verdict.DENY


def test_denial_burst_only_turns_denials_into_freezes() -> None:
    s = Scenario(denials=4)
    assert s.decide(s.legacy(s.pay(2 * SOL))).verdict is Verdict.ESCALATE
    assert s.decide(s.legacy(s.pay(1, BLOCKED))).verdict is Verdict.FREEZE
    s.denials = 3
    assert s.decide(s.legacy(s.pay(1, BLOCKED))).verdict is Verdict.DENY


def test_any_destination_still_honours_the_denylist() -> None:
    s = Scenario()
    s.doc["rules"]["destinations"]["allow"] = "any"
    assert s.decide(s.legacy(s.pay(1, STRANGER))).verdict is Verdict.ALLOW
    assert s.decide(s.legacy(s.pay(1, BLOCKED))).verdict is Verdict.DENY


def test_asset_without_a_limit_is_denied() -> None:
    s = Scenario()
    s.doc["rules"]["limits"] = s.doc["rules"]["limits"][1:]
    decision = s.decide(s.legacy(s.pay(1)))
    assert (decision.verdict, decision.reasons[0].rule) == (Verdict.DENY, "limits")


def test_empty_program_allowlist_denies_everything() -> None:
    s = Scenario()
    s.doc["rules"]["programs"] = []
    decision = s.decide(s.legacy(s.pay(1)))
    assert decision.verdict is Verdict.DENY
    assert [r.instruction for r in decision.reasons] == [0, 1, 2]


def test_fee_caps_apply_only_when_the_wallet_pays() -> None:
    s = Scenario()
    payer = Keypair().pubkey()
    ix = s.pay(1)
    raw = s.legacy(*s.budget(price=10**9), ix, payer=payer, budget=False)
    decision = s.decide(raw)
    assert decision.verdict is Verdict.ALLOW, decision.reasons
    assert s.decide(s.legacy(*s.budget(price=10**9), ix, budget=False)).verdict is Verdict.DENY


def test_a_co_signers_own_transfer_is_not_the_wallets() -> None:
    s = Scenario()
    other = Keypair().pubkey()
    foreign = Instruction(s.pay(1).program_id, s.pay(5 * SOL).data,
                          [AccountMeta(other, True, True), AccountMeta(STRANGER, False, True)])  # fmt: skip
    decision = s.decide(s.legacy(foreign, s.pay(1)))
    assert decision.verdict is Verdict.ALLOW
    assert [(r.asset, r.amount) for r in decision.reservations] == [("SOL", 1), ("fees", FEE + 5_000)]  # two signatures


def test_ata_rent_for_a_stranger_is_judged_by_its_owner() -> None:
    s = Scenario()
    mint = Pubkey.from_string(s.doc["rules"]["mints"][0])
    for owner, verdict in [(MERCHANT, Verdict.ALLOW), (STRANGER, Verdict.DENY), (s.wallet, Verdict.ALLOW)]:
        raw = s.legacy(tok.create_idempotent_associated_token_account(s.wallet, owner, mint))
        assert s.decide(raw).verdict is verdict, owner


def test_inner_instructions_are_checked_like_top_level_ones() -> None:
    """Vault transactions (Squads) carry inner instructions; their effects count for the wallet."""
    s = Scenario()
    tx = decode_transaction(s.legacy(Instruction(MEMO_V2_PROGRAM, b"vault", [AccountMeta(s.wallet, True, False)])))
    inner = DecodedInstruction(0, MEMO_V2_PROGRAM, "test", "inner", (), {},
                               (Outflow("SOL", 3, s.wallet, s.wallet, STRANGER, "transfer"),))  # fmt: skip
    carrier = replace(tx.instructions[2], inner=(inner,))
    tx = replace(tx, instructions=(*tx.instructions[:2], carrier))
    decision = evaluate(s.policy, tx, s.context())
    assert decision.verdict is Verdict.DENY
    assert [(r.rule, r.instruction, r.inner) for r in decision.reasons] == [("destinations.allow", 2, 0)]


def test_context_must_be_timezone_aware_and_name_the_wallet() -> None:
    s = Scenario()
    tx = decode_transaction(s.legacy(s.pay(1)))
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(s.policy, tx, replace(s.context(), now=datetime(2026, 1, 1)))
    with pytest.raises(ValueError, match="at least one key"):
        evaluate(s.policy, tx, replace(s.context(), wallet_keys=frozenset()))


def test_decision_json_is_stable() -> None:
    s = Scenario()
    decision = s.decide(s.legacy(s.pay(2 * SOL)))
    assert decision.to_json() == {
        "verdict": "escalate",
        "policy_sequence": 1,
        "reasons": [{"verdict": "escalate", "rule": "limits.sol.per_transaction",
                     "message": "SOL per transaction above the automatic threshold",
                     "seen": str(2 * SOL), "allowed": str(SOL)}],
        "reservations": [{"asset": "SOL", "amount": str(2 * SOL)}, {"asset": "fees", "amount": str(FEE)}],
    }  # fmt: skip


def test_a_message_is_judged_by_the_request_rules_only() -> None:
    from datetime import timedelta

    from policies.evaluate import evaluate_message

    s = Scenario()
    s.doc["rules"]["offchain_messages"] = {"allowed": True}
    s.doc["rules"]["rate"] = {"max_requests": 2, "window_seconds": 60}
    assert evaluate_message(s.policy, s.context()).verdict is Verdict.ALLOW
    s.spent = {}  # spending is not read at all
    s.requests = 2
    assert [r.rule for r in evaluate_message(s.policy, s.context()).reasons] == ["rate"]
    s.requests, s.denials = 0, 4  # the fifth denial of the example's burst freezes
    s.doc["rules"]["offchain_messages"] = {"allowed": False}
    s._policy = None
    decision = evaluate_message(s.policy, s.context())
    assert decision.verdict is Verdict.FREEZE
    assert [r.rule for r in decision.reasons] == ["offchain_messages", "freeze.denials"]
    s.denials = 0
    s.doc["rules"]["offchain_messages"] = {"allowed": True}
    s.doc["expires_at"] = int((s.now - timedelta(seconds=1)).timestamp())
    s._policy = None
    assert [r.rule for r in evaluate_message(s.policy, s.context()).reasons] == ["policy_expired"]
