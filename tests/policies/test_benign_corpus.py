"""Benign corpus: everyday agent transactions that the example policy must allow, executed on LiteSVM.

Each case is decided by the real engine and must be ALLOW (zero false denials); it is then signed with the agent
key and executed on the embedded chain, which proves the transaction is real and does what the policy thought.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import spl.token.instructions as tok
import spl.token.models as spl
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer

from policies.decision import Verdict
from policies.programs import MEMO_V2_PROGRAM, NATIVE_MINT, TOKEN_2022_PROGRAM, TOKEN_PROGRAM
from tests.support.builders import lookup_table
from tests.support.chain import (
    LAMPORTS_PER_SOL,
    airdrop,
    ata_address,
    create_ata,
    create_mint,
    execute,
    fresh_chain,
    install_lookup_table,
    install_native_mint,
    mint_tokens,
    token_balance,
)
from tests.support.policies import EXAMPLE_MINT, MERCHANT, TREASURY
from tests.support.scenario import FEE, Scenario

pytestmark = pytest.mark.litesvm


@dataclass
class World:
    svm: LiteSVM
    s: Scenario
    mint: Pubkey
    mint_2022: Pubkey
    spare_mint: Pubkey


def _use_mints(doc: dict[str, object], mints: list[Pubkey]) -> None:
    text = str(EXAMPLE_MINT)
    rules = doc["rules"]
    assert isinstance(rules, dict)
    rules["mints"] = [str(m) for m in mints]
    for limit in rules["limits"]:
        if limit["asset"] == text:
            limit["asset"] = str(mints[0])
    rules["limits"].append({
        "id": "token-2022", "asset": str(mints[1]),
        "per_transaction": {"automatic": "100000000", "approval": "1000000000"}, "periods": [],
    })  # fmt: skip


@pytest.fixture
def world() -> World:
    svm = fresh_chain()
    s = Scenario()
    airdrop(svm, s.wallet, 50 * LAMPORTS_PER_SOL)
    for receiver in (MERCHANT, TREASURY):  # existing, rent-exempt receivers, as on a real chain
        airdrop(svm, receiver, LAMPORTS_PER_SOL)
    install_native_mint(svm)
    authority = Keypair()
    airdrop(svm, authority.pubkey(), LAMPORTS_PER_SOL)
    mint = create_mint(svm, s.agent, authority=authority.pubkey())
    mint_2022 = create_mint(svm, s.agent, authority=authority.pubkey(), token_program=TOKEN_2022_PROGRAM)
    spare = create_mint(svm, s.agent, authority=authority.pubkey())
    for m, program in ((mint, TOKEN_PROGRAM), (mint_2022, TOKEN_2022_PROGRAM)):
        own = create_ata(svm, s.agent, owner=s.wallet, mint=m, token_program=program)
        create_ata(svm, s.agent, owner=MERCHANT, mint=m, token_program=program)
        mint_tokens(svm, s.agent, mint=m, destination=own, authority=authority, amount=10**9, token_program=program)
    create_ata(svm, s.agent, owner=s.wallet, mint=spare)
    _use_mints(s.doc, [mint, mint_2022])
    s.blockhash = svm.latest_blockhash()
    return World(svm, s, mint, mint_2022, spare)


def _checked(w: World, amount: int, owner: Pubkey = MERCHANT, program: Pubkey = TOKEN_PROGRAM) -> Instruction:
    mint = w.mint if program == TOKEN_PROGRAM else w.mint_2022
    return tok.transfer_checked(spl.TransferCheckedParams(
        program_id=program, source=ata_address(w.s.wallet, mint, program), mint=mint,
        dest=ata_address(owner, mint, program), owner=w.s.wallet, amount=amount, decimals=6))  # fmt: skip


def _lookup(w: World) -> tuple[bytes, dict[Pubkey, list[Pubkey]]]:
    table = lookup_table(Keypair().pubkey(), [MERCHANT, TREASURY])
    install_lookup_table(w.svm, table.key, table.addresses)
    w.s.blockhash = w.svm.latest_blockhash()
    raw = w.s.v0(w.s.pay(LAMPORTS_PER_SOL // 10), w.s.pay(1_000, TREASURY), tables=[table])
    return raw, {table.key: list(table.addresses)}


def _wrap_sol(w: World) -> bytes:
    own = ata_address(w.s.wallet, NATIVE_MINT)
    return w.s.legacy(
        tok.create_idempotent_associated_token_account(w.s.wallet, w.s.wallet, NATIVE_MINT),
        transfer(TransferParams(from_pubkey=w.s.wallet, to_pubkey=own, lamports=LAMPORTS_PER_SOL // 4)),
        tok.sync_native(spl.SyncNativeParams(program_id=TOKEN_PROGRAM, account=own)),
    )


@dataclass(frozen=True)
class Benign:
    name: str
    build: Callable[[World], bytes | tuple[bytes, dict[Pubkey, list[Pubkey]]]]
    check: Callable[[World], bool] | None = None


BENIGN = [
    Benign("SOL to a merchant", lambda w: w.s.legacy(w.s.pay(LAMPORTS_PER_SOL // 2)),
           lambda w: w.svm.get_balance(MERCHANT) == LAMPORTS_PER_SOL * 3 // 2),
    Benign("SOL at exactly the automatic threshold", lambda w: w.s.legacy(w.s.pay(LAMPORTS_PER_SOL))),
    Benign("SOL to the treasury with a memo", lambda w: w.s.legacy(w.s.pay(1_000, TREASURY), tok_memo(w))),
    Benign("no compute-budget instructions", lambda w: w.s.legacy(w.s.pay(5_000), budget=False)),
    Benign("SOL to the wallet itself", lambda w: w.s.legacy(w.s.pay(5_000, w.s.wallet))),
    Benign("TransferChecked to a merchant's token account", lambda w: w.s.legacy(_checked(w, 50_000_000)),
           lambda w: token_balance(w.svm, ata_address(MERCHANT, w.mint)) == 50_000_000),
    Benign("Token-2022 TransferChecked (no extensions)",
           lambda w: w.s.legacy(_checked(w, 1_000, program=TOKEN_2022_PROGRAM)),
           lambda w: token_balance(w.svm, ata_address(MERCHANT, w.mint_2022, TOKEN_2022_PROGRAM)) == 1_000),
    Benign("idempotent ATA create, then TransferChecked", lambda w: w.s.legacy(
        tok.create_idempotent_associated_token_account(w.s.wallet, MERCHANT, w.mint), _checked(w, 7))),
    Benign("create the treasury's ATA, then pay it", lambda w: w.s.legacy(
        tok.create_associated_token_account(w.s.wallet, TREASURY, w.mint), _checked(w, 9, TREASURY)),
           lambda w: token_balance(w.svm, ata_address(TREASURY, w.mint)) == 9),
    Benign("Revoke on the wallet's own account", lambda w: w.s.legacy(tok.revoke(spl.RevokeParams(
        program_id=TOKEN_PROGRAM, account=ata_address(w.s.wallet, w.mint), owner=w.s.wallet)))),
    Benign("close an empty token account back to the wallet", lambda w: w.s.legacy(tok.close_account(
        spl.CloseAccountParams(program_id=TOKEN_PROGRAM, account=ata_address(w.s.wallet, w.spare_mint),
                               dest=w.s.wallet, owner=w.s.wallet))),
           lambda w: w.svm.get_account(ata_address(w.s.wallet, w.spare_mint)) is None),
    Benign("wrap SOL into the wallet's own wSOL account", _wrap_sol,
           lambda w: token_balance(w.svm, ata_address(w.s.wallet, NATIVE_MINT)) == LAMPORTS_PER_SOL // 4),
    Benign("v0 without lookup tables", lambda w: w.s.v0(w.s.pay(2_000))),
    Benign("v0 with destinations in a trusted lookup table", _lookup,
           lambda w: w.svm.get_balance(TREASURY) == LAMPORTS_PER_SOL + 1_000),
]  # fmt: skip


def tok_memo(w: World) -> Instruction:
    return Instruction(MEMO_V2_PROGRAM, "invoice #42 ✓".encode(), [AccountMeta(w.s.wallet, True, False)])


@pytest.mark.parametrize("case", BENIGN, ids=[b.name for b in BENIGN])
def test_benign_transaction_is_allowed_and_executes(world: World, case: Benign) -> None:
    built = case.build(world)
    raw, tables = built if isinstance(built, tuple) else (built, None)
    decision = world.s.decide(raw, tables)
    assert decision.verdict is Verdict.ALLOW, [r.to_json() for r in decision.reasons]
    execute(world.svm, world.s.signed(raw))
    if case.check is not None:
        assert case.check(world)


def test_benign_reservations_are_the_outflows(world: World) -> None:
    raw = world.s.legacy(world.s.pay(300), world.s.pay(700, TREASURY), _checked(world, 11))
    decision = world.s.decide(raw)
    assert decision.verdict is Verdict.ALLOW
    reserved = {(r.asset, r.amount) for r in decision.reservations}
    assert reserved == {("SOL", 1_000), (str(world.mint), 11), ("fees", FEE)}
