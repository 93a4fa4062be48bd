"""A hand-over by a close (docs/policies.md, Hand-overs): where an outflow or a close out of a paid account sends value
is one of that account's links, so an account the wallet pays and the same transaction closes to a denied key is
refused as a payment to that key, even under ``destinations.allow: "any"``."""

from __future__ import annotations

import spl.token.instructions as tok
import spl.token.models as spl
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from policies.decision import Verdict
from policies.programs import TOKEN_PROGRAM
from tests.support.policies import BLOCKED
from tests.support.scenario import Scenario


def _pay_then_close_to(to: Pubkey) -> tuple[Scenario, bytes]:
    s = Scenario()
    s.doc["rules"]["destinations"]["allow"] = "any"
    account = Keypair().pubkey()  # a token account a key of the agent's own holds (made in another transaction)
    own = Keypair().pubkey()
    close = tok.close_account(spl.CloseAccountParams(program_id=TOKEN_PROGRAM, account=account, dest=to, owner=own))
    return s, s.legacy(s.pay(1_000, account), close)


def test_an_account_paid_and_closed_to_a_denied_key_is_denied_naming_the_key() -> None:
    s, raw = _pay_then_close_to(BLOCKED)
    decision = s.decide(raw)
    assert [(r.verdict, r.rule, r.instruction, r.seen) for r in decision.reasons] == [
        (Verdict.DENY, "destinations.deny", 2, str(BLOCKED))
    ]


def test_an_account_paid_and_closed_to_anyone_else_is_allowed_under_any() -> None:
    s, raw = _pay_then_close_to(Keypair().pubkey())
    assert s.decide(raw).verdict is Verdict.ALLOW
