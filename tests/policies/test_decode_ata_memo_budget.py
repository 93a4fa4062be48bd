"""Associated Token Account, Memo and ComputeBudget decoders: known answers, LiteSVM execution, refusals."""

from __future__ import annotations

import pytest
from solders.compute_budget import (
    request_heap_frame,
    set_compute_unit_limit,
    set_compute_unit_price,
)
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from spl.memo.instructions import create_memo
from spl.memo.models import MemoParams
from spl.token.instructions import create_associated_token_account, create_idempotent_associated_token_account

from policies import programs
from policies.decoders.ata import ATA_RENT_ESTIMATE, decode_associated_token_account
from policies.decoders.compute_budget import decode_compute_budget
from policies.decoders.memo import decode_memo
from policies.errors import DecodeError
from policies.model import NATIVE_SOL, AccountView, ComputeBudgetSetting, Outflow
from policies.programs import associated_token_address
from policies.transaction import decode_transaction
from tests.support import chain
from tests.support.builders import legacy_tx

TOKEN, TOKEN22, ATA = programs.TOKEN_PROGRAM, programs.TOKEN_2022_PROGRAM, programs.ASSOCIATED_TOKEN_PROGRAM


def test_rent_estimates() -> None:
    assert ATA_RENT_ESTIMATE == {TOKEN: 2_039_280, TOKEN22: 2_248_080}


@pytest.mark.litesvm
@pytest.mark.parametrize("tp", [TOKEN, TOKEN22], ids=["spl_token", "token_2022"])
@pytest.mark.parametrize("idempotent", [False, True])
def test_create_ata_decodes_and_executes(tp: Pubkey, idempotent: bool) -> None:
    svm = chain.fresh_chain()
    payer = chain.funded_keypair(svm)
    mint = chain.create_mint(svm, payer, authority=payer.pubkey(), token_program=tp)
    owner = Keypair().pubkey()
    build = create_idempotent_associated_token_account if idempotent else create_associated_token_account
    raw = legacy_tx(payer, [build(payer.pubkey(), owner, mint, tp)], svm.latest_blockhash())
    (d,) = decode_transaction(raw).instructions
    address = chain.ata_address(owner, mint, tp)
    assert associated_token_address(owner, mint, tp) == address
    assert (d.program, d.name) == ("associated_token_account", "create_idempotent" if idempotent else "create")
    assert dict(d.args) == {
        "payer": payer.pubkey(), "associated_account": address, "owner": owner, "mint": mint, "token_program": tp,
        "idempotent": idempotent, "rent_estimate": ATA_RENT_ESTIMATE[tp],
    }  # fmt: skip
    assert d.effects == (
        Outflow(NATIVE_SOL, ATA_RENT_ESTIMATE[tp], payer.pubkey(), payer.pubkey(), address, "ata_rent"),
    )
    before = svm.get_balance(payer.pubkey()) or 0
    chain.execute(svm, raw)
    paid = before - (svm.get_balance(payer.pubkey()) or 0) - 5000
    assert 0 < paid <= ATA_RENT_ESTIMATE[tp]
    if tp == TOKEN:
        assert paid == ATA_RENT_ESTIMATE[tp]


def _views(*keys: Pubkey) -> tuple[AccountView, ...]:
    return tuple(AccountView(k, False, False) for k in keys)


def test_recover_nested() -> None:
    wallet, owner_mint, nested_mint = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    owner_ata = associated_token_address(wallet, owner_mint, TOKEN)
    nested = associated_token_address(owner_ata, nested_mint, TOKEN)
    destination = associated_token_address(wallet, nested_mint, TOKEN)
    accounts = _views(nested, nested_mint, destination, owner_ata, owner_mint, wallet, TOKEN)
    d = decode_associated_token_account(0, ATA, accounts, b"\x02")
    assert (d.name, d.effects, d.args["wallet"], d.args["destination"]) == ("recover_nested", (), wallet, destination)
    wrong = _views(nested, nested_mint, Pubkey.new_unique(), owner_ata, owner_mint, wallet, TOKEN)
    with pytest.raises(DecodeError, match="is not the associated token account"):
        decode_associated_token_account(0, ATA, wrong, b"\x02")


@pytest.mark.parametrize("wrong", ["owner_ata", "nested", "destination"])
def test_recover_nested_checks_each_derived_account(wrong: str) -> None:
    """Each of the three associated accounts is checked on its own: the other two derive correctly from it."""
    wallet, owner_mint, nested_mint = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    stranger = Pubkey.new_unique()
    owner_ata = stranger if wrong == "owner_ata" else associated_token_address(wallet, owner_mint, TOKEN)
    nested = stranger if wrong == "nested" else associated_token_address(owner_ata, nested_mint, TOKEN)
    destination = stranger if wrong == "destination" else associated_token_address(wallet, nested_mint, TOKEN)
    accounts = _views(nested, nested_mint, destination, owner_ata, owner_mint, wallet, TOKEN)
    with pytest.raises(DecodeError, match=f"{stranger} is not the associated token account"):
        decode_associated_token_account(0, ATA, accounts, b"\x02")


def test_ata_refusals() -> None:
    payer, owner, mint = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    good = associated_token_address(owner, mint, TOKEN)
    system = programs.SYSTEM_PROGRAM
    cases = [
        (b"\x03", _views(payer, good, owner, mint, system, TOKEN), "unknown instruction data"),
        (b"\x00\x00", _views(payer, good, owner, mint, system, TOKEN), "unknown instruction data"),
        (b"", _views(payer, good, owner, mint, system), "create: 5 accounts, expected 6"),
        (b"", _views(payer, good, owner, mint, system, TOKEN, TOKEN), "seventh account must be the Rent sysvar"),
        (b"\x01", _views(payer, good, owner, mint, payer, TOKEN), "expected the System program"),
        (b"", _views(payer, good, owner, mint, system, programs.MEMO_V2_PROGRAM), "neither SPL Token nor Token-2022"),
        (b"", _views(payer, Pubkey.new_unique(), owner, mint, system, TOKEN), "is not the associated token account"),
        (b"", _views(payer, good, owner, mint, system, TOKEN22), "is not the associated token account"),
        (b"\x02", _views(payer, good), "recover_nested: 2 accounts"),
    ]
    for data, accounts, match in cases:
        with pytest.raises(DecodeError, match=match) as info:
            decode_associated_token_account(4, ATA, accounts, data)
        assert info.value.instruction_index == 4


# ---------------------------------------------------------------------------------------------------------------
# Memo


@pytest.mark.litesvm
def test_memo_v2_decodes_and_executes() -> None:
    svm = chain.fresh_chain()
    payer = chain.funded_keypair(svm)
    ix = create_memo(MemoParams(program_id=programs.MEMO_V2_PROGRAM, signer=payer.pubkey(), message="héllo".encode()))
    raw = legacy_tx(payer, [ix], svm.latest_blockhash())
    (d,) = decode_transaction(raw).instructions
    assert (d.program, d.name, d.effects) == ("memo", "memo", ())
    assert dict(d.args) == {"text": "héllo", "version": 2, "signers": (payer.pubkey(),)}
    chain.execute(svm, raw)


def test_memo_v1_and_refusal() -> None:
    d = decode_memo(0, programs.MEMO_V1_PROGRAM, (), b"plain")
    assert dict(d.args) == {"text": "plain", "version": 1, "signers": ()}
    with pytest.raises(DecodeError, match="not valid UTF-8") as info:
        decode_memo(2, programs.MEMO_V2_PROGRAM, (), b"\xc3\x28")
    assert info.value.instruction_index == 2


# ---------------------------------------------------------------------------------------------------------------
# ComputeBudget


def test_compute_budget_known_answers() -> None:
    payer = Keypair()
    instructions = [
        request_heap_frame(64 * 1024),
        set_compute_unit_limit(300_000),
        set_compute_unit_price(2**64 - 1),
        Instruction(programs.COMPUTE_BUDGET_PROGRAM, bytes([4]) + (65536).to_bytes(4, "little"), []),
    ]
    tx = decode_transaction(legacy_tx(payer, instructions))
    assert [(d.name, d.effects, dict(d.args)) for d in tx.instructions] == [
        ("request_heap_frame", (ComputeBudgetSetting("heap_frame", 65536),), {"heap_frame": 65536}),
        ("set_compute_unit_limit", (ComputeBudgetSetting("unit_limit", 300_000),), {"unit_limit": 300_000}),
        ("set_compute_unit_price", (ComputeBudgetSetting("unit_price", 2**64 - 1),), {"unit_price": 2**64 - 1}),
        (
            "set_loaded_accounts_data_size_limit",
            (ComputeBudgetSetting("loaded_accounts_data_size_limit", 65536),),
            {"loaded_accounts_data_size_limit": 65536},
        ),
    ]


@pytest.mark.parametrize(
    ("data", "accounts", "match"),
    [
        (b"", (), "empty instruction data"),
        (bytes([0]) + bytes(8), (), "unknown instruction tag 0"),
        (bytes([5]), (), "unknown instruction tag 5"),
        (bytes([2]) + bytes(5), (), "set_compute_unit_limit: data is 6 bytes, expected exactly 5"),
        (bytes([3]) + bytes(4), (), "set_compute_unit_price: data is 5 bytes, expected exactly 9"),
        (bytes([2]) + bytes(4), (AccountView(Pubkey.new_unique(), False, False),), "1 accounts, expected exactly 0"),
    ],
)
def test_compute_budget_refusals(data: bytes, accounts: tuple[AccountView, ...], match: str) -> None:
    with pytest.raises(DecodeError, match=match) as info:
        decode_compute_budget(1, programs.COMPUTE_BUDGET_PROGRAM, accounts, data)
    assert info.value.instruction_index == 1


def test_compute_budget_with_account_in_transaction() -> None:
    ix = Instruction(
        programs.COMPUTE_BUDGET_PROGRAM, bytes([2]) + bytes(4), [AccountMeta(Pubkey.new_unique(), False, False)]
    )
    with pytest.raises(DecodeError, match="expected exactly 0"):
        decode_transaction(legacy_tx(Keypair(), [ix]))
