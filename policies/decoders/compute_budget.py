"""Decoder of the ComputeBudget program (borsh: a u8 tag, then a fixed-width little-endian value).

Each instruction yields one `ComputeBudgetSetting`; the evaluator applies fee caps to them. Data lengths are exact,
and the instructions take no accounts. The long-removed ``RequestUnitsDeprecated`` (tag 0) and unknown tags are
`DecodeError`s.
"""

from __future__ import annotations

from solders.pubkey import Pubkey

from policies.decoders._common import expect_accounts, expect_len, fail, instruction, u32, u64
from policies.model import AccountView, ComputeBudgetField, ComputeBudgetSetting, DecodedInstruction

PROGRAM = "compute_budget"

# tag -> (instruction name, effect field, data length)
_LAYOUT: dict[int, tuple[str, ComputeBudgetField, int]] = {
    1: ("request_heap_frame", "heap_frame", 5),
    2: ("set_compute_unit_limit", "unit_limit", 5),
    3: ("set_compute_unit_price", "unit_price", 9),
    4: ("set_loaded_accounts_data_size_limit", "loaded_accounts_data_size_limit", 5),
}


def decode_compute_budget(
    index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes
) -> DecodedInstruction:
    """Decode one ComputeBudget instruction into a `ComputeBudgetSetting`."""
    if not data:
        fail(index, "compute_budget: empty instruction data")
    layout = _LAYOUT.get(data[0])
    if layout is None:
        fail(index, f"compute_budget: unknown instruction tag {data[0]}")
    name, field, length = layout
    expect_len(index, name, data, length)
    expect_accounts(index, name, accounts, 0)
    value = u64(data, 1) if length == 9 else u32(data, 1)
    return instruction(
        index, program_id, PROGRAM, name, accounts, {field: value}, (ComputeBudgetSetting(field, value),)
    )
