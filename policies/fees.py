"""Transaction fees as the runtime charges them: base fee per signature plus the prioritization fee.

Constants follow agave's fee and compute-budget crates: 5000 lamports per signature; the priority fee is
ceil(compute_unit_price [micro-lamports] * compute_unit_limit / 1_000_000); without SetComputeUnitLimit the limit
is 200_000 per non-compute-budget instruction plus 3_000 per compute-budget instruction (the runtime reserves that
much for each builtin instruction, the compute-budget ones included), capped at 1_400_000. Using the 200_000 default
for every other instruction over-estimates (other builtins are charged 3_000 too), which only makes the fee cap
stricter; leaving out the compute-budget instructions' 3_000 under-estimated a transaction made of them alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.errors import DecodeError
from policies.fastinit import fast_init
from policies.model import ComputeBudgetSetting, DecodedTransaction

LAMPORTS_PER_SIGNATURE = 5_000
DEFAULT_INSTRUCTION_COMPUTE_UNIT_LIMIT = 200_000
BUILTIN_INSTRUCTION_COMPUTE_UNIT_LIMIT = 3_000
MAX_COMPUTE_UNIT_LIMIT = 1_400_000
MICRO_LAMPORTS_PER_LAMPORT = 1_000_000


@fast_init
@dataclass(frozen=True, slots=True)
class FeeSummary:
    unit_price: int
    """Micro-lamports per compute unit (0 when not set)."""
    requested_unit_limit: int | None
    effective_unit_limit: int
    total_lamports: int


def summarize_fees(tx: DecodedTransaction) -> FeeSummary:
    """Compute the fee ``tx`` will be charged. A compute-budget setting given twice is a `DecodeError`
    (the runtime rejects such a transaction, and two values leave its meaning ambiguous)."""
    settings: dict[str, int] = {}
    other_instructions = budget_instructions = 0
    for ix in tx.instructions:
        is_budget = False
        for effect in ix.effects:
            if isinstance(effect, ComputeBudgetSetting):
                is_budget = True
                if effect.field in settings:
                    raise DecodeError(f"compute-budget {effect.field} is set twice", instruction_index=ix.index)
                settings[effect.field] = effect.value
        if is_budget:
            budget_instructions += 1
        else:
            other_instructions += 1
    price = settings.get("unit_price", 0)
    requested = settings.get("unit_limit")
    if requested is None:
        default = (DEFAULT_INSTRUCTION_COMPUTE_UNIT_LIMIT * other_instructions
                   + BUILTIN_INSTRUCTION_COMPUTE_UNIT_LIMIT * budget_instructions)  # fmt: skip
        limit = min(default, MAX_COMPUTE_UNIT_LIMIT)
    else:
        limit = min(requested, MAX_COMPUTE_UNIT_LIMIT)
    priority = -(-price * limit // MICRO_LAMPORTS_PER_LAMPORT)
    total = LAMPORTS_PER_SIGNATURE * len(tx.required_signers) + priority
    return FeeSummary(price, requested, limit, total)
