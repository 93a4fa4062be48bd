"""Found by the differential outflow test: under ``destinations.allow: "any"``, SOL the wallet sends to a denied
owner's associated token account is denied for the mints the policy lists and for wrapped SOL (listed or not), but
allowed for any other mint: the address names no mint, so nothing in the transaction says whose account it is, and
the denied owner later closes the (empty) account and takes the lamports. Shown here end to end on LiteSVM.

The engine cannot tell such an address from any other program-derived address without reading the chain, so this
is the documented reach of a denylist (docs/policies.md, `destinations`: only an allowlist binds a hostile agent),
not a fix; the test keeps the docs' statement of what it covers true."""

from __future__ import annotations

import pytest
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from policies import programs
from policies.decision import Verdict
from tests.policies.outflow_actions import sol_transfer
from tests.support.chain import (
    LAMPORTS_PER_SOL,
    airdrop,
    balance,
    create_ata,
    create_mint,
    execute,
    fresh_chain,
    funded_keypair,
    install_native_mint,
    send,
)
from tests.support.scenario import Scenario

PAID = 10**7


@pytest.mark.parametrize("mint", ["listed", "wrapped_sol_unlisted", "unlisted"])
def test_sol_to_a_denied_owners_associated_account(mint: str) -> None:
    svm = fresh_chain()
    install_native_mint(svm)
    s = Scenario(agent=funded_keypair(svm), blockhash=svm.latest_blockhash())
    denied = Keypair()
    airdrop(svm, denied.pubkey(), LAMPORTS_PER_SOL)
    issuer = funded_keypair(svm)
    token_mint: Pubkey = {
        "listed": lambda: create_mint(svm, issuer, authority=issuer.pubkey()),
        "wrapped_sol_unlisted": lambda: programs.NATIVE_MINT,
        "unlisted": lambda: create_mint(svm, issuer, authority=issuer.pubkey()),
    }[mint]()
    account = create_ata(svm, issuer, owner=denied.pubkey(), mint=token_mint)
    rules = s.doc["rules"]
    rules["destinations"] = {"allow": "any", "deny": [str(denied.pubkey())]}
    if mint == "listed":
        rules["mints"].append(str(token_mint))
    raw = s.legacy(sol_transfer(s.wallet, account, PAID))
    decision = s.decide(raw)
    if mint != "unlisted":
        assert decision.verdict is Verdict.DENY
        assert [r.rule for r in decision.reasons] == ["destinations.deny"]
        return
    assert decision.verdict is Verdict.ALLOW  # docs/policies.md: under "any" a denylist does not reach this account
    execute(svm, s.signed(raw))
    before = balance(svm, denied.pubkey())
    close = Instruction(programs.TOKEN_PROGRAM, bytes([9]), [
        AccountMeta(account, False, True), AccountMeta(denied.pubkey(), False, True),
        AccountMeta(denied.pubkey(), True, False),
    ])  # fmt: skip
    send(svm, denied, [close])
    assert balance(svm, denied.pubkey()) - before >= PAID  # the denied owner has what the wallet sent
