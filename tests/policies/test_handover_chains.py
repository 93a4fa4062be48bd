"""Hand-overs followed through the links (docs/policies.md, Hand-overs): from an address the wallet pays, every party
reachable through the transaction's links, transitively, is judged (keys of the agent's own may pass the payment
on), each denied party named once, and a cycle of links ends; the key whose signature moves a paid account out is
one of its links. All under ``destinations.allow: "any"``, where only the denylist refuses."""

from __future__ import annotations

import spl.token.instructions as tok
import spl.token.models as spl
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import (
    AdvanceNonceAccountParams,
    AssignParams,
    TransferParams,
    advance_nonce_account,
    assign,
    transfer,
)

from policies.decision import Decision, Verdict
from policies.programs import TOKEN_PROGRAM
from tests.support.policies import BLOCKED, EXAMPLE_MINT
from tests.support.scenario import Scenario


def _any() -> Scenario:
    s = Scenario()
    s.doc["rules"]["destinations"]["allow"] = "any"
    return s


def _move(source: Pubkey, to: Pubkey) -> Instruction:
    return transfer(TransferParams(from_pubkey=source, to_pubkey=to, lamports=500))


def _denials(decision: Decision) -> list[tuple[Verdict, str, str | int | None]]:
    return [(r.verdict, r.rule, r.seen) for r in decision.reasons]


def test_a_payment_passed_on_twice_to_a_denied_key_is_denied() -> None:
    s = _any()
    a, b = Keypair().pubkey(), Keypair().pubkey()
    decision = s.decide(s.legacy(s.pay(1_000, a), _move(a, b), _move(b, BLOCKED)))
    assert _denials(decision) == [(Verdict.DENY, "destinations.deny", str(BLOCKED))]
    ends_elsewhere = s.decide(s.legacy(s.pay(1_000, a), _move(a, b), _move(b, Keypair().pubkey())))
    assert ends_elsewhere.verdict is Verdict.ALLOW


def test_a_cycle_of_links_ends_and_names_the_denied_key_once() -> None:
    s = _any()
    a, b = Keypair().pubkey(), Keypair().pubkey()
    moves = [_move(a, b), _move(b, a), _move(b, BLOCKED), _move(a, BLOCKED)]
    decision = s.decide(s.legacy(s.pay(1_000, a), *moves))
    assert _denials(decision) == [(Verdict.DENY, "destinations.deny", str(BLOCKED))]


def test_the_key_that_moves_a_paid_account_out_is_judged() -> None:
    s = _any()
    account = Keypair().pubkey()  # a token account BLOCKED controls (not its associated one)
    params = spl.TransferCheckedParams(program_id=TOKEN_PROGRAM, source=account, mint=EXAMPLE_MINT,
                                       dest=Keypair().pubkey(), owner=BLOCKED, amount=1, decimals=6)  # fmt: skip
    decision = s.decide(s.legacy(s.pay(1_000, account), tok.transfer_checked(params)))
    assert _denials(decision) == [(Verdict.DENY, "destinations.deny", str(BLOCKED))]


def test_a_paid_account_assigned_to_a_denied_program_is_denied() -> None:
    """What an authority change names is a link: the owner program Assign gives the paid account."""
    s = _any()
    account = Keypair().pubkey()  # a key of the agent's own, which signs the Assign
    decision = s.decide(s.legacy(s.pay(1_000, account), assign(AssignParams(pubkey=account, owner=BLOCKED))))
    assert _denials(decision) == [(Verdict.DENY, "destinations.deny", str(BLOCKED))]


def test_the_key_that_approves_a_delegate_on_a_paid_account_is_judged() -> None:
    s = _any()
    account = Keypair().pubkey()
    params = spl.ApproveParams(program_id=TOKEN_PROGRAM, source=account, delegate=Keypair().pubkey(), owner=BLOCKED,
                               amount=1)  # fmt: skip
    decision = s.decide(s.legacy(s.pay(1_000, account), tok.approve(params)))
    assert _denials(decision) == [(Verdict.DENY, "destinations.deny", str(BLOCKED))]


def test_the_authority_of_a_paid_nonce_account_is_judged() -> None:
    s = _any()
    nonce = Keypair().pubkey()
    s.doc["rules"]["durable_nonce"] = {"allowed": True, "nonce_accounts": [str(nonce)]}
    advance = advance_nonce_account(AdvanceNonceAccountParams(nonce_pubkey=nonce, authorized_pubkey=BLOCKED))
    decision = s.decide(s.legacy(advance, s.pay(1_000, nonce), budget=False))
    assert _denials(decision) == [(Verdict.DENY, "destinations.deny", str(BLOCKED))]
