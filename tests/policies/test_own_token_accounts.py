"""The wallet's own accounts are always allowed destinations (docs/policies.md, `destinations`): tokens moved into the
wallet's own associated account for their mint, under the token program that owns the mint, stay the wallet's,
whatever the allowlist says; the same address under the other token program is no account of the wallet's."""

from __future__ import annotations

import pytest
import spl.token.instructions as tok
import spl.token.models as spl
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from policies.decision import Verdict
from policies.programs import TOKEN_2022_PROGRAM, TOKEN_PROGRAM, associated_token_address
from tests.support.policies import EXAMPLE_MINT
from tests.support.scenario import Scenario


def _transfer_to(s: Scenario, dest: Pubkey, program: Pubkey) -> bytes:
    source = Keypair().pubkey()  # a token account the wallet holds that is not its associated one
    params = spl.TransferCheckedParams(program_id=program, source=source, mint=EXAMPLE_MINT, dest=dest, owner=s.wallet,
                                       amount=5, decimals=6)  # fmt: skip
    return s.legacy(tok.transfer_checked(params))


@pytest.mark.parametrize("program", [TOKEN_PROGRAM, TOKEN_2022_PROGRAM])
def test_tokens_into_the_wallets_own_associated_account_are_allowed(program: Pubkey) -> None:
    s = Scenario()
    s.doc["rules"]["destinations"]["allow"] = []  # nobody else may receive anything
    own = associated_token_address(s.wallet, EXAMPLE_MINT, program)
    decision = s.decide(_transfer_to(s, own, program))
    assert (decision.verdict, decision.reasons) == (Verdict.ALLOW, ())
    assert (str(EXAMPLE_MINT), 5) in [(r.asset, r.amount) for r in decision.reservations]


def test_the_wallets_associated_address_under_the_other_program_is_not_its_account() -> None:
    s = Scenario()
    s.doc["rules"]["destinations"]["allow"] = []
    elsewhere = associated_token_address(s.wallet, EXAMPLE_MINT, TOKEN_2022_PROGRAM)
    decision = s.decide(_transfer_to(s, elsewhere, TOKEN_PROGRAM))
    assert [(r.verdict, r.rule, r.seen) for r in decision.reasons] == [
        (Verdict.DENY, "destinations.allow", str(elsewhere))
    ]
