"""Property tests: whatever the bytes, the decoders either decode or raise `DecodeError` (a `PolicyEngineError`),
never anything else: arbitrary bytes, and valid transactions / off-chain messages with bytes flipped, cut or
inserted."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from spl.token.instructions import create_idempotent_associated_token_account, transfer_checked
from spl.token.models import TransferCheckedParams

from policies import programs
from policies.errors import DecodeError
from policies.offchain import SIGNING_DOMAIN, decode_offchain_message
from policies.transaction import decode_transaction
from tests.support.builders import legacy_tx, lookup_table, v0_tx

_PAYER = Keypair()
_ME = _PAYER.pubkey()
_TO, _MINT, _SRC, _DST, _TABLE = (Pubkey.new_unique() for _ in range(5))
_TABLES = {_TABLE: [_TO, _DST, programs.MEMO_V2_PROGRAM]}


def _corpus() -> list[bytes]:
    budget = [set_compute_unit_limit(200_000), set_compute_unit_price(1_000)]
    sol = transfer(TransferParams(from_pubkey=_ME, to_pubkey=_TO, lamports=5))
    token = transfer_checked(
        TransferCheckedParams(
            program_id=programs.TOKEN_PROGRAM, source=_SRC, mint=_MINT, dest=_DST, owner=_ME, amount=9, decimals=6
        )
    )
    ata = create_idempotent_associated_token_account(_ME, _TO, _MINT, programs.TOKEN_PROGRAM)
    memo = Instruction(programs.MEMO_V2_PROGRAM, b"hello", [AccountMeta(_ME, True, False)])
    return [
        legacy_tx(_PAYER, [*budget, sol]),
        v0_tx(_PAYER, [*budget, sol]),
        v0_tx(_PAYER, [*budget, sol, token, memo], lookup_tables=[lookup_table(_TABLE, _TABLES[_TABLE])]),
        legacy_tx(_PAYER, [ata, token, memo]),
    ]


CORPUS = _corpus()
OFFCHAIN = SIGNING_DOMAIN + b"\x00" + bytes(32) + b"\x00\x01" + bytes(_ME) + (5).to_bytes(2, "little") + b"hello"


def _decode_all(raw: bytes) -> None:
    for decode in (lambda b: decode_transaction(b, lookup_tables=_TABLES), decode_transaction, decode_offchain_message):
        with contextlib.suppress(DecodeError):  # anything else fails the test
            decode(raw)


def test_corpus_is_valid() -> None:
    for raw in CORPUS:
        decode_transaction(raw, lookup_tables=_TABLES)
    assert decode_offchain_message(OFFCHAIN).text == "hello"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=1300))
def test_arbitrary_bytes(raw: bytes) -> None:
    _decode_all(raw)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([*CORPUS, OFFCHAIN])))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "truncate"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if not data:
            break
        if op == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[position] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[position]
        elif op == "insert":
            data.insert(position, draw(st.integers(0, 255)))
        else:
            del data[position:]
    return bytes(data)


@settings(max_examples=1500, deadline=None)
@given(mutated())
def test_mutated_inputs(raw: bytes) -> None:
    _decode_all(raw)
