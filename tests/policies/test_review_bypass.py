"""Bypasses found in review: transactions the engine allowed although they move value where the policy denies it.

Each case failed before its fix. Where the chain can show the effect (LiteSVM), the transaction is executed too.
"""

from __future__ import annotations

import pytest
import spl.token.instructions as tok
import spl.token.models as spl
from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey

from policies.decision import Decision, Verdict
from policies.programs import NATIVE_MINT, NATIVE_MINT_2022, TOKEN_2022_PROGRAM, TOKEN_PROGRAM, associated_token_address
from tests.policies.squads_wallet import decide, spend, squads_scenario
from tests.support.chain import (
    LAMPORTS_PER_SOL,
    airdrop,
    create_ata,
    execute,
    fresh_chain,
    install_native_mint,
    send,
    token_balance,
)
from tests.support.policies import BLOCKED, EXAMPLE_MINT
from tests.support.scenario import Scenario


def _deny_rules(decision: Decision) -> list[str]:
    return [r.rule for r in decision.reasons if r.verdict is Verdict.DENY]


def _allow_any(s: Scenario) -> Scenario:
    """The example policy with ``destinations.allow: "any"``: only its denylist keeps BLOCKED out."""
    s.doc["rules"]["destinations"]["allow"] = "any"
    s._policy = None
    return s


@pytest.mark.parametrize(("mint", "program"), [(NATIVE_MINT, TOKEN_PROGRAM), (NATIVE_MINT_2022, TOKEN_2022_PROGRAM)])
def test_sol_to_a_denied_owners_wrapped_sol_account_is_denied(mint: Pubkey, program: Pubkey) -> None:
    """Lamports sent to the denied owner's wrapped-SOL account are theirs after SyncNative. Before: ALLOW."""
    s = _allow_any(Scenario())
    wrapped = associated_token_address(BLOCKED, mint, program)
    decision = s.decide(s.legacy(s.pay(LAMPORTS_PER_SOL // 10, wrapped)))
    assert decision.verdict is Verdict.DENY, decision
    assert "destinations.deny" in _deny_rules(decision)
    assert decision.reservations == ()


@pytest.mark.litesvm
def test_sol_to_a_denied_owners_wrapped_sol_account_reaches_them_on_chain() -> None:
    """What the case above prevents: the transfer executes and SyncNative credits BLOCKED with wrapped SOL."""
    svm = fresh_chain()
    s = _allow_any(Scenario())
    airdrop(svm, s.wallet, 5 * LAMPORTS_PER_SOL)
    install_native_mint(svm)
    wrapped = create_ata(svm, s.agent, owner=BLOCKED, mint=NATIVE_MINT)
    s.blockhash = svm.latest_blockhash()
    raw = s.legacy(s.pay(LAMPORTS_PER_SOL // 10, wrapped))
    assert s.decide(raw).verdict is Verdict.DENY
    execute(svm, s.signed(raw))
    send(svm, s.agent, [tok.sync_native(spl.SyncNativeParams(program_id=TOKEN_PROGRAM, account=wrapped))])
    assert token_balance(svm, wrapped) == LAMPORTS_PER_SOL // 10


def test_token_spending_limit_to_a_denied_owners_other_token_account_is_denied() -> None:
    """spending_limit_use names the destination token account's owner, and the Squads program requires it: a
    denied owner is denied even when the tokens go to a token account of theirs that is not the associated one.
    Before: only the token account was judged, so ALLOW under ``allow: "any"``."""
    s = _allow_any(squads_scenario())
    ix = spend(s, 1_000, BLOCKED, mint=EXAMPLE_MINT)
    accounts = list(ix.accounts)
    assert accounts[8].pubkey == associated_token_address(BLOCKED, EXAMPLE_MINT, TOKEN_PROGRAM)
    accounts[8] = AccountMeta(Pubkey.new_unique(), False, True)  # another token account owned by BLOCKED
    decision = decide(s, s.legacy(Instruction(ix.program_id, ix.data, accounts)))
    assert decision.verdict is Verdict.DENY, decision
    assert "destinations.deny" in _deny_rules(decision)


def test_token_spending_limit_to_an_allowed_owner_is_still_allowed() -> None:
    """The owner check adds a denial only: the benign token spending limit still passes."""
    s = _allow_any(squads_scenario())
    assert decide(s, s.legacy(spend(s, 1_000, mint=EXAMPLE_MINT))).verdict is Verdict.ALLOW
