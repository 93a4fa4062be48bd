"""The fee estimate's known answers (docs/policies.md, `fees`; `policies.fees`): 5 000 lamports per signature plus
ceil(price x limit / 10^6); without SetComputeUnitLimit the limit is 200 000 per other instruction plus 3 000 per
compute-budget instruction, and every limit is capped at 1 400 000. `test_fees_on_chain` shows the estimate is never
below the runtime's charge; these pin it exactly, so an estimate that drifts upwards shows too."""

from __future__ import annotations

import pytest
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair

from policies.errors import DecodeError
from policies.fees import FeeSummary, summarize_fees
from policies.programs import MEMO_V2_PROGRAM
from policies.transaction import decode_transaction
from tests.support.scenario import Scenario

ONE_LAMPORT_PER_UNIT = 1_000_000


def _fees(*instructions: Instruction, s: Scenario | None = None) -> FeeSummary:
    s = s or Scenario()
    return summarize_fees(decode_transaction(s.legacy(*instructions, budget=False)))


@pytest.mark.parametrize(
    ("price", "limit", "priority"),
    [
        (1_000, 50_000, 50),
        (1, 1, 1),  # a millionth of a lamport is charged as one lamport
        (1_000_000, 1, 1),
        (1_000_001, 1, 2),
        (3, 333_333, 1),  # 999 999 micro-lamports
        (3, 333_334, 2),  # 1 000 002
        (0, 1_400_000, 0),
    ],
)
def test_the_priority_fee_is_the_price_times_the_limit_rounded_up(price: int, limit: int, priority: int) -> None:
    s = Scenario()
    fees = _fees(set_compute_unit_price(price), set_compute_unit_limit(limit), s.pay(1), s=s)
    assert fees == FeeSummary(price, limit, limit, 5_000 + priority)


def test_without_a_price_only_the_signatures_are_paid() -> None:
    s = Scenario()
    assert _fees(s.pay(1), s=s) == FeeSummary(0, None, 200_000, 5_000)
    seven = [s.pay(i + 1) for i in range(7)]
    assert _fees(*seven, s=s) == FeeSummary(0, None, 1_400_000, 5_000)


def test_without_a_limit_each_instruction_is_estimated_by_its_kind() -> None:
    s = Scenario()
    assert _fees(set_compute_unit_price(ONE_LAMPORT_PER_UNIT), s=s).total_lamports == 5_000 + 3_000
    two_transfers = _fees(set_compute_unit_price(ONE_LAMPORT_PER_UNIT), s.pay(1), s.pay(2), s=s)
    assert two_transfers == FeeSummary(ONE_LAMPORT_PER_UNIT, None, 403_000, 5_000 + 403_000)


def test_the_limit_is_capped_at_1_400_000_units() -> None:
    s = Scenario()
    seven = [s.pay(i + 1) for i in range(7)]  # 7 x 200 000 + 3 000 = 1 403 000 units
    estimated = _fees(set_compute_unit_price(ONE_LAMPORT_PER_UNIT), *seven, s=s)
    assert estimated == FeeSummary(ONE_LAMPORT_PER_UNIT, None, 1_400_000, 5_000 + 1_400_000)
    six = _fees(set_compute_unit_price(ONE_LAMPORT_PER_UNIT), *seven[:6], s=s)  # 1 203 000: under the cap
    assert six.effective_unit_limit == 1_203_000
    asked = _fees(set_compute_unit_price(1), set_compute_unit_limit(1_400_001), s.pay(1), s=s)
    assert asked == FeeSummary(1, 1_400_001, 1_400_000, 5_000 + 2)  # 1.4 micro-lamports: 2 lamports rounded up
    exact = _fees(set_compute_unit_price(ONE_LAMPORT_PER_UNIT), set_compute_unit_limit(1_400_000), s.pay(1), s=s)
    assert exact == FeeSummary(ONE_LAMPORT_PER_UNIT, 1_400_000, 1_400_000, 5_000 + 1_400_000)


def test_each_required_signature_costs_5000() -> None:
    s = Scenario()
    co_signer = AccountMeta(Keypair().pubkey(), True, False)
    memo = Instruction(MEMO_V2_PROGRAM, b"co-signed", [AccountMeta(s.wallet, True, False), co_signer])
    assert _fees(s.pay(1), memo, s=s).total_lamports == 2 * 5_000


@pytest.mark.parametrize("twice", ["price", "limit"])
def test_a_setting_given_twice_does_not_decode(twice: str) -> None:
    s = Scenario()
    make = set_compute_unit_price if twice == "price" else set_compute_unit_limit
    with pytest.raises(DecodeError, match="is set twice") as raised:
        _fees(make(1), s.pay(1), make(2), s=s)
    assert raised.value.instruction_index == 2
