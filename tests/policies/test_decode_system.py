"""System program decoder: every instruction, built with the solders builders, decoded field by field; the
stateful flows executed on LiteSVM; every refusal."""

from __future__ import annotations

import pytest
from solders import system_program as sp
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey

from policies import programs
from policies.decoders.system import decode_system
from policies.errors import DecodeError
from policies.model import NATIVE_SOL, AccountView, AuthorityChange, DecodedInstruction, NonceAdvance, Outflow
from policies.transaction import decode_transaction
from tests.support import chain
from tests.support.builders import legacy_tx, unsigned_tx

SYS = programs.SYSTEM_PROGRAM
TOKEN = programs.TOKEN_PROGRAM


def decode_one(ix: Instruction, payer: Keypair | None = None) -> DecodedInstruction:
    """Decode ``ix`` as the only instruction of an unsigned legacy transaction paid by ``payer`` (or a new key)."""
    fee_payer = (payer or Keypair()).pubkey()
    tx = decode_transaction(unsigned_tx(Message.new_with_blockhash([ix], fee_payer, Hash.default())))
    (decoded,) = tx.instructions
    assert decoded.program == "system" and decoded.program_id == SYS and decoded.index == 0
    return decoded


def test_transfer() -> None:
    a, b = Keypair(), Pubkey.new_unique()
    d = decode_one(sp.transfer({"from_pubkey": a.pubkey(), "to_pubkey": b, "lamports": 7}), a)
    assert d.name == "transfer"
    assert dict(d.args) == {"lamports": 7, "from": a.pubkey(), "to": b}
    assert d.effects == (Outflow(NATIVE_SOL, 7, a.pubkey(), a.pubkey(), b, "transfer"),)


def test_create_account() -> None:
    a, new = Keypair(), Pubkey.new_unique()
    ix = sp.create_account({"from_pubkey": a.pubkey(), "to_pubkey": new, "lamports": 99, "space": 10, "owner": TOKEN})
    d = decode_one(ix, a)
    assert d.name == "create_account"
    assert dict(d.args) == {"lamports": 99, "space": 10, "owner": TOKEN, "from": a.pubkey(), "new_account": new}
    assert d.effects == (
        Outflow(NATIVE_SOL, 99, a.pubkey(), a.pubkey(), new, "create_account"),
        AuthorityChange(new, new, TOKEN, "system:create_account"),
    )


@pytest.mark.parametrize(
    ("space", "owner", "changes_authority"),
    [(0, SYS, False), (0, TOKEN, True), (80, SYS, True)],
)
def test_create_account_changes_the_new_accounts_authority_unless_it_stays_a_plain_system_account(
    space: int, owner: Pubkey, changes_authority: bool
) -> None:
    """The new account signs CreateAccount: when it is a wallet key, another owner or any data takes its address
    away from it (found in the design audit: only the funder's payment was reported)."""
    a, new = Keypair(), Pubkey.new_unique()
    ix = sp.create_account({"from_pubkey": a.pubkey(), "to_pubkey": new, "lamports": 5, "space": space, "owner": owner})
    change = AuthorityChange(new, new, owner, "system:create_account")
    assert (change in decode_one(ix, a).effects) is changes_authority


def test_assign_and_allocate() -> None:
    a = Keypair()
    d = decode_one(sp.assign({"pubkey": a.pubkey(), "owner": TOKEN}), a)
    assert (d.name, dict(d.args)) == ("assign", {"account": a.pubkey(), "owner": TOKEN})
    assert d.effects == (AuthorityChange(a.pubkey(), a.pubkey(), TOKEN, "system:assign"),)
    d = decode_one(sp.allocate({"pubkey": a.pubkey(), "space": 80}), a)
    assert (d.name, dict(d.args)) == ("allocate", {"account": a.pubkey(), "space": 80})
    assert d.effects == (AuthorityChange(a.pubkey(), a.pubkey(), None, "system:allocate"),)


def test_create_account_with_seed_base_is_funder() -> None:
    a = Keypair()
    new = Pubkey.create_with_seed(a.pubkey(), "vault", TOKEN)
    ix = sp.create_account_with_seed(
        {"from_pubkey": a.pubkey(), "to_pubkey": new, "base": a.pubkey(), "seed": "vault", "lamports": 5,
         "space": 3, "owner": TOKEN}
    )  # fmt: skip
    d = decode_one(ix, a)
    assert d.name == "create_account_with_seed"
    assert dict(d.args) == {"lamports": 5, "space": 3, "owner": TOKEN, "base": a.pubkey(), "seed": "vault",
                            "from": a.pubkey(), "new_account": new}  # fmt: skip
    assert d.effects == (Outflow(NATIVE_SOL, 5, a.pubkey(), a.pubkey(), new, "create_account"),)


def test_allocate_assign_transfer_with_seed() -> None:
    base = Keypair()
    derived = Pubkey.create_with_seed(base.pubkey(), "s1", SYS)
    d = decode_one(
        sp.allocate_with_seed({"address": derived, "base": base.pubkey(), "seed": "s1", "space": 9, "owner": SYS}), base
    )
    assert d.name == "allocate_with_seed"
    assert dict(d.args) == {"base": base.pubkey(), "seed": "s1", "space": 9, "account": derived, "owner": SYS}
    assert d.effects == (AuthorityChange(base.pubkey(), derived, SYS, "system:allocate_with_seed"),)
    d = decode_one(sp.assign_with_seed({"address": derived, "base": base.pubkey(), "seed": "s1", "owner": SYS}), base)
    assert d.name == "assign_with_seed"
    assert d.effects == (AuthorityChange(base.pubkey(), derived, SYS, "system:assign_with_seed"),)
    to = Pubkey.new_unique()
    ix = sp.transfer_with_seed(
        {"from_pubkey": derived, "from_base": base.pubkey(), "from_seed": "s1", "from_owner": SYS, "to_pubkey": to,
         "lamports": 11}
    )  # fmt: skip
    d = decode_one(ix, base)
    assert d.name == "transfer_with_seed"
    assert dict(d.args) == {
        "lamports": 11,
        "from": derived,
        "base": base.pubkey(),
        "seed": "s1",
        "from_owner": SYS,
        "to": to,
    }
    assert d.effects == (Outflow(NATIVE_SOL, 11, base.pubkey(), derived, to, "transfer_with_seed"),)


def test_nonce_instructions() -> None:
    auth, nonce, to, new_auth = Keypair(), Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    d = decode_one(sp.initialize_nonce_account({"nonce_pubkey": nonce, "authority": auth.pubkey()}))
    assert (d.name, dict(d.args), d.effects) == (
        "initialize_nonce_account",
        {"nonce_account": nonce, "authority": auth.pubkey()},
        (),
    )
    d = decode_one(sp.advance_nonce_account({"nonce_pubkey": nonce, "authorized_pubkey": auth.pubkey()}), auth)
    assert d.name == "advance_nonce_account"
    assert d.effects == (NonceAdvance(auth.pubkey(), nonce),)
    ix = sp.withdraw_nonce_account(
        {"nonce_pubkey": nonce, "authorized_pubkey": auth.pubkey(), "to_pubkey": to, "lamports": 4}
    )
    d = decode_one(ix, auth)
    assert dict(d.args) == {"lamports": 4, "nonce_account": nonce, "to": to, "authority": auth.pubkey()}
    assert d.effects == (Outflow(NATIVE_SOL, 4, auth.pubkey(), nonce, to, "nonce_withdraw"),)
    ix = sp.authorize_nonce_account(
        {"nonce_pubkey": nonce, "authorized_pubkey": auth.pubkey(), "new_authority": new_auth}
    )
    d = decode_one(ix, auth)
    assert d.name == "authorize_nonce_account"
    assert d.effects == (AuthorityChange(auth.pubkey(), nonce, new_auth, "system:nonce_authority"),)
    d = decode_one(sp.upgrade_nonce_account({"nonce_pubkey": nonce}))
    assert (d.name, dict(d.args), d.effects) == ("upgrade_nonce_account", {"nonce_account": nonce}, ())


@pytest.mark.litesvm
def test_nonce_and_seed_flows_execute() -> None:
    svm = chain.fresh_chain()
    payer = chain.funded_keypair(svm)
    nonce, to = Keypair(), Pubkey.new_unique()
    rent = svm.minimum_balance_for_rent_exemption(80)
    create = sp.create_nonce_account(payer.pubkey(), nonce.pubkey(), payer.pubkey(), rent + 10**6)
    me, n = payer.pubkey(), nonce.pubkey()
    derived = Pubkey.create_with_seed(me, "seed", SYS)
    fresh = Keypair()
    steps: list[tuple[list[Instruction], list[Keypair]]] = [
        (list(create), [nonce]),
        ([sp.advance_nonce_account({"nonce_pubkey": n, "authorized_pubkey": me})], []),
        (
            [
                sp.withdraw_nonce_account(
                    {"nonce_pubkey": n, "authorized_pubkey": me, "to_pubkey": to, "lamports": 10**6}
                )
            ],
            [],
        ),
        ([sp.authorize_nonce_account({"nonce_pubkey": n, "authorized_pubkey": me, "new_authority": to})], []),
        (
            [
                sp.create_account_with_seed(
                    {"from_pubkey": me, "to_pubkey": derived, "base": me, "seed": "seed", "lamports": 3 * 10**6,
                     "space": 0, "owner": SYS}
                )
            ],
            [],
        ),
        (
            [
                sp.transfer_with_seed(
                    {"from_pubkey": derived, "from_base": me, "from_seed": "seed", "from_owner": SYS,
                     "to_pubkey": to, "lamports": 10**6}
                )
            ],
            [],
        ),
        (
            [
                sp.transfer({"from_pubkey": me, "to_pubkey": fresh.pubkey(), "lamports": 10**7}),
                sp.allocate({"pubkey": fresh.pubkey(), "space": 8}),
                sp.assign({"pubkey": fresh.pubkey(), "owner": TOKEN}),
            ],
            [fresh],
        ),
    ]  # fmt: skip
    for instructions, signers in steps:
        svm.expire_blockhash()
        raw = legacy_tx(payer, instructions, svm.latest_blockhash(), signers=signers)
        decode_transaction(raw)
        chain.execute(svm, raw)
    assert svm.get_balance(to) == 2 * 10**6
    fresh_account = svm.get_account(fresh.pubkey())
    assert fresh_account is not None and fresh_account.owner == TOKEN


# ---------------------------------------------------------------------------------------------------------------
# Refusals, called on the decoder directly with exact bytes.

A, B, C = (AccountView(Pubkey.new_unique(), True, True) for _ in range(3))


def _tag(tag: int) -> bytes:
    return tag.to_bytes(4, "little")


def _seed(text: bytes) -> bytes:
    return len(text).to_bytes(8, "little") + text


@pytest.mark.parametrize(
    ("data", "accounts", "match"),
    [
        (b"\x02\x00\x00", (A, B), "shorter than the 4-byte instruction tag"),
        (_tag(99), (A,), "unknown instruction tag 99"),
        (_tag(2) + bytes(8) + b"\x00", (A, B), "transfer: data is 13 bytes, expected exactly 12"),
        (_tag(2) + bytes(7), (A, B), "transfer: data is 11 bytes"),
        (_tag(2) + bytes(8), (A,), "transfer: 1 accounts, expected exactly 2"),
        (_tag(2) + bytes(8), (A, B, C), "transfer: 3 accounts, expected exactly 2"),
        (_tag(0) + bytes(47), (A, B), "create_account: data is 51 bytes"),
        (_tag(1) + bytes(32), (A, B), "assign: 2 accounts"),
        (_tag(1) + bytes(33), (A,), "assign: data is 37 bytes, expected exactly 36"),
        (_tag(3) + bytes(10), (A, B), "create_account_with_seed: data too short"),
        (_tag(3) + bytes(32) + b"\x05", (A, B), "data too short for the seed length"),
        (_tag(3) + bytes(32), (A, B), "data too short for the seed length"),  # the base key, nothing after it
        (_tag(3) + bytes(32) + _seed(b""), (A, B), "data is 44 bytes, expected exactly 92"),  # an empty seed, no more
        (_tag(3) + bytes(32) + _seed(b"x" * 33), (A, B), "seed is 33 bytes, more than 32"),
        (_tag(3) + bytes(32) + (5).to_bytes(8, "little") + b"ab", (A, B), "data too short for the seed"),
        (_tag(3) + bytes(32) + _seed(b"\xff") + bytes(48), (A, B), "seed is not UTF-8"),
        (_tag(3) + bytes(A.pubkey) + _seed(b"a") + bytes(48), (A,), "2 or 3"),
        (_tag(3) + bytes(C.pubkey) + _seed(b"a") + bytes(48), (A, B), "base account does not match"),
        (_tag(3) + bytes(A.pubkey) + _seed(b"a") + bytes(48), (A, B, C), "base account does not match"),
        (_tag(3) + bytes(A.pubkey) + _seed(b"a") + bytes(48), (A, B), "does not derive from"),
        (_tag(4), (A, B, C), "expected the RecentBlockhashes sysvar"),
        (_tag(4) + b"\x00", (A, B, C), "advance_nonce_account: data is 5 bytes"),
        (_tag(4), (A, B, C, A), "advance_nonce_account: 4 accounts, expected exactly 3"),
        (_tag(5) + bytes(8), (A, B, C, C, C), "RecentBlockhashes"),
        (_tag(6) + bytes(32), (A, B, C), "RecentBlockhashes"),
        (_tag(6) + bytes(32), (A, B, C, A), "initialize_nonce_account: 4 accounts, expected exactly 3"),
        (_tag(7) + bytes(32), (A,), "authorize_nonce_account: 1 accounts"),
        (_tag(8) + bytes(8), (A, B), "allocate: 2 accounts"),
        (_tag(8) + bytes(9), (A,), "allocate: data is 13 bytes, expected exactly 12"),
        (_tag(9) + bytes(10), (A, B), "allocate_with_seed: data too short"),
        (_tag(9) + bytes(32), (A, B), "allocate_with_seed: data too short for the seed length"),
        (_tag(9) + bytes(A.pubkey) + _seed(b"a") + bytes(39), (A, B), "allocate_with_seed: data is"),
        (_tag(10) + bytes(A.pubkey) + _seed(b"a") + bytes(32), (B, C), "base account does not match"),
        (_tag(10) + bytes(A.pubkey) + _seed(b"a") + bytes(32), (B, A), "does not derive from"),
        (_tag(10) + bytes(A.pubkey) + _seed(b"a") + bytes(32), (B, A, C), "assign_with_seed: 3 accounts, expected"),
        (_tag(10) + bytes(A.pubkey) + _seed(b"a") + bytes(33), (B, A), "assign_with_seed: data is 78 bytes"),
        (_tag(11) + bytes(4), (A, B, C), "transfer_with_seed: data too short"),
        (_tag(11) + bytes(8) + _seed(b"a") + bytes(31), (A, B, C), "transfer_with_seed: data is"),
        (_tag(11) + bytes(8) + _seed(b"a") + bytes(32), (A, B, C), "does not derive from"),
        (_tag(11) + bytes(8) + _seed(b"a") + bytes(32), (A, B, C, A), "transfer_with_seed: 4 accounts, expected"),
        (_tag(12) + b"\x00", (A,), "upgrade_nonce_account: data is 5 bytes"),
        (_tag(12), (A, B), "upgrade_nonce_account: 2 accounts"),
    ],
)
def test_refusals(data: bytes, accounts: tuple[AccountView, ...], match: str) -> None:
    with pytest.raises(DecodeError, match=match) as info:
        decode_system(3, SYS, accounts, data)
    assert info.value.instruction_index == 3


# Every fixed-size instruction: (tag, name, data length, account count), from the System program's bincode layout.
FIXED = [
    (0, "create_account", 52, 2), (1, "assign", 36, 1), (2, "transfer", 12, 2), (4, "advance_nonce_account", 4, 3),
    (5, "withdraw_nonce_account", 12, 5), (6, "initialize_nonce_account", 36, 3),
    (7, "authorize_nonce_account", 36, 2), (8, "allocate", 12, 1), (12, "upgrade_nonce_account", 4, 1),
]  # fmt: skip


@pytest.mark.parametrize(("tag", "name", "length", "count"), FIXED, ids=[f[1] for f in FIXED])
def test_one_byte_or_one_account_more_is_refused(tag: int, name: str, length: int, count: int) -> None:
    data = _tag(tag) + bytes(length - 4)
    accounts = (A, B, C, A, B, C)[:count]
    with pytest.raises(DecodeError, match=f"{name}: data is {length + 1} bytes, expected exactly {length}"):
        decode_system(0, SYS, accounts, data + b"\x00")
    with pytest.raises(DecodeError, match=f"{name}: {count + 1} accounts, expected exactly {count}"):
        decode_system(0, SYS, (*accounts, C), data)


def test_withdraw_nonce_checks_rent_sysvar() -> None:
    blockhashes = AccountView(programs.SYSVAR_RECENT_BLOCKHASHES, False, False)
    with pytest.raises(DecodeError, match="expected the Rent sysvar"):
        decode_system(0, SYS, (A, B, blockhashes, C, A), _tag(5) + bytes(8))
    with pytest.raises(DecodeError, match="expected the Rent sysvar"):
        decode_system(0, SYS, (A, blockhashes, C), _tag(6) + bytes(32))


def test_create_account_with_seed_three_accounts() -> None:
    base = AccountView(Pubkey.new_unique(), True, False)
    new = AccountView(Pubkey.create_with_seed(base.pubkey, "k", TOKEN), True, True)
    d = decode_system(0, SYS, (A, new, base), _tag(3) + bytes(base.pubkey) + _seed(b"k") + bytes(16) + bytes(TOKEN))
    assert d.effects == (Outflow(NATIVE_SOL, 0, A.pubkey, A.pubkey, new.pubkey, "create_account"),)


def test_unsigned_account_meta_still_decodes() -> None:
    # The decoder reports what the instruction asks; whether it would run is the chain's business.
    ix = Instruction(
        SYS,
        _tag(2) + (1).to_bytes(8, "little"),
        [AccountMeta(B.pubkey, False, True), AccountMeta(C.pubkey, False, True)],
    )
    d = decode_one(ix)
    assert d.effects == (Outflow(NATIVE_SOL, 1, B.pubkey, B.pubkey, C.pubkey, "transfer"),)


def test_create_account_allow_prefund_with_payer() -> None:
    payer, new = Keypair(), Keypair().pubkey()
    ix = sp.create_account_allow_prefund(
        {"new_account": new, "payer": payer.pubkey(), "lamports": 50, "space": 8, "owner": TOKEN}
    )
    d = decode_one(ix, payer)
    assert d.name == "create_account_allow_prefund"
    assert dict(d.args) == {"lamports": 50, "space": 8, "owner": TOKEN, "new_account": new, "from": payer.pubkey()}
    assert d.effects == (
        Outflow(NATIVE_SOL, 50, payer.pubkey(), payer.pubkey(), new, "create_account"),
        AuthorityChange(new, new, TOKEN, "system:create_account_allow_prefund"),
    )


def test_create_account_allow_prefund_with_a_payer_and_no_lamports_pays_nothing() -> None:
    payer, new = Keypair(), Keypair().pubkey()
    ix = sp.create_account_allow_prefund(
        {"new_account": new, "payer": payer.pubkey(), "lamports": 0, "space": 8, "owner": TOKEN}
    )
    d = decode_one(ix, payer)
    assert d.args["from"] == payer.pubkey()
    assert d.effects == (AuthorityChange(new, new, TOKEN, "system:create_account_allow_prefund"),)


def test_create_account_allow_prefund_without_payer() -> None:
    new = Keypair()
    ix = sp.create_account_allow_prefund(
        {"new_account": new.pubkey(), "payer": None, "lamports": 0, "space": 8, "owner": TOKEN}
    )
    d = decode_one(ix, new)
    assert d.effects == (AuthorityChange(new.pubkey(), new.pubkey(), TOKEN, "system:create_account_allow_prefund"),)


def test_create_account_allow_prefund_refusals() -> None:
    new = Pubkey.new_unique()
    data = (13).to_bytes(4, "little") + (5).to_bytes(8, "little") + (8).to_bytes(8, "little") + bytes(TOKEN)
    one = (AccountView(new, True, True),)
    with pytest.raises(DecodeError, match="lamports without a payer account"):
        decode_system(0, SYS, one, data)
    with pytest.raises(DecodeError, match="1 or 2"):
        decode_system(0, SYS, one * 3, data)
    with pytest.raises(DecodeError, match="expected exactly 52"):
        decode_system(0, SYS, one, data + b"\x00")


@pytest.mark.litesvm
def test_create_account_allow_prefund_executes_as_decoded() -> None:
    svm = chain.fresh_chain()
    payer, new = chain.funded_keypair(svm), Keypair()
    ix = sp.create_account_allow_prefund(
        {"new_account": new.pubkey(), "payer": payer.pubkey(), "lamports": 10**7, "space": 8, "owner": TOKEN}
    )
    raw = legacy_tx(payer, [ix], svm.latest_blockhash(), signers=[new])
    (decoded,) = decode_transaction(raw).instructions
    chain.execute(svm, raw)
    account = svm.get_account(new.pubkey())
    assert account is not None
    assert (account.lamports, len(account.data), account.owner) == (decoded.args["lamports"], 8, TOKEN)
