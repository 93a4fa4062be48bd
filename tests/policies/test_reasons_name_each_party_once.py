"""Each refused party is named once (DESIGN.md section 5: every reason is kept, with what was seen): the owner of a new
associated account the wallet pays rent for is judged as the destination and not again as the account's
controller, and a Squads SOL spending limit to a denied key is denied for that key once."""

from __future__ import annotations

import spl.token.instructions as tok
from solders.keypair import Keypair

from policies.decision import Verdict
from tests.policies.squads_wallet import decide, spend, squads_scenario
from tests.support.policies import BLOCKED, EXAMPLE_MINT
from tests.support.scenario import Scenario


def test_a_new_associated_account_for_a_stranger_is_refused_once_naming_the_owner() -> None:
    s = Scenario()
    stranger = Keypair().pubkey()
    decision = s.decide(s.legacy(tok.create_idempotent_associated_token_account(s.wallet, stranger, EXAMPLE_MINT)))
    assert [(r.verdict, r.rule, r.seen) for r in decision.reasons] == [
        (Verdict.DENY, "destinations.allow", str(stranger))
    ]


def test_a_new_associated_account_for_a_denied_key_is_refused_once_naming_the_key() -> None:
    s = Scenario()
    s.doc["rules"]["destinations"]["allow"] = "any"
    decision = s.decide(s.legacy(tok.create_idempotent_associated_token_account(s.wallet, BLOCKED, EXAMPLE_MINT)))
    assert [(r.verdict, r.rule, r.seen) for r in decision.reasons] == [
        (Verdict.DENY, "destinations.deny", str(BLOCKED))
    ]


def test_a_squads_sol_spending_limit_to_a_denied_key_is_refused_once() -> None:
    s = squads_scenario()
    decision = decide(s, s.legacy(spend(s, 1_000, BLOCKED)))
    assert [(r.verdict, r.rule, r.seen) for r in decision.reasons] == [
        (Verdict.DENY, "destinations.deny", str(BLOCKED))
    ]
