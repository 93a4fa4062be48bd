"""Durable nonces (docs/policies.md, `durable_nonce`): refused unless the policy allows them; then only on a listed
nonce account, and only with AdvanceNonceAccount as the transaction's first instruction. The attack corpus holds
the refusals; this holds the one shape that passes, beside each refusal's message."""

from __future__ import annotations

from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import AdvanceNonceAccountParams, advance_nonce_account

from policies.decision import Verdict
from tests.support.scenario import Scenario

NONCE = Keypair().pubkey()


def _allowing(*accounts: Pubkey) -> Scenario:
    s = Scenario()
    s.doc["rules"]["durable_nonce"] = {"allowed": True, "nonce_accounts": [str(a) for a in accounts]}
    return s


def _advance(s: Scenario, nonce: Pubkey = NONCE) -> Instruction:
    return advance_nonce_account(AdvanceNonceAccountParams(nonce_pubkey=nonce, authorized_pubkey=s.wallet))


def _reasons(s: Scenario, raw: bytes) -> list[tuple[Verdict, str, str, object, object]]:
    decision = s.decide(raw)
    return [(r.verdict, r.rule, r.message, r.instruction, r.seen) for r in decision.reasons]


def test_a_listed_nonce_advanced_first_is_allowed() -> None:
    s = _allowing(Keypair().pubkey(), NONCE)
    decision = s.decide(s.legacy(_advance(s), s.pay(1_000), budget=False))
    assert (decision.verdict, decision.reasons) == (Verdict.ALLOW, ())
    assert [(r.asset, r.amount) for r in decision.reservations] == [("SOL", 1_000), ("fees", 5_000)]


def test_a_listed_nonce_advanced_later_is_denied() -> None:
    s = _allowing(NONCE)
    assert _reasons(s, s.legacy(_advance(s), budget=True)) == [
        (Verdict.DENY, "durable_nonce", "AdvanceNonceAccount must be the first instruction", 2, None)
    ]


def test_an_unlisted_nonce_is_denied_naming_it() -> None:
    s = _allowing(NONCE)
    other = Keypair().pubkey()
    assert _reasons(s, s.legacy(_advance(s, other), budget=False)) == [
        (Verdict.DENY, "durable_nonce", "nonce account is not on the policy's list", 0, str(other))
    ]


def test_without_the_policys_consent_no_nonce_passes() -> None:
    s = Scenario()
    assert _reasons(s, s.legacy(_advance(s), budget=False)) == [
        (Verdict.DENY, "durable_nonce", "durable-nonce transactions are not allowed", 0, None)
    ]
