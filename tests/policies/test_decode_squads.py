"""Squads v4 decoder: every IDL instruction encoded by the independent, IDL-driven encoder
(`tests.support.squads_encoder`) and decoded through the real transaction decoder; known answers for the decoded
semantics, every `DecodeError` path, vault-message parsing and linking, and hypothesis on garbage.

The compiled Squads program is not available offline (``../shared/squads/README.md``), so these instructions are
not executed on LiteSVM here: the IDL, and the program sources read to verify the layouts, are the reference.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer

from policies import programs
from policies.decoders.registry import default_registry
from policies.decoders.squads import INSTRUCTION_NAMES, discriminator, squads_vault_address
from policies.decoders.squads_vault import (
    UNSEEN,
    squads_ephemeral_signer_address,
    squads_proposal_address,
    squads_transaction_address,
)
from policies.errors import DecodeError
from policies.model import (
    NATIVE_SOL,
    AccountView,
    AuthorityChange,
    DecodedInstruction,
    Opaque,
    Outflow,
    Restricted,
)
from policies.rent import rent_exempt_minimum
from policies.transaction import decode_transaction
from tests.support.builders import unsigned_tx
from tests.support.squads_encoder import (
    IDL_PATH,
    IDL_SHA256,
    SquadsEncoder,
    compile_vault_message,
    encode_transaction_message,
    proposal_rent,
    snake,
    vault_transaction_rent,
)

ENC = SquadsEncoder()
SQ, SYSTEM = programs.SQUADS_V4_PROGRAM, programs.SYSTEM_PROGRAM
MULTISIG, AGENT, OWNER, MERCHANT, MINT = (Pubkey.new_unique() for _ in range(5))
VAULT = squads_vault_address(MULTISIG, 0)
TX1 = squads_transaction_address(MULTISIG, 1)
DECODER = default_registry().get(SQ)


def decode_all(*ixs: Instruction, payer: Pubkey = AGENT) -> tuple[DecodedInstruction, ...]:
    return decode_transaction(unsigned_tx(Message.new_with_blockhash(list(ixs), payer, Hash.default()))).instructions


def decode_one(ix: Instruction) -> DecodedInstruction:
    return decode_all(ix)[0]


def direct(data: bytes, count: int) -> DecodedInstruction:
    """Call the registered Squads decoder with ``count`` fresh accounts."""
    if DECODER is None:
        raise AssertionError("the default registry has no Squads decoder")
    return DECODER(0, SQ, tuple(AccountView(Pubkey.new_unique(), False, False) for _ in range(count)), data)


def pay(source: Pubkey, to: Pubkey, lamports: int) -> Instruction:
    return transfer(TransferParams(from_pubkey=source, to_pubkey=to, lamports=lamports))


def vault_create(
    message: bytes, *, ephemeral: int = 0, transaction: Pubkey = TX1, memo: str | None = None
) -> Instruction:
    accounts = {"multisig": MULTISIG, "transaction": transaction, "creator": AGENT, "rent_payer": AGENT,
                "system_program": SYSTEM}  # fmt: skip
    args = {"vault_index": 0, "ephemeral_signers": ephemeral, "transaction_message": message, "memo": memo}
    return ENC.instruction("vault_transaction_create", accounts, args)


# ---------------------------------------------------------------------------------------------------------------
# Every IDL instruction, with sample arguments generated from the IDL's types.


def sample(ty: Any) -> Any:
    if isinstance(ty, str):
        return {"bool": True, "publicKey": Pubkey.new_unique(), "bytes": b"\x01\x02", "string": "memo"}.get(ty, 1)
    if "option" in ty:
        return sample(ty["option"])
    if "vec" in ty:
        return [sample(ty["vec"])]
    if "array" in ty:
        return [0] * ty["array"][1]
    definition = ENC.types[ty["defined"]]
    if definition["kind"] == "struct":
        return {snake(f["name"]): sample(f["type"]) for f in definition["fields"]}
    variant = definition["variants"][0]
    fields = {snake(f["name"]): sample(f["type"]) for f in variant.get("fields", [])}
    return (snake(variant["name"]), fields) if fields else snake(variant["name"])


def sample_instruction(name: str) -> Instruction:
    accounts: dict[str, Pubkey | None] = {n: Pubkey.new_unique() for n in ENC.account_names(name)}
    accounts.update(multisig=MULTISIG, system_program=SYSTEM)
    spec = ENC.instructions[name]["args"]
    args = sample(spec[0]["type"]) if spec else None
    if name == "vault_transaction_create":
        return vault_create(compile_vault_message(VAULT, [pay(VAULT, MERCHANT, 5)]))
    if name == "proposal_create":
        accounts["proposal"] = squads_proposal_address(MULTISIG, 1)
    if name == "spending_limit_use":
        accounts.update(mint=None, vault_token_account=None, destination_token_account=None, token_program=None)
        args = {"amount": 7, "decimals": 9, "memo": None}
    return ENC.instruction(name, accounts, args)


EXPECTED = {
    **dict.fromkeys(["config_transaction_accounts_close", "vault_transaction_accounts_close",
                     "vault_batch_transaction_account_close", "batch_accounts_close"], None),
    **dict.fromkeys(["proposal_create", "vault_transaction_create"], Outflow),  # the new account's rent
    **dict.fromkeys(["proposal_approve", "proposal_activate", "vault_transaction_execute", "batch_add_transaction",
                     "vault_transaction_create_from_buffer", "batch_execute_transaction"], Opaque),
    **dict.fromkeys(["program_config_init", "program_config_set_authority", "program_config_set_treasury",
                     "program_config_set_multisig_creation_fee", "multisig_create", "multisig_create_v2",
                     "transaction_buffer_create", "transaction_buffer_extend", "transaction_buffer_close",
                     "batch_create", "proposal_reject", "proposal_cancel", "proposal_cancel_v2"], Restricted),
    **dict.fromkeys(["multisig_add_member", "multisig_remove_member", "multisig_set_time_lock",
                     "multisig_change_threshold", "multisig_set_config_authority", "multisig_set_rent_collector",
                     "multisig_add_spending_limit", "multisig_remove_spending_limit",
                     "config_transaction_execute"], AuthorityChange),
    "config_transaction_create": (AuthorityChange, Outflow),  # the actions, and the new account's rent
    "spending_limit_use": Outflow,
}  # fmt: skip
NAMES = sorted(ENC.instructions)


def test_idl_is_the_pinned_one_and_every_instruction_is_recognised() -> None:
    assert hashlib.sha256(IDL_PATH.read_bytes()).hexdigest() == IDL_SHA256
    assert set(ENC.instructions) == INSTRUCTION_NAMES == set(EXPECTED)
    assert len(NAMES) == 36
    for name in NAMES:
        assert discriminator(name) == ENC.discriminator(name) == bytes(sample_instruction(name).data)[:8]


@pytest.mark.parametrize("name", NAMES)
def test_every_instruction_decodes_to_its_effect_kind(name: str) -> None:
    d = decode_one(sample_instruction(name))
    assert (d.program, d.name, d.program_id) == ("squads_v4", name, SQ)
    kind = EXPECTED[name]
    if kind is None:
        assert d.effects == ()
    else:
        assert d.effects and all(isinstance(e, kind) for e in d.effects), d.effects


@pytest.mark.parametrize("name", NAMES)
def test_trailing_and_truncated_data_are_refused(name: str) -> None:
    ix = sample_instruction(name)
    data, count = bytes(ix.data), len(ix.accounts)
    with pytest.raises(DecodeError, match="trailing bytes"):
        direct(data + b"\x00", count)
    with pytest.raises(DecodeError, match=r"data too short|shorter than the 8-byte discriminator"):
        direct(data[:-1], count)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_account_counts_are_refused(name: str) -> None:
    ix = sample_instruction(name)
    data, count = bytes(ix.data), len(ix.accounts)
    fewest = {"spending_limit_use": 5, "config_transaction_execute": 4}.get(name, count)
    if name.startswith("multisig_") and name.endswith(("member", "time_lock", "threshold", "authority", "collector")):
        fewest = 2
    with pytest.raises(DecodeError, match=rf"{name}: {fewest - 1} accounts, expected"):
        direct(data, fewest - 1)
    if fewest < count and name != "spending_limit_use":  # optional accounts left out (a SOL limit needs System)
        assert direct(data, fewest).name == name
    if name not in ("vault_transaction_execute", "batch_execute_transaction", "config_transaction_execute"):
        with pytest.raises(DecodeError, match=rf"{name}: {count + 1} accounts, expected"):
            direct(data, count + 1)


@pytest.mark.parametrize(
    ("name", "count", "expected"),
    [
        ("proposal_approve", 2, "expected 3"),
        ("spending_limit_use", 11, "expected 5 to 10"),
        ("vault_transaction_execute", 3, "expected 4 to any"),
    ],
)
def test_account_count_refusal_names_the_expected_count_or_range(name: str, count: int, expected: str) -> None:
    with pytest.raises(DecodeError, match=rf"^{name}: {count} accounts, {expected}$"):
        direct(bytes(sample_instruction(name).data), count)


def test_unknown_and_short_discriminators() -> None:
    with pytest.raises(DecodeError, match="unknown instruction discriminator 0001020304050607"):
        direct(bytes(range(8)), 3)
    with pytest.raises(DecodeError, match="shorter than the 8-byte discriminator"):
        direct(b"\x01\x02", 3)
    with pytest.raises(DecodeError, match="shorter than the 8-byte discriminator"):
        direct(b"", 3)


# ---------------------------------------------------------------------------------------------------------------
# Known answers.


def test_vault_transaction_create_decodes_the_inner_message() -> None:
    message = compile_vault_message(VAULT, [pay(VAULT, MERCHANT, 5), pay(VAULT, OWNER, 6)])
    d = decode_one(vault_create(message, memo="rent"))
    assert dict(d.args) == {"multisig": MULTISIG, "transaction": TX1, "creator": AGENT, "rent_payer": AGENT,
                            "vault_index": 0, "vault": VAULT, "ephemeral_signers": 0, "memo": "rent"}  # fmt: skip
    assert d.effects == (Outflow(NATIVE_SOL, vault_transaction_rent(message), AGENT, AGENT, TX1, "squads_rent"),)
    first, second = d.inner
    assert (first.index, first.program, first.name) == (0, "system", "transfer")
    assert first.effects == (Outflow(NATIVE_SOL, 5, VAULT, VAULT, MERCHANT, "transfer"),)
    assert first.accounts == (AccountView(VAULT, True, True), AccountView(MERCHANT, False, True))
    assert second.index == 1 and second.effects == (Outflow(NATIVE_SOL, 6, VAULT, VAULT, OWNER, "transfer"),)


def test_vault_address_uses_the_program_seeds() -> None:
    seeds = [b"multisig", bytes(MULTISIG), b"vault", bytes([3])]
    assert squads_vault_address(MULTISIG, 3) == Pubkey.find_program_address(seeds, SQ)[0] != VAULT


def test_vault_message_signers_and_writability_follow_the_header() -> None:
    readonly_signer, writable, readonly = (Pubkey.new_unique() for _ in range(3))
    ephemeral = squads_ephemeral_signer_address(TX1, 0)
    keys = [VAULT, ephemeral, writable, readonly, programs.MEMO_V2_PROGRAM]
    message = encode_transaction_message((2, 1, 1), keys, [(4, bytes([0, 1, 2, 3]), b"hi")])
    (inner,) = decode_one(vault_create(message, ephemeral=1)).inner
    assert inner.accounts == (AccountView(VAULT, True, True), AccountView(ephemeral, True, False),
                              AccountView(writable, False, True), AccountView(readonly, False, False))  # fmt: skip
    assert readonly_signer not in keys


def test_vault_message_with_a_foreign_signer_is_opaque() -> None:
    message = compile_vault_message(VAULT, [pay(OWNER, MERCHANT, 5)])
    d = decode_one(vault_create(message, ephemeral=2))
    opaque, rent = d.effects
    assert isinstance(opaque, Opaque) and "asks" in opaque.reason
    assert rent == Outflow(NATIVE_SOL, vault_transaction_rent(message, 2), AGENT, AGENT, TX1, "squads_rent")


def test_vault_message_with_lookup_tables_is_opaque() -> None:
    message = encode_transaction_message((1, 1, 0), [VAULT, SYSTEM], [(1, b"\x00\x02", bytes(12))],
                                         [(Pubkey.new_unique(), b"\x00", b"")])  # fmt: skip
    d = decode_one(vault_create(message))
    assert d.inner == () and d.effects == (
        Opaque("the vault transaction message uses address lookup tables, whose contents are not in view"),
        Outflow(NATIVE_SOL, vault_transaction_rent(message), AGENT, AGENT, TX1, "squads_rent"),
    )


def test_vault_message_unknown_program_and_nested_squads() -> None:
    stranger_program = Pubkey.new_unique()
    inner_create = vault_create(compile_vault_message(VAULT, [pay(VAULT, MERCHANT, 1)]))
    unknown = Instruction(stranger_program, b"x", [AccountMeta(VAULT, True, True)])
    approve = ENC.instruction("proposal_approve", {"multisig": MULTISIG, "member": VAULT,
                              "proposal": squads_proposal_address(MULTISIG, 1)}, {"memo": None})  # fmt: skip
    d = decode_one(vault_create(compile_vault_message(VAULT, [unknown, inner_create, approve])))
    first, nested, vote = d.inner
    assert first.name == "unknown" and first.effects == (Opaque(f"no decoder for program {stranger_program}"),)
    assert nested.name == "vault_transaction_create" and nested.inner == ()
    assert nested.effects == (Opaque("vault transaction message nested deeper than 1 is refused"),)
    assert vote.name == "proposal_approve" and vote.effects == (Opaque(UNSEEN),)


def test_spending_limit_use_sol_and_token() -> None:
    names = {"multisig": MULTISIG, "member": AGENT, "spending_limit": Pubkey.new_unique(), "vault": VAULT,
             "destination": MERCHANT, "system_program": SYSTEM, "mint": None, "vault_token_account": None,
             "destination_token_account": None, "token_program": None}  # fmt: skip
    sol = ENC.instruction("spending_limit_use", names, {"amount": 7, "decimals": 9, "memo": "m"})
    d = decode_one(sol)
    assert d.effects == (Outflow(NATIVE_SOL, 7, VAULT, VAULT, MERCHANT, "squads_spending_limit"),)
    assert d.args["member"] == AGENT and d.args["memo"] == "m"
    # Trailing optional accounts may be left out (allow-missing-optionals).
    short = Instruction(SQ, bytes(sol.data), list(sol.accounts)[:6])
    assert decode_one(short).effects == d.effects
    source, dest = Pubkey.new_unique(), Pubkey.new_unique()
    names.update(system_program=None, mint=MINT, vault_token_account=source, destination_token_account=dest,
                 token_program=programs.TOKEN_2022_PROGRAM)  # fmt: skip
    d = decode_one(ENC.instruction("spending_limit_use", names, {"amount": 8, "decimals": 6, "memo": None}))
    assert d.effects == (
        Outflow(str(MINT), 8, VAULT, source, dest, "squads_spending_limit", programs.TOKEN_2022_PROGRAM),
    )
    assert d.args["destination"] == MERCHANT and d.args["mint"] == MINT


SPENDING_FAILURES = [
    ({"system_program": Pubkey.new_unique()}, 9, "not the System program"),
    ({"system_program": None}, 9, "needs the System program"),
    ({"vault_token_account": Pubkey.new_unique()}, 9, "token accounts given without a mint"),
    ({}, 6, "SOL has 9 decimals, not 6"),
    ({"mint": MINT, "vault_token_account": Pubkey.new_unique()}, 6, "needs both token accounts"),
    ({"mint": MINT, "vault_token_account": MINT, "destination_token_account": MINT, "token_program": SYSTEM}, 6,
     "neither SPL Token nor Token-2022"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "decimals", "match"), SPENDING_FAILURES, ids=[m for *_, m in SPENDING_FAILURES])
def test_spending_limit_use_refusals(change: dict[str, Pubkey | None], decimals: int, match: str) -> None:
    names: dict[str, Pubkey | None] = {
        "multisig": MULTISIG, "member": AGENT, "spending_limit": Pubkey.new_unique(), "vault": VAULT,
        "destination": MERCHANT, "system_program": SYSTEM, "mint": None, "vault_token_account": None,
        "destination_token_account": None, "token_program": None, **change,
    }  # fmt: skip
    with pytest.raises(DecodeError, match=match):
        decode_one(ENC.instruction("spending_limit_use", names, {"amount": 1, "decimals": decimals, "memo": None}))


def test_config_transaction_create_and_direct_config() -> None:
    new = Pubkey.new_unique()
    accounts = {"multisig": MULTISIG, "transaction": TX1, "creator": AGENT, "rent_payer": AGENT,
                "system_program": SYSTEM}  # fmt: skip
    actions = [
        ("add_member", {"new_member": {"key": new, "permissions": {"mask": 7}}}),
        ("change_threshold", {"new_threshold": 1}),
        ("set_rent_collector", {"new_rent_collector": None}),
    ]
    d = decode_one(ENC.instruction("config_transaction_create", accounts, {"actions": actions, "memo": None}))
    actions_size = (1 + 33) + (1 + 2) + (1 + 1)  # Borsh: the variant byte and its fields
    assert d.effects == (
        AuthorityChange(AGENT, MULTISIG, new, "squads:config:add_member"),
        AuthorityChange(AGENT, MULTISIG, None, "squads:config:change_threshold"),
        AuthorityChange(AGENT, MULTISIG, None, "squads:config:set_rent_collector"),
        Outflow(NATIVE_SOL, rent_exempt_minimum(85 + actions_size), AGENT, AGENT, TX1, "squads_rent"),
    )
    assert d.args["actions"][1] == ("change_threshold", {"new_threshold": 1})  # type: ignore[index]
    empty = decode_one(ENC.instruction("config_transaction_create", accounts, {"actions": [], "memo": None}))
    assert empty.effects == (
        AuthorityChange(AGENT, MULTISIG, None, "squads:config_transaction_create"),
        Outflow(NATIVE_SOL, rent_exempt_minimum(85), AGENT, AGENT, TX1, "squads_rent"),
    )
    direct_ix = ENC.instruction("multisig_add_member", {"multisig": MULTISIG, "config_authority": AGENT,
                                "rent_payer": None, "system_program": None},
                                {"new_member": {"key": new, "permissions": {"mask": 1}}, "memo": "x"})  # fmt: skip
    d = decode_one(direct_ix)
    assert d.effects == (AuthorityChange(AGENT, MULTISIG, new, "squads:multisig_add_member"),)
    assert d.args["memo"] == "x"


def test_multisig_create_v2_with_many_members_and_no_options_decodes() -> None:
    """Each member takes exactly 33 bytes (key and permission mask): the member count's room check must not ask
    for more, which ten members followed by only six bytes (the time lock and two empty options) would not have."""
    members = [{"key": Pubkey.new_unique(), "permissions": {"mask": 7}} for _ in range(10)]
    args = {"config_authority": None, "threshold": 2, "members": members, "time_lock": 0, "rent_collector": None,
            "memo": None}  # fmt: skip
    accounts: dict[str, Pubkey | None] = {n: Pubkey.new_unique() for n in ENC.account_names("multisig_create_v2")}
    d = decode_one(ENC.instruction("multisig_create_v2", accounts, args))
    assert d.args["members"] == tuple({"key": m["key"], "permissions": 7} for m in members)
    assert (d.args["threshold"], d.args["time_lock"], d.args["rent_collector"]) == (2, 0, None)
    assert (d.args["multisig"], d.args["create_key"], d.args["creator"]) == (
        accounts["multisig"],
        accounts["create_key"],
        accounts["creator"],
    )
    assert d.effects == (Restricted(accounts["creator"], "squads:multisig_create_v2"),)


RESTRICTED_SIGNERS = {
    "program_config_init": "initializer",
    "program_config_set_authority": "authority",
    "program_config_set_multisig_creation_fee": "authority",
    "program_config_set_treasury": "authority",
    "transaction_buffer_create": "creator",
    "transaction_buffer_extend": "creator",
    "transaction_buffer_close": "creator",
    "batch_create": "creator",
    "multisig_create": None,  # its one account is a placeholder: nobody signs for it
}


@pytest.mark.parametrize("name", sorted(RESTRICTED_SIGNERS))
def test_restricted_instructions_name_their_signer(name: str) -> None:
    ix = sample_instruction(name)
    signer_name = RESTRICTED_SIGNERS[name]
    names = ENC.account_names(name)
    signer = None if signer_name is None else ix.accounts[names.index(signer_name)].pubkey
    d = decode_one(ix)
    assert d.args["signer"] == signer
    assert d.effects == (Restricted(signer, f"squads:{name}"),)


@pytest.mark.parametrize(
    "name",
    ["config_transaction_accounts_close", "vault_transaction_accounts_close", "vault_batch_transaction_account_close",
     "batch_accounts_close"],
)  # fmt: skip
def test_permissionless_closes_name_their_multisig(name: str) -> None:
    """The evaluator allows Squads instructions only on the wallet's own multisig, read from ``args``."""
    d = decode_one(sample_instruction(name))
    assert dict(d.args) == {"multisig": MULTISIG} and d.effects == ()


def test_config_transaction_execute_without_a_rent_payer_changes_only_through_the_member() -> None:
    accounts = {"multisig": MULTISIG, "member": AGENT, "proposal": squads_proposal_address(MULTISIG, 7),
                "transaction": squads_transaction_address(MULTISIG, 7), "rent_payer": None,
                "system_program": None}  # fmt: skip
    d = decode_one(ENC.instruction("config_transaction_execute", accounts, None))
    assert d.args["rent_payer"] is None
    assert d.effects == (AuthorityChange(AGENT, MULTISIG, None, "squads:config_transaction_execute"),)


def test_votes_and_proposal_create() -> None:
    proposal = squads_proposal_address(MULTISIG, 1)
    votes = {"multisig": MULTISIG, "member": AGENT, "proposal": proposal}
    assert decode_one(ENC.instruction("proposal_approve", votes, {"memo": None})).effects == (Opaque(UNSEEN),)
    reject = decode_one(ENC.instruction("proposal_reject", votes, {"memo": "no"}))
    assert reject.effects == (Restricted(AGENT, "squads:proposal_reject"),) and reject.args["memo"] == "no"
    create = ENC.instruction(
        "proposal_create",
        {"multisig": MULTISIG, "proposal": proposal, "creator": AGENT, "rent_payer": AGENT, "system_program": SYSTEM},
        {"transaction_index": 1, "draft": False},
    )
    assert decode_one(create).args["transaction_index"] == 1
    wrong = Instruction(SQ, ENC.data("proposal_create", {"transaction_index": 2, "draft": False}), create.accounts)
    with pytest.raises(DecodeError, match="does not derive from"):
        decode_one(wrong)


# ---------------------------------------------------------------------------------------------------------------
# Linking approvals to a vault transaction created in the same transaction.


def _flow(index: int = 1, *, message: bytes | None = None) -> list[Instruction]:
    proposal = squads_proposal_address(MULTISIG, index)
    create = vault_create(message or compile_vault_message(VAULT, [pay(VAULT, MERCHANT, 5)]))
    propose = ENC.instruction(
        "proposal_create",
        {"multisig": MULTISIG, "proposal": proposal, "creator": AGENT, "rent_payer": AGENT, "system_program": SYSTEM},
        {"transaction_index": index, "draft": False},
    )
    approve = ENC.instruction("proposal_approve", {"multisig": MULTISIG, "member": AGENT, "proposal": proposal},
                              {"memo": None})  # fmt: skip
    execute = ENC.instruction(
        "vault_transaction_execute",
        {
            "multisig": MULTISIG,
            "proposal": proposal,
            "transaction": squads_transaction_address(MULTISIG, index),
            "member": AGENT,
        },
        remaining=[AccountMeta(VAULT, False, True), AccountMeta(MERCHANT, False, True)],
    )
    return [create, propose, approve, execute]


def test_approval_of_a_transaction_created_here_is_benign() -> None:
    create, _propose, approve, execute = decode_all(*_flow())
    assert approve.effects == () and execute.effects == ()
    assert create.inner[0].effects[0] == Outflow(NATIVE_SOL, 5, VAULT, VAULT, MERCHANT, "transfer")


def test_approval_stays_opaque_without_the_matching_create() -> None:
    create, propose, approve, execute = _flow()
    assert decode_all(approve)[0].effects == (Opaque(UNSEEN),)
    assert decode_all(propose, approve, execute)[1].effects == (Opaque(UNSEEN),)
    # The proposal is for index 2, whose transaction is not the one created here.
    _, other_propose, other_approve, other_execute = _flow(2)
    decoded = decode_all(create, other_propose, other_approve, other_execute)
    assert decoded[2].effects == decoded[3].effects == (Opaque(UNSEEN),)
    # A create whose message could not be judged links nothing.
    lookups = encode_transaction_message((1, 1, 0), [VAULT, SYSTEM], [(1, b"\x00", b"")],
                                         [(Pubkey.new_unique(), b"\x00", b"")])  # fmt: skip
    decoded = decode_all(*_flow(message=lookups))
    assert decoded[2].effects == (Opaque(UNSEEN),)


# ---------------------------------------------------------------------------------------------------------------
# Vault message refusals.

K = [VAULT, SYSTEM, MERCHANT]
MESSAGE_FAILURES = [
    (encode_transaction_message((4, 1, 0), K, []), "4 signers but only 3 account keys"),
    (encode_transaction_message((1, 2, 0), K, []), "more writable signers than signers"),
    (encode_transaction_message((1, 1, 3), K, []), "more writable non-signers than non-signer keys"),
    (encode_transaction_message((1, 1, 1), K, [(3, b"", b"")]), "program id index 3 is out of range"),
    (encode_transaction_message((1, 1, 1), K, [(1, b"\x00\x07", b"")]), "account index 7 is out of range"),
    (encode_transaction_message((1, 1, 1), [VAULT, SYSTEM, VAULT], []), "appears more than once"),
    (encode_transaction_message((1, 1, 1), K, []) + b"\x00", "transaction message: 1 trailing bytes"),
    (encode_transaction_message((1, 1, 1), K, [])[:-1], "data too short for address_table_lookups length"),
    (encode_transaction_message((1, 1, 1), K, [(1, b"\x00\x02", b"\x02\x00\x00\x00")]),
     "inner instruction 0: transfer: data is 4 bytes, expected exactly 12"),
]  # fmt: skip


@pytest.mark.parametrize(("message", "match"), MESSAGE_FAILURES, ids=[m for _, m in MESSAGE_FAILURES])
def test_vault_message_refusals(message: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match) as info:
        decode_all(pay(AGENT, MERCHANT, 1), vault_create(message))
    assert info.value.instruction_index == 1


def test_inner_plugin_decoder_failures_are_decode_errors() -> None:
    plugin = Pubkey.new_unique()

    def broken(index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes) -> DecodedInstruction:
        raise KeyError("bug")

    def misnumbered(index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes) -> Any:
        return DecodedInstruction(index + 1, program_id, "p", "p", accounts, {}, ())

    message = compile_vault_message(VAULT, [Instruction(plugin, b"", [])])
    raw = unsigned_tx(Message.new_with_blockhash([vault_create(message)], AGENT, Hash.default()))
    for decoder, match in ((broken, "failed"), (misnumbered, "returned a malformed result")):
        registry = default_registry()
        registry.register(plugin, decoder)  # later registrations apply inside vault messages
        with pytest.raises(DecodeError, match=rf"inner instruction 0: decoder for program {plugin} {match}"):
            decode_transaction(raw, registry=registry)


ARG_FAILURES = [
    ("proposal_create", ENC.discriminator("proposal_create") + bytes(8) + b"\x02", 5, "draft is not a bool"),
    ("proposal_approve", ENC.discriminator("proposal_approve") + b"\x05", 3, "memo has an invalid option tag 5"),
    ("proposal_approve", ENC.discriminator("proposal_approve") + b"\x02", 3, "memo has an invalid option tag 2"),
    ("proposal_approve", ENC.discriminator("proposal_approve") + b"\x01\x01\x00\x00\x00\xff", 3, "memo is not UTF-8"),
    ("config_transaction_create", ENC.discriminator("config_transaction_create") + b"\xff\xff\x00\x00", 5,
     "actions: 65535 items do not fit"),
    ("config_transaction_create", ENC.discriminator("config_transaction_create") + b"\x03\x00\x00\x00\x00\x00", 5,
     "actions: 3 items do not fit"),  # each action takes at least a byte: three cannot fit in the two left
    ("config_transaction_create", ENC.discriminator("config_transaction_create") + b"\x01\x00\x00\x00\x09\x00", 5,
     "unknown config action 9"),
    ("multisig_add_spending_limit", ENC.discriminator("multisig_add_spending_limit") + bytes(32) + b"\x00"
     + bytes(32) + bytes(8) + b"\x04", 5, "unknown period 4"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "data", "count", "match"), ARG_FAILURES, ids=[a[-1] for a in ARG_FAILURES])
def test_argument_refusals(name: str, data: bytes, count: int, match: str) -> None:
    with pytest.raises(DecodeError, match=rf"{name}: {match}"):
        direct(data, count)


# ---------------------------------------------------------------------------------------------------------------
# Garbage never escapes as anything but DecodeError.

PREFIXES = [discriminator(name) for name in NAMES]
VALID = [bytes(sample_instruction(name).data) for name in NAMES]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 12))
def test_garbage_data_raises_only_decode_errors(data: bytes, count: int) -> None:
    with contextlib.suppress(DecodeError):
        direct(data, count)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(PREFIXES), st.binary(max_size=300), st.integers(0, 12))
def test_garbage_arguments_raise_only_decode_errors(prefix: bytes, tail: bytes, count: int) -> None:
    with contextlib.suppress(DecodeError):
        direct(prefix + tail, count)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4))
def test_mutated_valid_data_raises_only_decode_errors(data: bytes, edits: list[tuple[int, int]]) -> None:
    mutated = bytearray(data)
    for position, value in edits:
        if position < len(mutated):
            mutated[position] = value
    with contextlib.suppress(DecodeError):
        direct(bytes(mutated), 10)


@settings(max_examples=60, deadline=None)
@given(
    lamports=st.lists(st.integers(1, 10**9), min_size=1, max_size=6),
    memo=st.text(max_size=100),
    ephemeral=st.integers(0, 3),
)
def test_vault_transaction_rent_matches_the_idl_layout(lamports: list[int], memo: str, ephemeral: int) -> None:
    """The rent counted for a vault transaction is that of the account the program makes: the IDL's
    ``VaultTransaction`` layout holding the stored message (u32 vector lengths, not the carried compact ones)."""
    inner = [pay(VAULT, MERCHANT, amount) for amount in lamports]
    inner.append(Instruction(programs.MEMO_V2_PROGRAM, memo.encode(), [AccountMeta(VAULT, True, False)]))
    message = compile_vault_message(VAULT, inner)
    rents = [e for e in decode_one(vault_create(message, ephemeral=ephemeral)).effects if isinstance(e, Outflow)]
    assert rents == [Outflow(NATIVE_SOL, vault_transaction_rent(message, ephemeral), AGENT, AGENT, TX1,
                             "squads_rent")]  # fmt: skip


def test_proposal_rent_is_sized_for_ten_members() -> None:
    create = ENC.instruction(
        "proposal_create",
        {"multisig": MULTISIG, "proposal": squads_proposal_address(MULTISIG, 1), "creator": AGENT,
         "rent_payer": AGENT, "system_program": SYSTEM},
        {"transaction_index": 1, "draft": False},
    )  # fmt: skip
    d = decode_one(create)
    proposal = squads_proposal_address(MULTISIG, 1)
    assert d.effects == (Outflow(NATIVE_SOL, proposal_rent(10), AGENT, AGENT, proposal, "squads_rent"),)
    assert proposal_rent(10) > proposal_rent(2)  # the product's 2-member multisig is over-counted, never under
