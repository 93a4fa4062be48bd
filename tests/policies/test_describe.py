"""`policies.describe`: what a decoded transaction does, in the lines ``waiaas owner approve`` shows the owner."""

from __future__ import annotations

import typing

import pytest
import spl.token.instructions as ti
from hypothesis import given
from hypothesis import strategies as st
from solders.hash import Hash
from solders.instruction import Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction
from spl.token import models as m

from policies.describe import Recipients, amount, describe_effect, describe_transaction, whole_tokens
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
from policies.programs import MEMO_V2_PROGRAM, TOKEN_2022_PROGRAM, TOKEN_PROGRAM, associated_token_address
from policies.transaction import decode_transaction
from tests.policies.squads_wallet import spend, squads_scenario

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


def test_a_known_mint_amount_is_also_shown_in_whole_tokens() -> None:
    assert amount(str(MINT), 1_500_000, 6) == f"1500000 raw units of mint {MINT} (= 1.5 in whole tokens, 6 decimals)"
    assert amount(str(MINT), 7, 0) == f"7 raw units of mint {MINT} (= 7 in whole tokens, 0 decimals)"
    assert amount("SOL", 5, 9) == "5 lamports (0.000000005 SOL)"  # SOL is shown in SOL already


@pytest.mark.parametrize(
    ("raw", "decimals", "shown"),
    [
        (0, 6, "0"),
        (1_500_000, 6, "1.5"),
        (1, 9, "0.000000001"),
        (120, 2, "1.2"),
        (100, 2, "1"),
        (7, 0, "7"),
        (2**64 - 1, 0, "18446744073709551615"),
        (2**64 - 1, 18, "18.446744073709551615"),  # a float would show 18.446744073709553
        (2**64 - 1, 30, "0.000000000018446744073709551615"),
        (1, 255, "0." + "0" * 254 + "1"),  # u8 decimals: any is stated, and shown exactly
    ],
)
def test_whole_tokens_are_exact(raw: int, decimals: int, shown: str) -> None:
    assert whole_tokens(raw, decimals) == shown


@given(st.integers(0, 2**64 - 1), st.integers(0, 255))
def test_whole_tokens_times_ten_to_the_decimals_is_the_raw_amount(raw: int, decimals: int) -> None:
    whole, _, fraction = whole_tokens(raw, decimals).partition(".")
    assert not fraction.endswith("0")
    assert int(whole + fraction.ljust(decimals, "0")) == raw


def _decoded_lines(*instructions: Instruction) -> list[str]:
    raw = bytes(Transaction.new_unsigned(Message.new_with_blockhash(list(instructions), A, Hash.new_unique())))
    return describe_transaction(decode_transaction(raw))


@pytest.mark.parametrize("program", [TOKEN_PROGRAM, TOKEN_2022_PROGRAM], ids=["spl_token", "token_2022"])
def test_checked_token_instructions_show_their_amounts_in_whole_tokens(program: Pubkey) -> None:
    """The decimals each checked instruction states (the chain refuses it if they are not the mint's)."""
    lines = _decoded_lines(
        ti.transfer_checked(m.TransferCheckedParams(program_id=program, source=B, mint=MINT, dest=C, owner=A,
                                                    amount=2_500_000, decimals=6)),
        ti.approve_checked(m.ApproveCheckedParams(program_id=program, source=B, mint=MINT, delegate=C, owner=A,
                                                  amount=40, decimals=1)),
        ti.mint_to_checked(m.MintToCheckedParams(program_id=program, mint=MINT, dest=B, mint_authority=A,
                                                 amount=3, decimals=2)),
        ti.burn_checked(m.BurnCheckedParams(program_id=program, account=B, mint=MINT, owner=A, amount=10**9,
                                            decimals=9)),
    )  # fmt: skip
    effects = [line.strip() for line in lines if line.startswith("  ")]
    assert effects == [
        f"moves 2500000 raw units of mint {MINT} (= 2.5 in whole tokens, 6 decimals) from {B} to {C} "
        f"(transfer, signed by {A})",
        f"lets {C} spend up to 40 raw units of mint {MINT} (= 4 in whole tokens, 1 decimals) from {B} (signed by {A})",
        f"token:mint_to_checked of 3 raw units of mint {MINT} (= 0.03 in whole tokens, 2 decimals) (signed by {A}): "
        "no policy can allow it",
        f"token:burn_checked of 1000000000 raw units of mint {MINT} (= 1 in whole tokens, 9 decimals) (signed by {A}): "
        "no policy can allow it",
    ]


def test_a_squads_token_spending_limit_use_shows_whole_tokens() -> None:
    s = squads_scenario()
    lines = _decoded_lines(spend(s, 1_250_000, mint=MINT), spend(s, 2 * 10**9))
    moves = [line.strip() for line in lines if line.strip().startswith("moves")]
    assert len(moves) == 2
    assert moves[0].startswith(f"moves 1250000 raw units of mint {MINT} (= 1.25 in whole tokens, 6 decimals) from ")
    assert moves[1].startswith("moves 2000000000 lamports (2 SOL) from ")


def test_unchecked_token_instructions_stay_in_raw_units() -> None:
    """No decimals stated: raw units only (minting and burning now name their amounts too)."""
    lines = _decoded_lines(
        ti.approve(m.ApproveParams(program_id=TOKEN_PROGRAM, source=B, delegate=C, owner=A, amount=40)),
        ti.mint_to(m.MintToParams(program_id=TOKEN_PROGRAM, mint=MINT, dest=B, mint_authority=A, amount=3)),
        ti.burn(m.BurnParams(program_id=TOKEN_PROGRAM, account=B, mint=MINT, owner=A, amount=5)),
    )
    effects = [line.strip() for line in lines if line.startswith("  ")]
    assert effects == [
        f"lets {C} spend up to 40 raw units from {B} (signed by {A})",
        f"token:mint_to of 3 raw units of mint {MINT} (signed by {A}): no policy can allow it",
        f"token:burn of 5 raw units of mint {MINT} (signed by {A}): no policy can allow it",
    ]


def test_decimals_apply_only_to_the_mint_they_are_stated_for() -> None:
    other = Pubkey.new_unique()
    args = {"mint": other, "decimals": 6}
    assert describe_effect(Outflow(str(MINT), 42, A, B, C, "transfer"), args) == (
        f"moves 42 raw units of mint {MINT} from {B} to {C} (transfer, signed by {A})"
    )


@pytest.mark.parametrize("program", [TOKEN_PROGRAM, TOKEN_2022_PROGRAM], ids=["spl_token", "token_2022"])
def test_with_a_policys_addresses_a_token_payment_says_whose_account_it_pays(program: Pubkey) -> None:
    """Review finding: a merchant's associated token account and an attacker's look alike. Given the policy's
    destination lists, the line names the owner whose associated account it is (or says it is none of theirs)."""
    merchant, denied, stranger = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    recipients = Recipients.of([merchant], [denied])

    def paying(owner: Pubkey) -> str:
        dest = associated_token_address(owner, MINT, program)
        tx = decode_transaction(bytes(Transaction.new_unsigned(Message.new_with_blockhash(
            [ti.transfer_checked(m.TransferCheckedParams(program_id=program, source=B, mint=MINT, dest=dest, owner=A,
                                                         amount=5, decimals=0))], A, Hash.new_unique()))))  # fmt: skip
        [line] = [line for line in describe_transaction(tx, recipients) if "moves" in line]
        assert f"to {dest} (" in line
        return line

    assert f"(the associated token account of {merchant}, the policy's allowlisted address)" in paying(merchant)
    assert f"(the associated token account of {denied}, the policy's denylisted address)" in paying(denied)
    assert "(not the associated token account of any address the policy names)" in paying(stranger)
    other_program = TOKEN_PROGRAM if program == TOKEN_2022_PROGRAM else TOKEN_2022_PROGRAM
    assert "not the associated" in describe_effect(
        Outflow(str(MINT), 5, A, B, associated_token_address(merchant, MINT, other_program), "transfer", program),
        recipients=recipients,
    )  # the merchant's account under the other token program is not the one this transfer names


def test_with_a_policys_addresses_a_sol_payment_says_whether_the_policy_names_its_destination() -> None:
    recipients = Recipients.of([B], [C])
    assert f"to {B} (the policy's allowlisted address)" in describe_effect(
        Outflow("SOL", 1, A, A, B, "transfer"), recipients=recipients
    )
    assert f"to {C} (the policy's denylisted address)" in describe_effect(
        Outflow("SOL", 1, A, A, C, "transfer"), recipients=recipients
    )
    assert f"to {MINT} (an address the policy does not name)" in describe_effect(
        Outflow("SOL", 1, A, A, MINT, "transfer"), recipients=recipients
    )
    assert describe_effect(Outflow("SOL", 1, A, A, B, "transfer")).endswith(f"to {B} (transfer, signed by {A})")
