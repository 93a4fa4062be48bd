"""`policies.describe`: what a decoded transaction does, in the lines ``waiaas owner approve`` shows the owner."""

from __future__ import annotations

import typing

import pytest
from solders.hash import Hash
from solders.instruction import Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from policies.describe import amount, describe_effect, describe_transaction
from policies.model import (
    AccountClose,
    AuthorityChange,
    ComputeBudgetSetting,
    DecodedInstruction,
    DecodedTransaction,
    DelegateApproval,
    Effect,
    NonceAdvance,
    Opaque,
    Outflow,
    Restricted,
    UncheckedTokenTransfer,
)
from policies.programs import MEMO_V2_PROGRAM
from policies.transaction import decode_transaction

A, B, C, MINT = (Pubkey.new_unique() for _ in range(4))


def test_a_decoded_transfer_names_amount_source_destination_and_signer() -> None:
    ixs = [
        transfer(TransferParams(from_pubkey=A, to_pubkey=B, lamports=1_500_000_000)),
        Instruction(MEMO_V2_PROGRAM, b"invoice 7", []),
    ]
    raw = bytes(Transaction.new_unsigned(Message.new_with_blockhash(ixs, A, Hash.new_unique())))
    lines = describe_transaction(decode_transaction(raw))
    assert lines[0] == f"transaction (legacy), fee payer {A}"
    assert lines[1] == f"signers: {A}"
    assert lines[2].startswith("#0 system.transfer (program 11111111111111111111111111111111)")
    assert lines[3] == f"  moves 1500000000 lamports (1.5 SOL) from {A} to {B} (transfer, signed by {A})"
    assert lines[4].startswith("#1 memo.")
    assert lines[5] == "  no effect on any account's value or control"
    assert len(lines) == 6


# One example of every effect type, with a phrase its line must hold.
EXAMPLES: list[tuple[Effect, str]] = [
    (Outflow(str(MINT), 42, A, B, C, "transfer_checked"), f"moves 42 raw units of mint {MINT} from {B} to {C}"),
    (UncheckedTokenTransfer(7, A, B, C), f"moves 7 raw units of an unnamed mint (unchecked Transfer) from {B} to {C}"),
    (AuthorityChange(A, B, C, "account owner"), f"gives account owner of {B} to {C} (from {A})"),
    (AuthorityChange(A, B, None, "mint authority"), f"gives mint authority of {B} to nobody"),
    (DelegateApproval(A, B, C, 9, str(MINT)), f"lets {C} spend up to 9 raw units of mint {MINT} from {B}"),
    (DelegateApproval(A, B, C, 9, None), f"lets {C} spend up to 9 raw units from {B}"),
    (AccountClose(A, B, C), f"closes {B}, its lamports to {C} (signed by {A})"),
    (NonceAdvance(A, B), f"advances the durable nonce {B} (signed by {A})"),
    (ComputeBudgetSetting("unit_price", 5000), "unit_price to 5000 micro-lamports per compute unit"),
    (ComputeBudgetSetting("unit_limit", 200_000), "unit_limit to 200000"),
    (Restricted(A, "mint_to"), f"mint_to (signed by {A}): no policy can allow it"),
    (Restricted(None, "freeze_account"), "freeze_account: no policy can allow it"),
    (Opaque("token-2022 extension"), "not understood (token-2022 extension): no policy can allow it"),
]


@pytest.mark.parametrize(("effect", "phrase"), EXAMPLES)
def test_every_effect_type_has_its_line(effect: Effect, phrase: str) -> None:
    assert phrase in describe_effect(effect)


def test_the_examples_cover_every_effect_type() -> None:
    assert {type(effect) for effect, _ in EXAMPLES} == set(typing.get_args(Effect))


def test_an_unknown_effect_is_an_error_not_a_silent_line() -> None:
    with pytest.raises(TypeError, match="unknown effect"):
        describe_effect(object())  # type: ignore[arg-type]


def test_carried_instructions_are_indented_under_their_carrier() -> None:
    inner = DecodedInstruction(0, Pubkey.default(), "system", "transfer", (), {},
                               (Outflow("SOL", 1, B, B, C, "transfer"),))  # fmt: skip
    carrier = DecodedInstruction(0, MINT, "squads", "vault_transaction_create", (), {}, (), inner=(inner,))
    tx = DecodedTransaction("legacy", b"", A, (A,), (A,), str(Hash.default()), (carrier,), lookup_tables=(C,))
    lines = describe_transaction(tx)
    assert lines[2] == f"lookup tables: {C}"
    assert lines[3] == f"#0 squads.vault_transaction_create (program {MINT})"
    assert lines[4] == "  carries 1 instruction(s):"
    assert lines[5].startswith("    #0 system.transfer")
    assert lines[6] == f"      moves 1 lamports (0.000000001 SOL) from {B} to {C} (transfer, signed by {B})"


def test_amounts() -> None:
    assert amount("SOL", 0) == "0 lamports (0 SOL)"
    assert amount("SOL", 10**9 * 3) == "3000000000 lamports (3 SOL)"
    assert amount(str(MINT), 5) == f"5 raw units of mint {MINT}"
