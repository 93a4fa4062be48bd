"""A plain token Transfer names no mint, so no limit can apply to it (docs/policies.md, Evaluation rule 3): denied
when a wallet key authorises it. One that another signer of the transaction authorises moves that signer's tokens,
not the wallet's, and is not the wallet's to refuse (as for a co-signer's own SOL transfer)."""

from __future__ import annotations

import spl.token.instructions as tok
import spl.token.models as spl
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from policies.decision import Verdict
from policies.programs import TOKEN_PROGRAM
from tests.support.scenario import Scenario


def _plain_transfer(authority: Pubkey) -> Instruction:
    params = spl.TransferParams(program_id=TOKEN_PROGRAM, source=Keypair().pubkey(), dest=Keypair().pubkey(),
                                owner=authority, amount=1)  # fmt: skip
    return tok.transfer(params)


def test_a_plain_transfer_the_wallet_authorises_is_denied() -> None:
    s = Scenario()
    decision = s.decide(s.legacy(_plain_transfer(s.wallet)))
    assert [(r.verdict, r.rule, r.instruction) for r in decision.reasons] == [
        (Verdict.DENY, "token.transfer_checked_required", 2)
    ]


def test_a_co_signers_plain_transfer_is_not_the_wallets() -> None:
    s = Scenario()
    decision = s.decide(s.legacy(_plain_transfer(Keypair().pubkey()), s.pay(1_000)))
    assert (decision.verdict, decision.reasons) == (Verdict.ALLOW, ())
