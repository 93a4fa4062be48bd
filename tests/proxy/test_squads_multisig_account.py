"""parent_proxy.squads_multisig_account and Chain.multisig_account: accounts written by the IDL-driven encoder of
tests/support/squads_encoder.py (the IDL's ``Multisig`` account type), read back through the parser, LiteSVM and
the RPC adapter (an httpx MockTransport in front of selfhost.local_chain's JSON-RPC methods over a real LiteSVM)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import struct
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.account import Account
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey

from parent_proxy.chain import AccountNotFound, ChainError, LiteSvmChain, RpcChain
from parent_proxy.squads_multisig_account import (
    MAX_ACCOUNT_BYTES,
    Member,
    MultisigAccount,
    MultisigAccountError,
    parse_multisig_account,
)
from policies import programs
from selfhost import local_chain
from tests.support.squads_encoder import PROGRAM_ID, SquadsEncoder, load_idl, snake

ENC = SquadsEncoder()
DISCRIMINATOR = hashlib.sha256(b"account:Multisig").digest()[:8]
TOKEN_PROGRAM = programs.TOKEN_PROGRAM
U64 = st.integers(0, 2**64 - 1)


def pda(create_key: Pubkey) -> tuple[Pubkey, int]:
    return Pubkey.find_program_address([b"multisig", b"multisig", bytes(create_key)], PROGRAM_ID)


def multisig_size(members: int) -> int:
    """``Multisig::size`` (state/multisig.rs): the rent collector's 32 bytes are always reserved."""
    return 8 + 32 + 32 + 2 + 4 + 8 + 8 + 1 + 32 + 1 + 4 + members * 33


def sorted_keys(count: int) -> list[Pubkey]:
    return sorted((Pubkey.new_unique() for _ in range(count)), key=bytes)


def fields(**overrides: Any) -> dict[str, Any]:
    create_key = overrides.pop("create_key", Pubkey.new_unique())
    _, bump = pda(create_key)
    owner, agent = sorted_keys(2)
    members = [{"key": owner, "permissions": {"mask": 7}}, {"key": agent, "permissions": {"mask": 2}}]
    value = {"create_key": create_key, "config_authority": Pubkey.default(), "threshold": 2, "time_lock": 0,
             "transaction_index": 7, "stale_transaction_index": 3, "rent_collector": None, "bump": bump,
             "members": members}  # fmt: skip
    value.update(overrides)
    return value


def encode(value: dict[str, Any], *, pad_to_size: bool = True) -> bytes:
    """Anchor account bytes: discriminator, the IDL's Borsh layout, then (like the program) the reserved space."""
    data = DISCRIMINATOR + ENC.defined("Multisig", value)
    return data.ljust(multisig_size(len(value["members"])), b"\x00") if pad_to_size else data


def expected(value: dict[str, Any]) -> MultisigAccount:
    members = tuple(Member(m["key"], m["permissions"]["mask"]) for m in value["members"])
    return MultisigAccount(
        address=pda(value["create_key"])[0],
        create_key=value["create_key"],
        config_authority=value["config_authority"],
        threshold=value["threshold"],
        time_lock=value["time_lock"],
        transaction_index=value["transaction_index"],
        stale_transaction_index=value["stale_transaction_index"],
        rent_collector=value["rent_collector"],
        bump=value["bump"],
        members=members,
    )


def parse(value: dict[str, Any], data: bytes | None = None, *, owner: Pubkey = PROGRAM_ID) -> MultisigAccount:
    return parse_multisig_account(pda(value["create_key"])[0], owner, encode(value) if data is None else data)


# -- the layout ------------------------------------------------------------------------------------------------------


def test_the_idl_account_is_the_layout_the_parser_reads() -> None:
    """The parser's docstring layout is the IDL's ``Multisig`` account, field by field (names and types)."""
    idl = load_idl()
    (account,) = [a for a in idl["accounts"] if a["name"] == "Multisig"]
    assert [(snake(f["name"]), f["type"]) for f in account["type"]["fields"]] == [
        ("create_key", "publicKey"), ("config_authority", "publicKey"), ("threshold", "u16"), ("time_lock", "u32"),
        ("transaction_index", "u64"), ("stale_transaction_index", "u64"), ("rent_collector", {"option": "publicKey"}),
        ("bump", "u8"), ("members", {"vec": {"defined": "Member"}}),
    ]  # fmt: skip
    types = {t["name"]: t["type"] for t in idl["types"]}
    assert types["Member"]["fields"] == [{"name": "key", "type": "publicKey"},
                                         {"name": "permissions", "type": {"defined": "Permissions"}}]  # fmt: skip
    assert types["Permissions"]["fields"] == [{"name": "mask", "type": "u8"}]


@pytest.mark.parametrize("members", [1, 2, 3, 10])
def test_round_trip_at_the_programs_account_size(members: int) -> None:
    value = fields(members=[{"key": k, "permissions": {"mask": 7}} for k in sorted_keys(members)])
    data = encode(value)
    assert len(data) == multisig_size(members)  # 32 trailing bytes: the unset rent collector's reserved space
    assert parse(value, data) == expected(value)


def test_round_trip_with_a_rent_collector_and_grown_space() -> None:
    collector = Pubkey.new_unique()
    value = fields(rent_collector=collector, transaction_index=2**64 - 1, stale_transaction_index=2**64 - 2,
                   threshold=65535, time_lock=2**32 - 1, config_authority=Pubkey.new_unique())  # fmt: skip
    account = parse(value)
    assert account == expected(value) and account.rent_collector == collector
    # Realloc grows by ten members at a time; a removed member's bytes stay behind: neither is an error.
    assert parse(value, encode(value) + bytes(330)) == expected(value)
    assert parse(value, encode(value) + b"\xff" * 33) == expected(value)


def test_member_lookup_and_permissions() -> None:
    value = fields()
    account = parse(value)
    owner, agent = (m["key"] for m in value["members"])
    assert account.member(owner) == Member(owner, 7) and account.member(Pubkey.new_unique()) is None
    assert account.member(agent) is not None and account.member(agent).has(2)  # type: ignore[union-attr]
    assert not Member(agent, 2).has(1) and Member(owner, 7).has(1 | 2 | 4)


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(0, 12),
    masks=st.lists(st.integers(0, 7), min_size=12, max_size=12),
    numbers=st.tuples(st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1), U64, U64),
    collector=st.booleans(),
    slack=st.binary(max_size=80),
)
def test_round_trip_property(
    count: int, masks: list[int], numbers: tuple[int, int, int, int], collector: bool, slack: bytes
) -> None:
    threshold, time_lock, index, stale = numbers
    value = fields(
        members=[{"key": k, "permissions": {"mask": masks[i]}} for i, k in enumerate(sorted_keys(count))],
        threshold=threshold, time_lock=time_lock, transaction_index=index, stale_transaction_index=stale,
        rent_collector=Pubkey.new_unique() if collector else None,
    )  # fmt: skip
    assert parse(value, encode(value, pad_to_size=False) + slack) == expected(value)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), head=st.booleans())
def test_any_bytes_parse_or_raise_the_documented_error(data: bytes, head: bool) -> None:
    raw = DISCRIMINATOR + data if head else data
    with contextlib.suppress(MultisigAccountError):  # anything else fails the test
        parse_multisig_account(Pubkey.new_unique(), PROGRAM_ID, raw)


# -- refusals --------------------------------------------------------------------------------------------------------


def test_refuses_an_account_of_another_program() -> None:
    value = fields()
    with pytest.raises(MultisigAccountError, match="not owned by the Squads v4 program"):
        parse(value, owner=TOKEN_PROGRAM)


def test_refuses_a_wrong_discriminator() -> None:
    value = fields()
    data = encode(value)
    for other in (hashlib.sha256(b"account:Proposal").digest()[:8], bytes(8)):
        with pytest.raises(MultisigAccountError, match="wrong discriminator"):
            parse(value, other + data[8:])


def test_refuses_every_truncation() -> None:
    value = fields(rent_collector=Pubkey.new_unique())
    data = encode(value, pad_to_size=False)
    for length in range(len(data)):
        with pytest.raises(MultisigAccountError, match=r"too short|more than the account holds"):
            parse(value, data[:length])


def test_refuses_a_bad_option_tag() -> None:
    value = fields()
    data = bytearray(encode(value))
    tag_at = 8 + 32 + 32 + 2 + 4 + 8 + 8
    assert data[tag_at] == 0
    for tag in (2, 255):
        data[tag_at] = tag
        with pytest.raises(MultisigAccountError, match=f"bad option tag {tag}"):
            parse(value, bytes(data))


def test_refuses_a_member_count_beyond_the_data() -> None:
    value = fields()
    data = bytearray(encode(value, pad_to_size=False))
    count_at = 8 + 32 + 32 + 2 + 4 + 8 + 8 + 1 + 1
    assert struct.unpack_from("<I", data, count_at)[0] == 2
    for count in (3, 2**16 - 1, 2**16, 2**32 - 1):
        struct.pack_into("<I", data, count_at, count)
        with pytest.raises(MultisigAccountError, match=f"member count {count} is more than the account holds"):
            parse(value, bytes(data))
    # A count the data holds but over the program's u16 bound.
    struct.pack_into("<I", data, count_at, 2**16)
    padded = bytes(data) + bytes(2**16 * 33)
    with pytest.raises(MultisigAccountError, match="member count 65536"):
        parse(value, padded)


def test_refuses_an_oversized_account() -> None:
    value = fields()
    with pytest.raises(MultisigAccountError, match="larger than any Solana account"):
        parse(value, encode(value).ljust(MAX_ACCOUNT_BYTES + 1, b"\x00"))


def test_refuses_unknown_permissions() -> None:
    owner, agent = sorted_keys(2)
    value = fields(members=[{"key": owner, "permissions": {"mask": 8}}, {"key": agent, "permissions": {"mask": 2}}])
    with pytest.raises(MultisigAccountError, match="unknown permissions"):
        parse(value)


def test_refuses_unsorted_or_duplicate_members() -> None:
    low, high = sorted_keys(2)
    for keys in ([high, low], [low, low]):
        value = fields(members=[{"key": k, "permissions": {"mask": 7}} for k in keys])
        with pytest.raises(MultisigAccountError, match="not sorted and unique"):
            parse(value)


def test_refuses_an_address_that_is_not_the_multisig_pda() -> None:
    value = fields()
    data = encode(value)
    with pytest.raises(MultisigAccountError, match="not the multisig PDA"):
        parse_multisig_account(Pubkey.new_unique(), PROGRAM_ID, data)
    # The right address with a non-canonical bump (what the program never stores).
    other = fields(create_key=value["create_key"], bump=(value["bump"] - 1) % 256)
    with pytest.raises(MultisigAccountError, match="not the multisig PDA"):
        parse(other)
    # Another multisig's bytes at this address.
    with pytest.raises(MultisigAccountError, match="not the multisig PDA"):
        parse(value, encode(fields()))


# -- LiteSvmChain ----------------------------------------------------------------------------------------------------


def install(svm: LiteSVM, value: dict[str, Any], *, owner: Pubkey = PROGRAM_ID) -> Pubkey:
    address = pda(value["create_key"])[0]
    data = encode(value)
    svm.set_account(address, Account(svm.minimum_balance_for_rent_exemption(len(data)), data, owner, False, 0))
    return address


def test_litesvm_chain_reads_a_multisig() -> None:
    svm = LiteSVM()
    value = fields()
    chain = LiteSvmChain(svm)
    assert asyncio.run(chain.multisig_account(install(svm, value))) == expected(value)


def test_litesvm_chain_refuses_missing_foreign_and_malformed_accounts() -> None:
    svm = LiteSVM()
    chain = LiteSvmChain(svm)
    with pytest.raises(AccountNotFound, match="multisig account not found"):  # a ChainError that says "missing"
        asyncio.run(chain.multisig_account(pda(Pubkey.new_unique())[0]))
    foreign = install(svm, fields(), owner=TOKEN_PROGRAM)
    with pytest.raises(ChainError, match="not owned by the Squads v4 program") as refused:
        asyncio.run(chain.multisig_account(foreign))
    assert not isinstance(refused.value, AccountNotFound)  # there, but not a multisig: not "missing"
    value = fields()
    address = pda(value["create_key"])[0]
    data = b"\x00" * 8 + encode(value)[8:]
    svm.set_account(address, Account(10**9, data, PROGRAM_ID, False, 0))
    with pytest.raises(ChainError, match="wrong discriminator") as caught:
        asyncio.run(chain.multisig_account(address))
    assert isinstance(caught.value.__cause__, MultisigAccountError)


# -- RpcChain --------------------------------------------------------------------------------------------------------


def local_rpc(backend: local_chain.LocalChain, seen: list[dict[str, Any]]) -> httpx.AsyncClient:
    """An RpcChain client whose transport answers with selfhost.local_chain's methods (a real LiteSVM behind)."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=local_chain.handle_body(backend, request.content))

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


def test_rpc_chain_reads_a_multisig_with_get_account_info() -> None:
    backend = local_chain.LocalChain()
    value = fields()
    address = install(backend.svm, value)
    seen: list[dict[str, Any]] = []

    async def read() -> MultisigAccount:
        async with local_rpc(backend, seen) as client:
            return await RpcChain(client, "http://rpc.invalid/").multisig_account(address)

    assert asyncio.run(read()) == expected(value)
    assert [(c["method"], c["params"]) for c in seen] == [
        ("getAccountInfo", [str(address), {"encoding": "base64", "commitment": "confirmed"}])
    ]

    async def read_missing() -> MultisigAccount:
        async with local_rpc(backend, seen) as client:
            return await RpcChain(client, "http://rpc.invalid/").multisig_account(pda(Pubkey.new_unique())[0])

    with pytest.raises(AccountNotFound, match="multisig account not found"):
        asyncio.run(read_missing())
    foreign = install(backend.svm, fields(), owner=TOKEN_PROGRAM)

    async def read_foreign() -> MultisigAccount:
        async with local_rpc(backend, seen) as client:
            return await RpcChain(client, "http://rpc.invalid/").multisig_account(foreign)

    with pytest.raises(ChainError, match="not owned by the Squads v4 program") as refused:
        asyncio.run(read_foreign())
    assert not isinstance(refused.value, AccountNotFound)


def _answer(result: Any = None, *, error: Any = None, status: int = 200) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        body = {"jsonrpc": "2.0", "id": json.loads(request.content)["id"]}
        body.update({"error": error} if error is not None else {"result": result})
        return httpx.Response(status, json=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


def _rpc_read(client: httpx.AsyncClient, address: Pubkey) -> MultisigAccount:
    async def read() -> MultisigAccount:
        async with client:
            return await RpcChain(client, "https://user:secret@rpc.invalid/").multisig_account(address)

    return asyncio.run(read())


def test_rpc_chain_refuses_malformed_answers() -> None:
    value = fields()
    address = pda(value["create_key"])[0]
    good = {"owner": str(PROGRAM_ID), "data": [base64.b64encode(encode(value)).decode(), "base64"]}
    assert _rpc_read(_answer({"context": {"slot": 1}, "value": good}), address) == expected(value)
    cases: list[tuple[Any, str]] = [
        ("nonsense", "getAccountInfo: malformed answer"),
        ({"context": {"slot": 1}}, "getAccountInfo: malformed answer"),
        ({"value": {"owner": str(PROGRAM_ID)}}, "malformed account"),
        ({"value": {**good, "owner": "not a key"}}, "malformed account"),
        ({"value": {**good, "data": [good["data"][0], "base58"]}}, "malformed account"),
        ({"value": {**good, "data": ["!!!", "base64"]}}, "malformed account"),
        ({"value": {**good, "data": []}}, "malformed account"),
        ({"value": {**good, "data": [7, "base64"]}}, "malformed account"),
        ({"value": {**good, "data": [base64.b64encode(b"short").decode(), "base64"]}}, "too short"),
    ]
    for result, message in cases:
        with pytest.raises(ChainError, match=message) as caught:
            _rpc_read(_answer(result), address)
        assert "secret" not in str(caught.value)
        assert not isinstance(caught.value, AccountNotFound)  # a bad answer never reads as "no such account"
    with pytest.raises(ChainError, match="RPC getAccountInfo error: node is behind") as caught:
        _rpc_read(_answer(error={"code": -32005, "message": "node is behind"}), address)
    assert not isinstance(caught.value, AccountNotFound)
    with pytest.raises(ChainError, match="RPC getAccountInfo failed: HTTPStatusError") as caught:
        _rpc_read(_answer(status=500), address)
    assert "secret" not in str(caught.value) and not isinstance(caught.value, AccountNotFound)
    with pytest.raises(AccountNotFound, match="multisig account not found"):  # the node's answer: none there
        _rpc_read(_answer({"context": {"slot": 1}, "value": None}), address)
