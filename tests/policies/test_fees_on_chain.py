"""The fee the engine computes is never below what the runtime charges (LiteSVM, measured per transaction).

Found in review: a transaction of compute-budget instructions alone was estimated without the 3 000 compute units
the runtime reserves for each of them (engine 5 000 lamports, chain 8 000 at a price of 10^6 micro-lamports)."""

from __future__ import annotations

import pytest
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.instruction import Instruction
from solders.system_program import TransferParams, transfer

from policies.fees import summarize_fees
from policies.transaction import decode_transaction
from tests.support.chain import airdrop, balance, execute, fresh_chain, funded_keypair
from tests.support.policies import MERCHANT
from tests.support.scenario import Scenario

PRICE = 1_000_000  # micro-lamports per compute unit: one lamport per unit, so units show in the fee


def _cases(s: Scenario) -> dict[str, list[Instruction]]:
    pay = transfer(TransferParams(from_pubkey=s.wallet, to_pubkey=MERCHANT, lamports=1_000))
    return {
        "price only": [set_compute_unit_price(PRICE)],
        "price and a transfer": [set_compute_unit_price(PRICE), pay],
        "price, limit and a transfer": [set_compute_unit_price(PRICE), set_compute_unit_limit(10_000), pay],
        "a transfer, no price": [pay],
    }


@pytest.mark.parametrize("case", ["price only", "price and a transfer", "price, limit and a transfer",
                                  "a transfer, no price"])  # fmt: skip
def test_the_estimate_is_never_below_the_charge(case: str) -> None:
    svm = fresh_chain()
    airdrop(svm, MERCHANT, 10**9)  # an existing account: a small payment to it needs no rent
    s = Scenario(agent=funded_keypair(svm), blockhash=svm.latest_blockhash())
    raw = s.signed(s.legacy(*_cases(s)[case], budget=False))
    estimate = summarize_fees(decode_transaction(raw)).total_lamports
    before = balance(svm, s.wallet)
    execute(svm, raw)
    charged = before - balance(svm, s.wallet) - (1_000 if "transfer" in case else 0)
    assert charged <= estimate, (charged, estimate)
    if case == "price only":
        assert estimate == charged == 5_000 + 3_000  # exact where no other instruction is estimated generously
