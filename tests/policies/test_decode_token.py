"""SPL Token / Token-2022 decoder: known answers from the `spl.token` builders, a LiteSVM run proving the
instructions are real, the authority rule (multisig / extra accounts -> Opaque), and every refusal."""

from __future__ import annotations

import pytest
import spl.token.instructions as ti
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from spl.token import models as m
from spl.token.instructions import AuthorityType  # type: ignore[attr-defined]

from policies import programs
from policies.decoders.token import TOKEN_2022_EXTENSIONS, decode_token
from policies.errors import DecodeError
from policies.model import (
    AccountClose,
    AccountView,
    AuthorityChange,
    DecodedInstruction,
    DelegateApproval,
    Opaque,
    Outflow,
    Restricted,
    UncheckedTokenTransfer,
)
from policies.transaction import decode_transaction
from tests.support import chain
from tests.support.builders import legacy_tx, unsigned_tx

TOKEN, TOKEN22 = programs.TOKEN_PROGRAM, programs.TOKEN_2022_PROGRAM
BOTH = pytest.mark.parametrize("tp", [TOKEN, TOKEN22], ids=["spl_token", "token_2022"])


def decode_one(ix: Instruction, payer: Pubkey | None = None) -> DecodedInstruction:
    message = Message.new_with_blockhash([ix], payer or Pubkey.new_unique(), Hash.default())
    (decoded,) = decode_transaction(unsigned_tx(message)).instructions
    return decoded


def keys(n: int) -> list[Pubkey]:
    return [Pubkey.new_unique() for _ in range(n)]


@BOTH
def test_transfer_unchecked(tp: Pubkey) -> None:
    src, dst, owner = keys(3)
    d = decode_one(ti.transfer(m.TransferParams(program_id=tp, source=src, dest=dst, owner=owner, amount=42)))
    assert d.program == ("spl_token" if tp == TOKEN else "spl_token_2022") and d.name == "transfer"
    assert dict(d.args) == {"amount": 42, "source": src, "destination": dst, "authority": owner}
    assert d.effects == (UncheckedTokenTransfer(42, owner, src, dst),)


@BOTH
def test_transfer_checked(tp: Pubkey) -> None:
    src, mint, dst, owner = keys(4)
    ix = ti.transfer_checked(
        m.TransferCheckedParams(program_id=tp, source=src, mint=mint, dest=dst, owner=owner, amount=7, decimals=6)
    )
    d = decode_one(ix)
    assert d.name == "transfer_checked"
    assert dict(d.args) == {
        "amount": 7,
        "decimals": 6,
        "source": src,
        "mint": mint,
        "destination": dst,
        "authority": owner,
    }
    assert d.effects == (Outflow(str(mint), 7, owner, src, dst, "transfer", tp),)


@BOTH
def test_approve_and_revoke(tp: Pubkey) -> None:
    src, mint, delegate, owner = keys(4)
    d = decode_one(ti.approve(m.ApproveParams(program_id=tp, source=src, delegate=delegate, owner=owner, amount=5)))
    assert d.effects == (DelegateApproval(owner, src, delegate, 5, None),)
    ix = ti.approve_checked(
        m.ApproveCheckedParams(
            program_id=tp, source=src, mint=mint, delegate=delegate, owner=owner, amount=5, decimals=2
        )
    )
    d = decode_one(ix)
    assert d.name == "approve_checked" and d.args["decimals"] == 2
    assert d.effects == (DelegateApproval(owner, src, delegate, 5, str(mint)),)
    d = decode_one(ti.revoke(m.RevokeParams(program_id=tp, account=src, owner=owner)))
    assert (d.name, d.effects, dict(d.args)) == ("revoke", (), {"source": src, "owner": owner})


@BOTH
def test_set_authority(tp: Pubkey) -> None:
    acct, cur, new = keys(3)
    for new_authority in (new, None):
        ix = ti.set_authority(
            m.SetAuthorityParams(
                program_id=tp, account=acct, authority=AuthorityType.ACCOUNT_OWNER, current_authority=cur,
                new_authority=new_authority,
            )
        )  # fmt: skip
        d = decode_one(ix)
        assert d.effects == (AuthorityChange(cur, acct, new_authority, "token:account_owner"),)


@BOTH
def test_close_burn_freeze(tp: Pubkey) -> None:
    acct, dst, owner, mint = keys(4)
    d = decode_one(ti.close_account(m.CloseAccountParams(program_id=tp, account=acct, dest=dst, owner=owner)))
    assert d.effects == (AccountClose(owner, acct, dst),)
    ix = ti.burn_checked(m.BurnCheckedParams(program_id=tp, mint=mint, account=acct, owner=owner, amount=3, decimals=1))
    d = decode_one(ix)
    assert d.effects == (Restricted(owner, "token:burn_checked"),)
    assert dict(d.args) == {"account": acct, "mint": mint, "authority": owner, "amount": 3, "decimals": 1}
    d = decode_one(ti.freeze_account(m.FreezeAccountParams(program_id=tp, account=acct, mint=mint, authority=owner)))
    assert d.effects == (Restricted(owner, "token:freeze_account"),)
    d = decode_one(ti.sync_native(m.SyncNativeParams(program_id=tp, account=acct)))
    assert (d.name, d.effects) == ("sync_native", ())


@BOTH
def test_initialize_instructions(tp: Pubkey) -> None:
    mint, acct, owner = keys(3)
    ix = ti.initialize_mint2(
        m.InitializeMint2Params(program_id=tp, mint=mint, decimals=9, mint_authority=owner, freeze_authority=None)
    )
    d = decode_one(ix)
    assert d.effects == (Restricted(None, "token:initialize_mint2"),)
    assert dict(d.args) == {"mint": mint, "decimals": 9, "mint_authority": owner, "freeze_authority": None}
    d = decode_one(
        ti.initialize_account3(m.InitializeAccount3Params(program_id=tp, account=acct, mint=mint, owner=owner))
    )
    assert (d.name, d.effects, dict(d.args)) == (
        "initialize_account3",
        (),
        {"account": acct, "mint": mint, "owner": owner},
    )


@pytest.mark.litesvm
@BOTH
def test_token_flow_executes(tp: Pubkey) -> None:
    svm = chain.fresh_chain()
    payer = chain.funded_keypair(svm)
    mint = chain.create_mint(svm, payer, authority=payer.pubkey(), decimals=6, token_program=tp)
    mine = chain.create_ata(svm, payer, owner=payer.pubkey(), mint=mint, token_program=tp)
    other = Keypair().pubkey()
    theirs = chain.create_ata(svm, payer, owner=other, mint=mint, token_program=tp)
    chain.mint_tokens(svm, payer, mint=mint, destination=mine, authority=payer, amount=1000, token_program=tp)
    me = payer.pubkey()
    instructions = [
        ti.transfer_checked(
            m.TransferCheckedParams(
                program_id=tp, source=mine, mint=mint, dest=theirs, owner=me, amount=400, decimals=6
            )
        ),
        ti.approve_checked(
            m.ApproveCheckedParams(
                program_id=tp, source=mine, mint=mint, delegate=other, owner=me, amount=10, decimals=6
            )
        ),
        ti.revoke(m.RevokeParams(program_id=tp, account=mine, owner=me)),
        ti.burn_checked(m.BurnCheckedParams(program_id=tp, mint=mint, account=mine, owner=me, amount=600, decimals=6)),
        ti.close_account(m.CloseAccountParams(program_id=tp, account=mine, dest=me, owner=me)),
    ]  # fmt: skip
    raw = legacy_tx(payer, instructions, svm.latest_blockhash())
    tx = decode_transaction(raw)
    assert [d.name for d in tx.instructions] == [
        "transfer_checked",
        "approve_checked",
        "revoke",
        "burn_checked",
        "close_account",
    ]
    assert tx.instructions[0].effects == (Outflow(str(mint), 400, me, mine, theirs, "transfer", tp),)
    assert tx.instructions[4].effects == (AccountClose(me, mine, me),)
    chain.execute(svm, raw)
    assert chain.token_balance(svm, theirs) == 400
    assert svm.get_account(mine) is None


# ---------------------------------------------------------------------------------------------------------------
# Authorities that are not a lone signer.

S = [AccountView(k, False, True) for k in keys(4)]
SIGNER = AccountView(Pubkey.new_unique(), True, False)
NOT_SIGNER = AccountView(Pubkey.new_unique(), False, False)
CHECKED_7 = bytes([12]) + (7).to_bytes(8, "little") + b"\x06"


def test_transfer_checked_extra_accounts_is_opaque() -> None:
    extra = AccountView(Pubkey.new_unique(), False, False)
    d = decode_token(0, TOKEN22, (S[0], S[1], S[2], SIGNER, extra), CHECKED_7)
    outflow, opaque = d.effects
    assert outflow == Outflow(str(S[1].pubkey), 7, SIGNER.pubkey, S[0].pubkey, S[2].pubkey, "transfer", TOKEN22)
    assert isinstance(opaque, Opaque) and "1 accounts after the authority" in opaque.reason


def test_multisig_authority_is_opaque() -> None:
    d = decode_token(0, TOKEN, (S[0], S[1], S[2], NOT_SIGNER), CHECKED_7)
    assert d.effects[1] == Opaque("transfer_checked: the authority does not sign (token multisig)")
    d = decode_token(0, TOKEN, (S[0], S[1], NOT_SIGNER, SIGNER), bytes([9]))
    assert d.effects == (AccountClose(NOT_SIGNER.pubkey, S[0].pubkey, S[1].pubkey), Opaque(d.effects[1].reason))  # type: ignore[union-attr]


# Token-2022's `TokenInstruction` variants past the base set, in enum order from tag 26 (spl-token-2022
# instruction.rs): written out here rather than read from the decoder, so that a tag missing there fails.
EXTENSION_NAMES = [
    "transfer_fee_extension", "confidential_transfer_extension", "default_account_state_extension", "reallocate",
    "memo_transfer_extension", "create_native_mint", "initialize_non_transferable_mint",
    "interest_bearing_mint_extension", "cpi_guard_extension", "initialize_permanent_delegate",
    "transfer_hook_extension", "confidential_transfer_fee_extension", "withdraw_excess_lamports",
    "metadata_pointer_extension", "group_pointer_extension", "group_member_pointer_extension",
    "confidential_mint_burn_extension", "scaled_ui_amount_extension", "pausable_extension",
]  # fmt: skip


@pytest.mark.parametrize(("tag", "name"), list(enumerate(EXTENSION_NAMES, start=26)))
def test_token_2022_extensions_are_opaque(tag: int, name: str) -> None:
    d = decode_token(0, TOKEN22, (S[0],), bytes([tag, 1, 2]))
    assert (d.name, d.effects) == (name, (Opaque(f"token-2022 extension instruction {name}"),))


def test_token_2022_knows_no_tag_past_the_extensions() -> None:
    assert len(TOKEN_2022_EXTENSIONS) == len(EXTENSION_NAMES)
    with pytest.raises(DecodeError, match="unknown instruction tag 45"):
        decode_token(0, TOKEN22, (S[0],), bytes([45, 1, 2]))


def test_ptoken_batch_is_opaque() -> None:
    d = decode_token(0, TOKEN, (S[0],), bytes([255, 0]))
    assert (d.name, d.effects) == ("batch", (Opaque("p-token batch instruction"),))


# SPL Token's restricted instructions: (tag, name, amount and decimals or None, first and second account's args)
RESTRICTED = [
    (7, "mint_to", (5, None), ("mint", "account")), (8, "burn", (5, None), ("account", "mint")),
    (10, "freeze_account", None, ("account", "mint")), (11, "thaw_account", None, ("account", "mint")),
    (14, "mint_to_checked", (5, 2), ("mint", "account")), (15, "burn_checked", (5, 2), ("account", "mint")),
]  # fmt: skip


@pytest.mark.parametrize(("tag", "name", "amount", "names"), RESTRICTED, ids=[r[1] for r in RESTRICTED])
def test_restricted_instructions_by_hand(
    tag: int, name: str, amount: tuple[int, int | None] | None, names: tuple[str, str]
) -> None:
    data = bytes([tag])
    expected: dict[str, object] = {names[0]: S[0].pubkey, names[1]: S[1].pubkey, "authority": SIGNER.pubkey}
    if amount is not None:
        data += amount[0].to_bytes(8, "little") + (b"" if amount[1] is None else bytes([amount[1]]))
        expected["amount"] = amount[0]
        if amount[1] is not None:
            expected["decimals"] = amount[1]
    d = decode_token(0, TOKEN, (S[0], S[1], SIGNER), data)
    assert (d.name, dict(d.args), d.effects) == (name, expected, (Restricted(SIGNER.pubkey, f"token:{name}"),))


def test_initialize_multisig_and_close_authority_name_their_accounts() -> None:
    d = decode_token(0, TOKEN, (S[0], S[1], S[2]), bytes([19, 2]))
    assert dict(d.args) == {"multisig": S[0].pubkey, "m": 2, "signers": (S[1].pubkey, S[2].pubkey)}
    with pytest.raises(DecodeError, match="initialize_mint_close_authority: 2 accounts, expected exactly 1"):
        decode_token(0, TOKEN22, (S[0], S[1]), bytes([25, 0]))


def test_benign_and_restricted_by_hand() -> None:
    one = (S[0],)
    assert decode_token(0, TOKEN, one, bytes([22])).name == "initialize_immutable_owner"
    assert decode_token(0, TOKEN, one, bytes([21])).args == {"mint": S[0].pubkey}
    assert decode_token(0, TOKEN22, one, bytes([21, 7, 0, 14, 0])).args["extension_types"] == (7, 14)
    assert decode_token(0, TOKEN, one, bytes([23]) + (5).to_bytes(8, "little")).args["amount"] == 5
    assert decode_token(0, TOKEN, one, b"\x181.5").args["ui_amount"] == "1.5"
    d = decode_token(0, TOKEN22, one, bytes([25, 1]) + bytes(S[1].pubkey))
    assert (d.args["close_authority"], d.effects) == (
        S[1].pubkey,
        (Restricted(None, "token:initialize_mint_close_authority"),),
    )
    d = decode_token(0, TOKEN, (S[0], S[1], SIGNER), bytes([7]) + (3).to_bytes(8, "little"))
    assert d.effects == (Restricted(SIGNER.pubkey, "token:mint_to"),)
    rent = AccountView(programs.SYSVAR_RENT, False, False)
    d = decode_token(0, TOKEN, (S[0], rent, S[1], S[2]), bytes([2, 2]))
    assert d.effects == (Restricted(None, "token:initialize_multisig"),) and d.args["signers"] == (
        S[1].pubkey,
        S[2].pubkey,
    )
    d = decode_token(0, TOKEN, (S[0], S[1], S[2], rent), bytes([1]))
    assert d.args == {"account": S[0].pubkey, "mint": S[1].pubkey, "owner": S[2].pubkey}
    d = decode_token(0, TOKEN, (S[0], rent), bytes([0, 6]) + bytes(S[1].pubkey) + b"\x01" + bytes(S[2].pubkey))
    assert (d.args["freeze_authority"], d.args["decimals"]) == (S[2].pubkey, 6)


# ---------------------------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize(
    ("program", "data", "accounts", "match"),
    [
        (TOKEN, b"", (S[0],), "empty instruction data"),
        (TOKEN, bytes([45]), (S[0],), "unknown instruction tag 45"),
        (TOKEN, bytes([26]), (S[0],), "unknown instruction tag 26"),  # an extension tag is not SPL Token's
        (TOKEN22, bytes([255]), (S[0],), "unknown instruction tag 255"),  # Batch is p-token's only
        (TOKEN, bytes([3]) + bytes(8) + b"\x00", (S[0], S[1], SIGNER), "transfer: data is 10 bytes"),
        (TOKEN, bytes([3]) + bytes(8), (S[0], S[1]), "transfer: 2 accounts, expected at least 3"),
        (TOKEN, CHECKED_7[:-1], (S[0], S[1], S[2], SIGNER), "transfer_checked: data is 9 bytes"),
        (TOKEN, bytes([13]) + bytes(8), (S[0], S[1], S[2], SIGNER), "approve_checked: data is 9 bytes"),
        (TOKEN, bytes([5, 0]), (S[0], SIGNER), "revoke: data is 2 bytes"),
        (TOKEN, bytes([6, 0]), (S[0], SIGNER), "set_authority: data too short"),
        (TOKEN, bytes([6, 4, 0]), (S[0], SIGNER), "unknown authority type 4"),
        (TOKEN22, bytes([6, 17, 0]), (S[0], SIGNER), "unknown authority type 17"),
        (TOKEN, bytes([6, 0, 2]), (S[0], SIGNER), "malformed optional public key"),
        (TOKEN, bytes([6, 0, 0]) + b"\x01" + bytes(31), (S[0], SIGNER), "malformed optional public key"),
        (TOKEN, bytes([6, 0, 1]) + bytes(31), (S[0], SIGNER), "malformed optional public key"),
        (TOKEN, bytes([9, 0]), (S[0], S[1], SIGNER), "close_account: data is 2 bytes"),
        (TOKEN, bytes([15]) + bytes(8), (S[0], S[1], SIGNER), "burn_checked: data is 9 bytes"),
        (TOKEN, bytes([0, 6]) + bytes(10), (S[0], S[1]), "initialize_mint: data too short"),
        (TOKEN, bytes([0, 6]) + bytes(33), (S[0], S[1]), "expected the Rent sysvar"),
        (TOKEN, bytes([20, 6]) + bytes(33), (S[0], S[1]), "initialize_mint2: 2 accounts"),
        (TOKEN, bytes([2, 1]), (S[0], S[1], S[2]), "expected the Rent sysvar"),
        (TOKEN, bytes([19, 1, 0]), (S[0], S[1]), "initialize_multisig2: data is 3 bytes"),
        (TOKEN, bytes([19, 1]), (S[0],), "initialize_multisig2: 1 accounts, expected at least 2"),
        (TOKEN, bytes([1]), (S[0], S[1], S[2], S[3]), "expected the Rent sysvar"),
        (TOKEN, bytes([18]) + bytes(32), (S[0],), "initialize_account3: 1 accounts"),
        (TOKEN, bytes([16]) + bytes(31), (S[0], S[1], S[2]), "initialize_account2: data is 32 bytes"),
        (TOKEN, bytes([17]), (S[0], S[1]), "sync_native: 2 accounts"),
        (TOKEN, bytes([17, 0]), (S[0],), "sync_native: data is 2 bytes"),
        (TOKEN, bytes([21, 1, 0]), (S[0],), "get_account_data_size: data is 3 bytes"),
        (TOKEN22, bytes([21, 1]), (S[0],), "not a whole number of u16"),
        (TOKEN, bytes([23]) + bytes(7), (S[0],), "amount_to_ui_amount: data is 8 bytes"),
        (TOKEN, b"\x18\xff", (S[0],), "amount is not UTF-8"),
        (TOKEN22, bytes([25, 0, 0]), (S[0],), "malformed optional public key"),
    ],
)
def test_refusals(program: Pubkey, data: bytes, accounts: tuple[AccountView, ...], match: str) -> None:
    with pytest.raises(DecodeError, match=match) as info:
        decode_token(5, program, accounts, data)
    assert info.value.instruction_index == 5


def test_refusal_inside_transaction_names_instruction() -> None:
    payer = Keypair()
    ok = Instruction(TOKEN, bytes([17]), [AccountMeta(S[0].pubkey, False, True)])
    bad = Instruction(TOKEN, bytes([17, 0]), [AccountMeta(S[0].pubkey, False, True)])
    with pytest.raises(DecodeError, match="sync_native") as info:
        decode_transaction(legacy_tx(payer, [ok, bad]))
    assert info.value.instruction_index == 1
