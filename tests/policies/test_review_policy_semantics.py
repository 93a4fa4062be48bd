"""Policy semantics review: transactions the engine allowed although they send value where the policy does not.

Each case failed before its fix. Where the chain can show the effect (LiteSVM), the transaction is executed too.
"""

from __future__ import annotations

import pytest
import spl.token.instructions as tok
import spl.token.models as spl
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from spl.token.instructions import create_associated_token_account

from policies.decision import Decision, Verdict
from policies.programs import (
    NATIVE_MINT,
    NATIVE_MINT_2022,
    SYSTEM_PROGRAM,
    TOKEN_2022_PROGRAM,
    TOKEN_PROGRAM,
    associated_token_address,
)
from tests.support.chain import (
    LAMPORTS_PER_SOL,
    ChainError,
    airdrop,
    create_mint,
    execute,
    fresh_chain,
    funded_keypair,
    install_native_mint,
    send,
)
from tests.support.policies import MERCHANT
from tests.support.scenario import FEE, Scenario

PAYMENT = LAMPORTS_PER_SOL // 10


def _deny_rules(decision: Decision) -> list[str]:
    return [r.rule for r in decision.reasons if r.verdict is Verdict.DENY]


def _with_mint(s: Scenario, mint: Pubkey) -> Scenario:
    """The example policy, with ``mint`` as its one allowed (and limited) mint."""
    s.doc["rules"]["mints"] = [str(mint)]
    s.doc["rules"]["limits"][1]["asset"] = str(mint)
    s._policy = None
    return s


# -- SOL sent to token-account addresses that no account can ever occupy -----------------------------------------
#
# An associated token address names a (owner, mint, token program) triple, but only the program that owns the mint
# can ever create the account: SPL Token's wrapped-SOL mint under Token-2022, or an SPL Token mint under Token-2022,
# yields an address where lamports land in a system account that nobody can sign for, and stay there.


def test_sol_to_the_wallets_wrapped_sol_address_under_the_wrong_token_program_is_denied() -> None:
    """ATA(wallet, SPL Token's native mint, Token-2022) is no wallet account. Before: ALLOW (judged the wallet's own
    wrapped-SOL account, with no destination rule)."""
    s = Scenario()
    nowhere = associated_token_address(s.wallet, NATIVE_MINT, TOKEN_2022_PROGRAM)
    decision = s.decide(s.legacy(s.pay(PAYMENT, nowhere)))
    assert decision.verdict is Verdict.DENY, decision
    assert "destinations.allow" in _deny_rules(decision)


@pytest.mark.parametrize(("mint", "program"), [(NATIVE_MINT, TOKEN_PROGRAM), (NATIVE_MINT_2022, TOKEN_2022_PROGRAM)])
def test_sol_to_the_wallets_own_wrapped_sol_accounts_is_allowed(mint: Pubkey, program: Pubkey) -> None:
    """Both real wrapped-SOL accounts of the wallet (each native mint under its own program) are the wallet's.
    Before: Token-2022's (its native mint under Token-2022) was denied."""
    s = Scenario()
    decision = s.decide(s.legacy(s.pay(PAYMENT, associated_token_address(s.wallet, mint, program))))
    assert decision.verdict is Verdict.ALLOW, decision
    assert [(r.asset, r.amount) for r in decision.reservations] == [("SOL", PAYMENT), ("fees", FEE)]


@pytest.mark.parametrize("program", [TOKEN_PROGRAM, TOKEN_2022_PROGRAM])
def test_sol_to_an_allowed_owners_token_account_is_denied(program: Pubkey) -> None:
    """The allowlist covers an owner's associated token accounts for token transfers only (docs/policies.md); for
    SOL they are an address that is not on the list, and under the wrong token program one that no account can
    ever occupy. Before: ALLOW."""
    s = Scenario()
    mint = Pubkey.from_string(s.doc["rules"]["mints"][0])
    decision = s.decide(s.legacy(s.pay(PAYMENT, associated_token_address(MERCHANT, mint, program))))
    assert decision.verdict is Verdict.DENY, decision
    assert "destinations.allow" in _deny_rules(decision)


def test_associated_account_for_an_allowed_owners_token_account_is_denied() -> None:
    """ATA create whose owner is an allowed owner's token account (a nested account, or under the wrong program one
    whose owner can never sign): its rent is judged by that owner, which is not on the list. Before: ALLOW."""
    s = Scenario()
    mint = Pubkey.from_string(s.doc["rules"]["mints"][0])
    nested_owner = associated_token_address(MERCHANT, mint, TOKEN_2022_PROGRAM)
    decision = s.decide(s.legacy(create_associated_token_account(s.wallet, nested_owner, mint, TOKEN_PROGRAM)))
    assert decision.verdict is Verdict.DENY, decision
    assert "destinations.allow" in _deny_rules(decision)


def test_token_transfer_to_an_allowed_owners_associated_account_is_still_allowed() -> None:
    """What the allowlist's token-account coverage is for: TransferChecked to the allowed owner's associated account."""
    s = Scenario()
    mint = Pubkey.from_string(s.doc["rules"]["mints"][0])
    source, dest = (associated_token_address(o, mint, TOKEN_PROGRAM) for o in (s.wallet, MERCHANT))
    params = spl.TransferCheckedParams(
        program_id=TOKEN_PROGRAM, source=source, mint=mint, dest=dest, owner=s.wallet, amount=5, decimals=6
    )
    ix = tok.transfer_checked(params)
    assert s.decide(s.legacy(ix)).verdict is Verdict.ALLOW


def _lost(svm: object, address: Pubkey, lamports: int) -> None:
    account = svm.get_account(address)  # type: ignore[attr-defined]
    assert account is not None
    assert account.lamports == lamports
    assert account.owner == SYSTEM_PROGRAM  # a system account at an off-curve address: nobody can sign for it


@pytest.mark.litesvm
def test_sol_to_an_uncreatable_associated_address_is_lost_on_chain() -> None:
    """What the cases above prevent: the payments execute, and neither address can ever become a token account, so
    the lamports cannot be moved again (creating the associated account fails)."""
    svm = fresh_chain()
    s = Scenario()
    airdrop(svm, s.wallet, 5 * LAMPORTS_PER_SOL)
    install_native_mint(svm)
    payer = funded_keypair(svm)
    mint = create_mint(svm, payer, authority=Keypair().pubkey())  # an SPL Token mint
    s = _with_mint(s, mint)
    own_nowhere = associated_token_address(s.wallet, NATIVE_MINT, TOKEN_2022_PROGRAM)
    merchant_nowhere = associated_token_address(MERCHANT, mint, TOKEN_2022_PROGRAM)
    s.blockhash = svm.latest_blockhash()
    raw = s.legacy(s.pay(PAYMENT, own_nowhere), s.pay(PAYMENT, merchant_nowhere))
    decision = s.decide(raw)
    assert decision.verdict is Verdict.DENY, decision
    assert _deny_rules(decision) == ["destinations.allow", "destinations.allow"]
    execute(svm, s.signed(raw))
    _lost(svm, own_nowhere, PAYMENT)
    _lost(svm, merchant_nowhere, PAYMENT)
    for owner, wrong_mint in ((s.wallet, NATIVE_MINT), (MERCHANT, mint)):
        create = create_associated_token_account(payer.pubkey(), owner, wrong_mint, TOKEN_2022_PROGRAM)
        with pytest.raises(ChainError, match="IncorrectProgramId"):
            send(svm, payer, [create])
