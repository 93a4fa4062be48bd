"""decode_transaction: structure of legacy and v0 transactions, lookup-table resolution, and every refusal."""

from __future__ import annotations

import pytest
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0, MessageV1
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from policies import programs
from policies.decoders.registry import DecoderRegistry, default_registry
from policies.errors import DecodeError
from policies.model import NATIVE_SOL, AccountView, ComputeBudgetSetting, DecodedInstruction, Opaque, Outflow
from policies.transaction import MAX_TRANSACTION_BYTES, decode_transaction
from tests.support import chain
from tests.support.builders import (
    RawInstruction,
    RawLookup,
    encode_legacy_message,
    encode_transaction,
    encode_v0_message,
    legacy_tx,
    lookup_table,
    unsigned_tx,
    v0_tx,
)

SYS = programs.SYSTEM_PROGRAM
TRANSFER_5 = bytes([2, 0, 0, 0]) + (5).to_bytes(8, "little")


def _typical(payer: Keypair, to: Pubkey) -> list[Instruction]:
    return [
        set_compute_unit_limit(200_000),
        set_compute_unit_price(1_000),
        transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=5)),
    ]


@pytest.mark.parametrize("builder", [legacy_tx, v0_tx])
def test_typical_transaction_fields(builder: object) -> None:
    payer, to = Keypair(), Pubkey.new_unique()
    blockhash = Hash.new_unique()
    raw = builder(payer, _typical(payer, to), blockhash)  # type: ignore[operator]
    tx = decode_transaction(raw)
    assert tx.version == ("legacy" if builder is legacy_tx else 0)
    assert tx.fee_payer == payer.pubkey()
    assert tx.required_signers == (payer.pubkey(),)
    assert tx.account_keys == (payer.pubkey(), to, SYS, programs.COMPUTE_BUDGET_PROGRAM)
    assert tx.recent_blockhash == str(blockhash)
    assert tx.lookup_tables == ()
    assert tx.message_bytes == raw[65:]
    assert payer.sign_message(tx.message_bytes) == Keypair.from_bytes(bytes(payer)).sign_message(raw[65:])
    limit, price, xfer = tx.instructions
    assert (limit.index, limit.name, limit.effects) == (
        0,
        "set_compute_unit_limit",
        (ComputeBudgetSetting("unit_limit", 200_000),),
    )
    assert (price.index, price.name, price.effects) == (
        1,
        "set_compute_unit_price",
        (ComputeBudgetSetting("unit_price", 1_000),),
    )
    assert xfer.index == 2 and xfer.program == "system" and xfer.name == "transfer"
    assert xfer.accounts == (AccountView(payer.pubkey(), True, True), AccountView(to, False, True))
    assert xfer.effects == (Outflow(NATIVE_SOL, 5, payer.pubkey(), payer.pubkey(), to, "transfer"),)


def test_message_bytes_is_what_the_signature_covers() -> None:
    payer, to = Keypair(), Pubkey.new_unique()
    raw = v0_tx(payer, _typical(payer, to))
    tx = decode_transaction(raw)
    assert raw[1:65] == bytes(payer.sign_message(tx.message_bytes))
    assert tx.message_bytes[0] == 0x80


def test_unsigned_transaction_decodes() -> None:
    payer, to = Keypair(), Pubkey.new_unique()
    message = Message.new_with_blockhash(_typical(payer, to), payer.pubkey(), Hash.default())
    tx = decode_transaction(unsigned_tx(message))
    assert tx.fee_payer == payer.pubkey()
    assert len(tx.instructions) == 3


def test_readonly_and_signer_flags() -> None:
    payer, other = Keypair(), Keypair()
    ro_signer, ro = Pubkey.new_unique(), Pubkey.new_unique()
    ix = Instruction(
        Pubkey.new_unique(),
        b"x",
        [AccountMeta(other.pubkey(), True, True), AccountMeta(ro_signer, True, False), AccountMeta(ro, False, False)],
    )
    message = Message.new_with_blockhash([ix], payer.pubkey(), Hash.default())
    tx = decode_transaction(unsigned_tx(message))
    (unknown,) = tx.instructions
    assert unknown.accounts == (
        AccountView(other.pubkey(), True, True),
        AccountView(ro_signer, True, False),
        AccountView(ro, False, False),
    )
    assert all(type(view) is AccountView for view in unknown.accounts)  # built with tuple.__new__ for speed
    assert unknown.program == "unknown" and unknown.name == "unknown"
    assert unknown.effects == (Opaque(f"no decoder for program {ix.program_id}"),)
    assert tx.required_signers == (payer.pubkey(), other.pubkey(), ro_signer)


def test_v0_lookup_order_writable_then_readonly() -> None:
    payer = Keypair()
    w1, w2, r1, r2 = (Pubkey.new_unique() for _ in range(4))
    t1, t2 = Pubkey.new_unique(), Pubkey.new_unique()
    program = Pubkey.new_unique()
    ix = Instruction(
        program,
        b"",
        [
            AccountMeta(r1, False, False),
            AccountMeta(w1, False, True),
            AccountMeta(r2, False, False),
            AccountMeta(w2, False, True),
        ],
    )
    tables = [lookup_table(t1, [r1, w1]), lookup_table(t2, [w2, r2])]
    raw = v0_tx(payer, [ix], lookup_tables=tables)
    tx = decode_transaction(raw, lookup_tables={t1: [r1, w1], t2: [w2, r2]})
    assert tx.account_keys == (payer.pubkey(), program, w1, w2, r1, r2)
    assert tx.lookup_tables == (t1, t2)
    assert tx.instructions[0].accounts == (
        AccountView(r1, False, False),
        AccountView(w1, False, True),
        AccountView(r2, False, False),
        AccountView(w2, False, True),
    )


@pytest.mark.litesvm
def test_v0_transfer_through_lookup_table_executes() -> None:
    svm = chain.fresh_chain()
    payer = chain.funded_keypair(svm)
    to, table = Pubkey.new_unique(), Pubkey.new_unique()
    chain.install_lookup_table(svm, table, [to])
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=1_000_000))
    raw = v0_tx(payer, [ix], svm.latest_blockhash(), lookup_tables=[lookup_table(table, [to])])
    tx = decode_transaction(raw, lookup_tables={table: [to]})
    assert tx.instructions[0].effects == (
        Outflow(NATIVE_SOL, 1_000_000, payer.pubkey(), payer.pubkey(), to, "transfer"),
    )
    assert tx.account_keys[-1] == to
    chain.execute(svm, raw)
    assert svm.get_balance(to) == 1_000_000


@pytest.mark.litesvm
def test_typical_legacy_executes() -> None:
    svm = chain.fresh_chain()
    payer = chain.funded_keypair(svm)
    to = Pubkey.new_unique()
    raw = legacy_tx(
        payer,
        [*_typical(payer, to)[:2], transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=10**6))],
        svm.latest_blockhash(),
    )
    decode_transaction(raw)
    chain.execute(svm, raw)
    assert svm.get_balance(to) == 10**6


# ---------------------------------------------------------------------------------------------------------------
# Refusals


def _legacy(
    keys: list[Pubkey], instructions: list[RawInstruction], header: tuple[int, int, int] = (1, 0, 1), sigs: int = 1
) -> bytes:
    return encode_transaction(encode_legacy_message(header, keys, instructions), sigs)


def test_hand_encoding_matches_solders() -> None:
    payer, to = Pubkey.new_unique(), Pubkey.new_unique()
    raw = _legacy([payer, to, SYS], [RawInstruction(2, bytes([0, 1]), TRANSFER_5)])
    tx = decode_transaction(raw)
    assert tx.instructions[0].effects == (Outflow(NATIVE_SOL, 5, payer, payer, to, "transfer"),)


def test_too_large() -> None:
    with pytest.raises(DecodeError, match="more than 1232"):
        decode_transaction(bytes(MAX_TRANSACTION_BYTES + 1))


def test_largest_transaction_decodes_and_one_byte_more_is_refused() -> None:
    def memo_tx(text_bytes: int) -> bytes:
        keys = [Pubkey.new_unique(), programs.MEMO_V1_PROGRAM]
        return _legacy(keys, [RawInstruction(1, b"", b"a" * text_bytes)], header=(1, 0, 1))

    overhead = len(memo_tx(200)) - 200  # the memo's length prefix is two bytes from 128 to 16 383
    largest = memo_tx(MAX_TRANSACTION_BYTES - overhead)
    assert len(largest) == MAX_TRANSACTION_BYTES
    assert decode_transaction(largest).instructions[0].name == "memo"
    with pytest.raises(DecodeError, match="1233 bytes, more than 1232"):
        decode_transaction(memo_tx(MAX_TRANSACTION_BYTES - overhead + 1))


def test_not_bytes() -> None:
    with pytest.raises(DecodeError, match="must be bytes"):
        decode_transaction(bytearray(b"\x01"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "not a serialized Solana transaction"),
        (b"\x01", "not a serialized Solana transaction"),
        (b"\xff" * 100, "not a serialized Solana transaction"),
        (bytes(200), "trailing bytes"),  # parses as an empty transaction followed by junk
    ],
)
def test_garbage(raw: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_transaction(raw)


def test_trailing_byte() -> None:
    payer, to = Keypair(), Pubkey.new_unique()
    raw = legacy_tx(payer, _typical(payer, to))
    decode_transaction(raw)
    with pytest.raises(DecodeError, match="trailing bytes"):
        decode_transaction(raw + b"\x00")


def test_message_v1_refused() -> None:
    payer = Keypair()
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=Pubkey.new_unique(), lamports=5))
    message = MessageV1.try_compile(payer.pubkey(), [ix], Hash.default())
    raw = bytes(VersionedTransaction(message, [payer]))
    with pytest.raises(DecodeError, match="unsupported message type MessageV1"):
        decode_transaction(raw)


def test_unknown_version_byte_refused() -> None:
    payer, to = Pubkey.new_unique(), Pubkey.new_unique()
    instructions = [RawInstruction(2, bytes([0, 1]), TRANSFER_5)]
    message = encode_v0_message((1, 0, 1), [payer, to, SYS], instructions, version_byte=0x82)
    with pytest.raises(DecodeError, match="not a serialized Solana transaction"):
        decode_transaction(encode_transaction(message, 1))


def test_signature_count_mismatch() -> None:
    payer, to = Pubkey.new_unique(), Pubkey.new_unique()
    with pytest.raises(DecodeError, match="2 signatures but the header requires 1"):
        decode_transaction(_legacy([payer, to, SYS], [RawInstruction(2, bytes([0, 1]), TRANSFER_5)], sigs=2))


def test_no_required_signature() -> None:
    payer, to = Pubkey.new_unique(), Pubkey.new_unique()
    with pytest.raises(DecodeError, match="no fee payer"):
        decode_transaction(_legacy([payer, to, SYS], [], header=(0, 0, 1), sigs=0))


def test_readonly_fee_payer() -> None:
    payer, to = Pubkey.new_unique(), Pubkey.new_unique()
    with pytest.raises(DecodeError, match="fee payer must be a writable signer"):
        decode_transaction(_legacy([payer, to, SYS], [], header=(1, 1, 1)))


def test_header_counts_exceed_keys() -> None:
    payer = Pubkey.new_unique()
    with pytest.raises(DecodeError, match="header counts exceed"):
        decode_transaction(_legacy([payer], [], header=(1, 0, 1)))


def test_duplicate_static_keys() -> None:
    payer, to = Pubkey.new_unique(), Pubkey.new_unique()
    with pytest.raises(DecodeError, match="appears more than once"):
        decode_transaction(_legacy([payer, to, to, SYS], [RawInstruction(3, bytes([0, 1]), TRANSFER_5)]))


def test_program_index_fee_payer() -> None:
    payer, to = Pubkey.new_unique(), Pubkey.new_unique()
    with pytest.raises(DecodeError, match="fee payer") as info:
        decode_transaction(
            _legacy(
                [payer, to, SYS],
                [RawInstruction(2, bytes([0, 1]), TRANSFER_5), RawInstruction(0, bytes([0, 1]), TRANSFER_5)],
            )
        )
    assert info.value.instruction_index == 1


@pytest.mark.parametrize("program_index", [3, 9])  # 3: the first index past the three keys
def test_program_index_out_of_range(program_index: int) -> None:
    payer, to = Pubkey.new_unique(), Pubkey.new_unique()
    with pytest.raises(DecodeError, match="points at no account"):
        decode_transaction(_legacy([payer, to, SYS], [RawInstruction(program_index, bytes([0, 1]), TRANSFER_5)]))


def test_account_index_out_of_range_legacy() -> None:
    payer, to = Pubkey.new_unique(), Pubkey.new_unique()
    with pytest.raises(DecodeError, match="account index 7 is out of range"):
        decode_transaction(_legacy([payer, to, SYS], [RawInstruction(2, bytes([0, 7]), TRANSFER_5)]))


def test_account_index_out_of_range_names_the_first() -> None:
    # The range check takes the maximum in one call; the error still names the first index out of range.
    payer, to = Pubkey.new_unique(), Pubkey.new_unique()
    with pytest.raises(DecodeError, match="account index 7 is out of range") as info:
        decode_transaction(_legacy([payer, to, SYS], [RawInstruction(2, bytes([0, 7, 1, 9]), TRANSFER_5)]))
    assert info.value.instruction_index == 0


# v0 with lookups: solders' sanitize cannot know the table sizes, so these reach our checks.


def _v0(
    instructions: list[RawInstruction], lookups: list[RawLookup], keys: list[Pubkey] | None = None
) -> tuple[bytes, Pubkey, Pubkey]:
    payer = Pubkey.new_unique()
    static = keys if keys is not None else [payer, SYS]
    message = encode_v0_message((1, 0, 1), static, instructions, lookups)
    return encode_transaction(message, 1), static[0], static[1]


TABLE = Pubkey.new_unique()
ENTRIES = [Pubkey.new_unique(), Pubkey.new_unique()]


def test_v0_lookup_resolves() -> None:
    raw, payer, _ = _v0([RawInstruction(1, bytes([0, 2]), TRANSFER_5)], [RawLookup(TABLE, bytes([1]), b"")])
    tx = decode_transaction(raw, lookup_tables={TABLE: ENTRIES})
    assert tx.instructions[0].effects == (Outflow(NATIVE_SOL, 5, payer, payer, ENTRIES[1], "transfer"),)
    assert tx.instructions[0].accounts[1] == AccountView(ENTRIES[1], False, True)


def test_v0_unresolvable_table() -> None:
    raw, _, _ = _v0([RawInstruction(1, bytes([0, 2]), TRANSFER_5)], [RawLookup(TABLE, bytes([1]), b"")])
    with pytest.raises(DecodeError, match="not supplied by a trusted source"):
        decode_transaction(raw)
    with pytest.raises(DecodeError, match="not supplied by a trusted source"):
        decode_transaction(raw, lookup_tables={Pubkey.new_unique(): ENTRIES})


def test_v0_index_past_table_end() -> None:
    raw, _, _ = _v0([RawInstruction(1, bytes([0, 2]), TRANSFER_5)], [RawLookup(TABLE, bytes([2]), b"")])
    with pytest.raises(DecodeError, match="past the end of table"):
        decode_transaction(raw, lookup_tables={TABLE: ENTRIES})


def test_v0_empty_lookup() -> None:
    raw, _, _ = _v0([], [RawLookup(TABLE, b"", b"")])
    with pytest.raises(DecodeError, match="names no account"):
        decode_transaction(raw, lookup_tables={TABLE: ENTRIES})


def test_v0_non_pubkey_table_entry() -> None:
    raw, _, _ = _v0([RawInstruction(1, bytes([0, 2]), TRANSFER_5)], [RawLookup(TABLE, bytes([0]), b"")])
    with pytest.raises(DecodeError, match="non-Pubkey entry"):
        decode_transaction(raw, lookup_tables={TABLE: ["not a key"]})  # type: ignore[list-item]


def test_v0_account_index_past_resolved() -> None:
    raw, _, _ = _v0([RawInstruction(1, bytes([0, 3]), TRANSFER_5)], [RawLookup(TABLE, bytes([1]), b"")])
    with pytest.raises(DecodeError, match="account index 3 is out of range") as info:
        decode_transaction(raw, lookup_tables={TABLE: ENTRIES})
    assert info.value.instruction_index == 0


def test_v0_program_id_from_lookup() -> None:
    raw, _, _ = _v0([RawInstruction(2, bytes([0]), TRANSFER_5)], [RawLookup(TABLE, b"", bytes([0]))])
    with pytest.raises(DecodeError, match="lookup-resolved account"):
        decode_transaction(raw, lookup_tables={TABLE: [programs.MEMO_V2_PROGRAM]})


def test_v0_duplicate_static_and_resolved() -> None:
    payer = Pubkey.new_unique()
    raw, _, _ = _v0(
        [RawInstruction(1, bytes([0, 2]), TRANSFER_5)], [RawLookup(TABLE, bytes([0]), b"")], keys=[payer, SYS]
    )
    with pytest.raises(DecodeError, match="appears more than once"):
        decode_transaction(raw, lookup_tables={TABLE: [payer]})


def test_v0_duplicate_between_lookups() -> None:
    other = Pubkey.new_unique()
    raw, _, _ = _v0([], [RawLookup(TABLE, bytes([0]), bytes([1]))])
    with pytest.raises(DecodeError, match="appears more than once"):
        decode_transaction(raw, lookup_tables={TABLE: [other, other]})


def test_v0_too_many_accounts() -> None:
    entries = [Pubkey.new_unique() for _ in range(255)]
    raw, _, _ = _v0([], [RawLookup(TABLE, bytes(range(255)), b"")])
    with pytest.raises(DecodeError, match="more than 256"):
        decode_transaction(raw, lookup_tables={TABLE: entries})


# Decoders and the registry


def test_decoder_error_carries_instruction_index() -> None:
    payer, to = Pubkey.new_unique(), Pubkey.new_unique()
    raw = _legacy(
        [payer, to, SYS],
        [RawInstruction(2, bytes([0, 1]), TRANSFER_5), RawInstruction(2, bytes([0, 1]), TRANSFER_5 + b"\x00")],
    )
    with pytest.raises(DecodeError, match="expected exactly 12") as info:
        decode_transaction(raw)
    assert info.value.instruction_index == 1


def _plugin_registry(decoder: object) -> tuple[DecoderRegistry, bytes]:
    registry = default_registry()
    program = Pubkey.new_unique()
    registry.register(program, decoder)  # type: ignore[arg-type]
    raw = _legacy([Pubkey.new_unique(), program], [RawInstruction(1, b"", b"\x01")])
    return registry, raw


def test_registered_decoder_is_used() -> None:
    def decode(index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes) -> DecodedInstruction:
        return DecodedInstruction(index, program_id, "plugin", "thing", accounts, {"data": data}, ())

    registry, raw = _plugin_registry(decode)
    tx = decode_transaction(raw, registry=registry)
    assert (tx.instructions[0].program, tx.instructions[0].name, tx.instructions[0].args) == (
        "plugin",
        "thing",
        {"data": b"\x01"},
    )
    assert decode_transaction(raw).instructions[0].program == "unknown"


def test_crashing_decoder_is_translated() -> None:
    def decode(index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes) -> DecodedInstruction:
        raise ZeroDivisionError

    registry, raw = _plugin_registry(decode)
    with pytest.raises(DecodeError, match="failed") as info:
        decode_transaction(raw, registry=registry)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert info.value.instruction_index == 0


def test_decoder_error_without_index_gets_one() -> None:
    def decode(index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes) -> DecodedInstruction:
        raise DecodeError("nope")

    registry, raw = _plugin_registry(decode)
    with pytest.raises(DecodeError, match="nope") as info:
        decode_transaction(raw, registry=registry)
    assert info.value.instruction_index == 0


def test_malformed_decoder_result() -> None:
    def decode(index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes) -> DecodedInstruction:
        return DecodedInstruction(index + 1, program_id, "plugin", "thing", accounts, {}, ())

    registry, raw = _plugin_registry(decode)
    with pytest.raises(DecodeError, match="malformed result"):
        decode_transaction(raw, registry=registry)


def test_registry_refuses_double_registration() -> None:
    registry = default_registry()
    with pytest.raises(ValueError, match="already registered"):
        registry.register(SYS, lambda *a: None)  # type: ignore[arg-type]
    other = registry.copy()
    other.register(SYS, lambda *a: None, replace=True)  # type: ignore[arg-type]
    assert registry.get(SYS) is not other.get(SYS)
    assert programs.SQUADS_V4_PROGRAM in registry
    assert len(registry) == 8 and set(registry) >= {SYS, programs.TOKEN_PROGRAM}


def test_registry_copy_holds_the_same_decoders_and_stays_independent() -> None:
    registry = default_registry()
    other = registry.copy()
    assert list(other) == list(registry)
    assert all(other.get(program) is registry.get(program) for program in registry)
    extra = Pubkey.new_unique()
    other.register(extra, lambda *a: None)  # type: ignore[arg-type]
    assert extra in other and extra not in registry and len(other) == len(registry) + 1


def test_message_v0_compiles_like_hand_encoding() -> None:
    payer = Keypair()
    message = MessageV0.try_compile(payer.pubkey(), [], [], Hash.default())
    assert decode_transaction(unsigned_tx(message)).instructions == ()
