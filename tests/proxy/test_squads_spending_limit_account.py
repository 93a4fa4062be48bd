"""parent_proxy.squads_spending_limit_account and Chain.spending_limits: accounts written by the IDL-driven encoder of
tests/support/squads_encoder.py (the IDL's ``SpendingLimit`` account type, through
tests/support/squads_rotation.put_spending_limit), read back through the parser, LiteSVM and the RPC adapter (an
httpx MockTransport answering ``getProgramAccounts`` from a real LiteSVM, applying the request's filters)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import struct
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.account import Account
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey

from parent_proxy.chain import MAX_SPENDING_LIMITS, ChainError, LiteSvmChain, RpcChain
from parent_proxy.squads_spending_limit_account import (
    MAX_ACCOUNT_BYTES,
    SPENDING_LIMIT_DISCRIMINATOR,
    SpendingLimitAccount,
    SpendingLimitAccountError,
    parse_spending_limit_account,
    spending_limit_address,
)
from policies import programs
from tests.support.squads_encoder import PROGRAM_ID, anchor_discriminator, load_idl, snake
from tests.support.squads_rotation import put_multisig, put_spending_limit, spending_limit_account_data

TOKEN_PROGRAM = programs.TOKEN_PROGRAM
DISCRIMINATOR = hashlib.sha256(b"account:SpendingLimit").digest()[:8]
U64 = st.integers(0, 2**64 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
MEMBERS_AT = 8 + 32 + 32 + 1 + 32 + 8 + 1 + 8 + 8 + 1
"""Offset of the member count (``SpendingLimit::size`` without the two vectors, minus the two counts)."""
PERIOD_AT = 8 + 32 + 32 + 1 + 32 + 8


def pda(multisig: Pubkey, create_key: Pubkey) -> tuple[Pubkey, int]:
    return Pubkey.find_program_address([b"multisig", bytes(multisig), b"spending_limit", bytes(create_key)], PROGRAM_ID)


def size(members: int, destinations: int) -> int:
    """``SpendingLimit::size`` (state/spending_limit.rs)."""
    return 8 + 32 + 32 + 1 + 32 + 8 + 1 + 8 + 8 + 1 + 4 + members * 32 + 4 + destinations * 32


def sorted_keys(count: int) -> list[Pubkey]:
    return sorted((Pubkey.new_unique() for _ in range(count)), key=bytes)


def fields(**overrides: Any) -> dict[str, Any]:
    """Arguments of `spending_limit_account_data`."""
    value: dict[str, Any] = {"multisig": Pubkey.new_unique(), "create_key": Pubkey.new_unique(),
                             "members": sorted_keys(1), "mint": Pubkey.default(), "amount": 5 * 10**8, "period": 1,
                             "destinations": [Pubkey.new_unique()], "vault_index": 0, "remaining_amount": 123,
                             "last_reset": 1_700_000_123}  # fmt: skip
    value.update(overrides)
    return value


def encode(value: dict[str, Any]) -> bytes:
    rest = {k: v for k, v in value.items() if k not in ("multisig", "create_key")}
    return spending_limit_account_data(value["multisig"], value["create_key"], **rest)


def address_of(value: dict[str, Any]) -> Pubkey:
    return pda(value["multisig"], value["create_key"])[0]


def expected(value: dict[str, Any]) -> SpendingLimitAccount:
    address, bump = pda(value["multisig"], value["create_key"])
    return SpendingLimitAccount(
        address=address,
        multisig=value["multisig"],
        create_key=value["create_key"],
        vault_index=value["vault_index"],
        mint=value["mint"],
        amount=value["amount"],
        period=value["period"],
        remaining_amount=value["remaining_amount"],
        last_reset=value["last_reset"],
        bump=value.get("bump", bump),
        members=tuple(sorted(value["members"], key=bytes)),
        destinations=tuple(value["destinations"]),
    )


def parse(value: dict[str, Any], data: bytes | None = None, *, owner: Pubkey = PROGRAM_ID) -> SpendingLimitAccount:
    return parse_spending_limit_account(address_of(value), owner, encode(value) if data is None else data)


# -- the layout ------------------------------------------------------------------------------------------------------


def test_the_idl_account_is_the_layout_the_parser_reads() -> None:
    """The parser's docstring layout is the IDL's ``SpendingLimit`` account, field by field (names and types)."""
    idl = load_idl()
    (account,) = [a for a in idl["accounts"] if a["name"] == "SpendingLimit"]
    assert [(snake(f["name"]), f["type"]) for f in account["type"]["fields"]] == [
        ("multisig", "publicKey"), ("create_key", "publicKey"), ("vault_index", "u8"), ("mint", "publicKey"),
        ("amount", "u64"), ("period", {"defined": "Period"}), ("remaining_amount", "u64"), ("last_reset", "i64"),
        ("bump", "u8"), ("members", {"vec": "publicKey"}), ("destinations", {"vec": "publicKey"}),
    ]  # fmt: skip
    (period,) = [t for t in idl["types"] if t["name"] == "Period"]
    assert period["type"] == {"kind": "enum", "variants": [{"name": n} for n in ("OneTime", "Day", "Week", "Month")]}


def test_discriminator_and_address_known_answers() -> None:
    assert SPENDING_LIMIT_DISCRIMINATOR == anchor_discriminator("account", "SpendingLimit") == DISCRIMINATOR
    multisig, create_key = Pubkey.new_unique(), Pubkey.new_unique()
    assert spending_limit_address(multisig, create_key) == pda(multisig, create_key)
    assert spending_limit_address(multisig, create_key) != spending_limit_address(create_key, multisig)
    # A pinned answer: the program id and seeds, not just this file's own derivation.
    zero = Pubkey.default()
    address, bump = spending_limit_address(zero, zero)
    assert (address, bump) == Pubkey.find_program_address(
        [b"multisig", bytes(32), b"spending_limit", bytes(32)],
        Pubkey.from_string("SQDS4ep65T869zMMBKyuUq6aD6EgTu8psMjkvj52pCf"),
    )


@pytest.mark.parametrize(("members", "destinations", "period"), [(1, 0, 0), (1, 1, 1), (2, 3, 2), (10, 0, 3)])
def test_round_trip_at_the_programs_account_size(members: int, destinations: int, period: int) -> None:
    value = fields(members=sorted_keys(members), destinations=[Pubkey.new_unique() for _ in range(destinations)],
                   period=period, mint=Pubkey.new_unique(), vault_index=255)  # fmt: skip
    data = encode(value)
    assert len(data) == size(members, destinations)
    assert parse(value, data) == expected(value)


def test_round_trip_extremes_and_field_positions() -> None:
    value = fields(amount=2**64 - 1, remaining_amount=0, last_reset=-(2**63), vault_index=7, period=0,
                   members=sorted_keys(3), destinations=[])  # fmt: skip
    account = parse(value)
    assert account == expected(value)
    assert (account.amount, account.remaining_amount, account.last_reset) == (2**64 - 1, 0, -(2**63))
    data = encode(value)
    # The fields sit where the docstring says: spot-check a few raw offsets against the parsed values.
    assert data[8:40] == bytes(value["multisig"]) and data[40:72] == bytes(value["create_key"])
    assert data[72] == 7 and data[PERIOD_AT] == 0
    assert struct.unpack_from("<I", data, MEMBERS_AT)[0] == 3


def test_names() -> None:
    agent, other = Pubkey.new_unique(), Pubkey.new_unique()
    account = parse(fields(members=[agent, other]))
    assert account.names(agent) and account.names(other)
    assert not account.names(Pubkey.new_unique())
    # A destination is not a member.
    destination = Pubkey.new_unique()
    assert not parse(fields(members=[agent], destinations=[destination])).names(destination)


def test_invariants_are_not_the_parsers_business() -> None:
    """``SpendingLimit::invariant`` is enforced by the program at creation; whether a limit names a key does not
    depend on it, so an old account breaking it is still read (refusing it would hide the limit)."""
    key = Pubkey.new_unique()
    value = fields(members=[], amount=0)
    assert parse(value).members == ()
    value = fields(members=[key, key])
    assert parse(value).names(key)


@settings(max_examples=200, deadline=None)
@given(
    members=st.integers(0, 12),
    destinations=st.integers(0, 12),
    numbers=st.tuples(U64, U64, I64, st.integers(0, 255), st.integers(0, 3)),
)
def test_round_trip_property(members: int, destinations: int, numbers: tuple[int, int, int, int, int]) -> None:
    amount, remaining, last_reset, vault_index, period = numbers
    value = fields(members=sorted_keys(members), destinations=[Pubkey.new_unique() for _ in range(destinations)],
                   amount=amount, remaining_amount=remaining, last_reset=last_reset, vault_index=vault_index,
                   period=period, mint=Pubkey.new_unique())  # fmt: skip
    assert parse(value) == expected(value)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), head=st.booleans(), real_address=st.booleans())
def test_any_bytes_parse_or_raise_the_documented_error(data: bytes, head: bool, real_address: bool) -> None:
    raw = DISCRIMINATOR + data if head else data
    address = Pubkey.new_unique()
    if real_address and len(raw) >= 72:
        address = pda(Pubkey.from_bytes(raw[8:40]), Pubkey.from_bytes(raw[40:72]))[0]
    with contextlib.suppress(SpendingLimitAccountError):  # anything else fails the test
        parse_spending_limit_account(address, PROGRAM_ID, raw)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, size(2, 1) - 1), byte=st.integers(0, 255))
def test_any_one_byte_change_parses_or_raises_the_documented_error(position: int, byte: int) -> None:
    value = fields(members=sorted_keys(2), destinations=[Pubkey.new_unique()])
    data = bytearray(encode(value))
    data[position] = byte
    with contextlib.suppress(SpendingLimitAccountError):
        parse(value, bytes(data))


# -- refusals --------------------------------------------------------------------------------------------------------


def test_refuses_an_account_of_another_program() -> None:
    value = fields()
    with pytest.raises(SpendingLimitAccountError, match="not owned by the Squads v4 program"):
        parse(value, owner=TOKEN_PROGRAM)


def test_refuses_a_wrong_discriminator() -> None:
    value = fields()
    data = encode(value)
    for other in (anchor_discriminator("account", "Multisig"), bytes(8)):
        with pytest.raises(SpendingLimitAccountError, match="wrong discriminator"):
            parse(value, other + data[8:])


def test_refuses_every_truncation() -> None:
    value = fields(members=sorted_keys(2), destinations=[Pubkey.new_unique(), Pubkey.new_unique()])
    data = encode(value)
    for length in range(len(data)):
        with pytest.raises(SpendingLimitAccountError, match=r"too short|more than the account holds"):
            parse(value, data[:length])


def test_refuses_trailing_bytes() -> None:
    """The program creates the account at exactly ``SpendingLimit::size`` and never reallocates it."""
    value = fields()
    for extra in (b"\x00", bytes(32), b"\xff" * 33):
        with pytest.raises(SpendingLimitAccountError, match=f"{len(extra)} bytes after its fields"):
            parse(value, encode(value) + extra)


def test_refuses_a_bad_period() -> None:
    value = fields(period=3)
    data = bytearray(encode(value))
    assert data[PERIOD_AT] == 3
    assert parse(value, bytes(data)).period == 3
    for tag in (4, 5, 255):
        data[PERIOD_AT] = tag
        with pytest.raises(SpendingLimitAccountError, match=f"bad enum tag {tag}"):
            parse(value, bytes(data))


def test_refuses_a_member_count_beyond_the_data() -> None:
    value = fields(members=sorted_keys(2), destinations=[])
    data = bytearray(encode(value))
    assert struct.unpack_from("<I", data, MEMBERS_AT)[0] == 2
    for count in (3, 4, 2**16, 2**32 - 1):
        struct.pack_into("<I", data, MEMBERS_AT, count)
        with pytest.raises(SpendingLimitAccountError, match=f"member count {count} is more than the account holds"):
            parse(value, bytes(data))
    # A member count whose keys take the destination count's bytes: nothing left for the destination count.
    value = fields(members=[], destinations=[])
    data = bytearray(encode(value) + bytes(28))
    struct.pack_into("<I", data, MEMBERS_AT, 1)
    with pytest.raises(SpendingLimitAccountError, match="too short"):
        parse(value, bytes(data))


def test_refuses_a_destination_count_beyond_the_data() -> None:
    value = fields(members=sorted_keys(1), destinations=[Pubkey.new_unique()])
    data = bytearray(encode(value))
    count_at = MEMBERS_AT + 4 + 32
    assert struct.unpack_from("<I", data, count_at)[0] == 1
    for count in (2, 2**31, 2**32 - 1):
        struct.pack_into("<I", data, count_at, count)
        with pytest.raises(SpendingLimitAccountError, match=f"destination count {count} is more than"):
            parse(value, bytes(data))
    # A smaller count leaves bytes over.
    struct.pack_into("<I", data, count_at, 0)
    with pytest.raises(SpendingLimitAccountError, match="32 bytes after its fields"):
        parse(value, bytes(data))


def test_refuses_an_oversized_account() -> None:
    value = fields()
    with pytest.raises(SpendingLimitAccountError, match="larger than any Solana account"):
        parse(value, encode(value).ljust(MAX_ACCOUNT_BYTES + 1, b"\x00"))


def test_refuses_an_address_that_is_not_the_spending_limit_pda() -> None:
    value = fields()
    data = encode(value)
    with pytest.raises(SpendingLimitAccountError, match="not the spending limit PDA"):
        parse_spending_limit_account(Pubkey.new_unique(), PROGRAM_ID, data)
    # The right address with a non-canonical bump (what the program never stores).
    _, bump = pda(value["multisig"], value["create_key"])
    for other_bump in ((bump - 1) % 256, (bump + 1) % 256):
        with pytest.raises(SpendingLimitAccountError, match="not the spending limit PDA"):
            parse(value, encode({**value, "bump": other_bump}))
    # Another spending limit's bytes at this address: another create key, another multisig.
    for other in (fields(multisig=value["multisig"]), fields(create_key=value["create_key"])):
        with pytest.raises(SpendingLimitAccountError, match="not the spending limit PDA"):
            parse(value, encode(other))
    # The multisig PDA's seeds are not the spending limit's.
    multisig_pda = Pubkey.find_program_address([b"multisig", b"multisig", bytes(value["create_key"])], PROGRAM_ID)[0]
    with pytest.raises(SpendingLimitAccountError, match="not the spending limit PDA"):
        parse_spending_limit_account(multisig_pda, PROGRAM_ID, data)


# -- LiteSvmChain ----------------------------------------------------------------------------------------------------


def test_put_spending_limit_writes_the_encoders_bytes() -> None:
    svm = LiteSVM()
    multisig, create_key, agent = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    mint, destination = Pubkey.new_unique(), Pubkey.new_unique()
    address = put_spending_limit(svm, multisig, create_key, members=[agent], mint=mint, amount=42, period=2,
                                 destinations=[destination], vault_index=1)  # fmt: skip
    account = svm.get_account(address)
    assert account is not None and account.owner == PROGRAM_ID
    data = bytes(account.data)
    assert account.lamports == svm.minimum_balance_for_rent_exemption(len(data))
    parsed = parse_spending_limit_account(address, account.owner, data)
    assert (parsed.multisig, parsed.create_key, parsed.mint, parsed.amount, parsed.remaining_amount) == (
        multisig, create_key, mint, 42, 42)  # fmt: skip
    assert (parsed.period, parsed.vault_index, parsed.members, parsed.destinations) == (2, 1, (agent,), (destination,))


def test_litesvm_chain_lists_the_multisigs_spending_limits_only() -> None:
    svm = LiteSVM()
    owner, agent, other_agent = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    multisig = put_multisig(svm, Pubkey.new_unique(), [owner, agent])
    other_multisig = put_multisig(svm, Pubkey.new_unique(), [owner, other_agent])
    first = put_spending_limit(svm, multisig, Pubkey.new_unique(), members=[agent])
    second = put_spending_limit(svm, multisig, Pubkey.new_unique(), members=[agent, owner], mint=Pubkey.new_unique(),
                                amount=7, period=0, destinations=[Pubkey.new_unique()])  # fmt: skip
    put_spending_limit(svm, other_multisig, Pubkey.new_unique(), members=[other_agent])
    # The same bytes under another program are not the Squads program's accounts.
    foreign_value = fields(multisig=multisig)
    svm.set_account(address_of(foreign_value), Account(10**9, encode(foreign_value), TOKEN_PROGRAM, False, 0))
    chain = LiteSvmChain(svm)
    limits = asyncio.run(chain.spending_limits(multisig))
    assert [limit.address for limit in limits] == sorted([first, second], key=bytes)
    assert all(limit.multisig == multisig for limit in limits)
    assert [limit.names(agent) for limit in limits] == [True, True]
    assert [limit.names(owner) for limit in limits] == [limit.address == second for limit in limits]
    (other,) = asyncio.run(chain.spending_limits(other_multisig))
    assert other.names(other_agent) and not other.names(agent)
    assert asyncio.run(chain.spending_limits(Pubkey.new_unique())) == []


def test_litesvm_chain_refuses_a_malformed_spending_limit() -> None:
    svm = LiteSVM()
    multisig = Pubkey.new_unique()
    put_spending_limit(svm, multisig, Pubkey.new_unique(), members=[Pubkey.new_unique()])
    value = fields(multisig=multisig)
    data = bytearray(encode(value))
    data[PERIOD_AT] = 9
    svm.set_account(address_of(value), Account(10**9, bytes(data), PROGRAM_ID, False, 0))
    with pytest.raises(ChainError, match="bad enum tag 9") as caught:
        asyncio.run(LiteSvmChain(svm).spending_limits(multisig))
    assert isinstance(caught.value.__cause__, SpendingLimitAccountError)
    # Right bytes at an address that is not its PDA.
    svm = LiteSVM()
    svm.set_account(Pubkey.new_unique(), Account(10**9, encode(value), PROGRAM_ID, False, 0))
    with pytest.raises(ChainError, match="not the spending limit PDA"):
        asyncio.run(LiteSvmChain(svm).spending_limits(multisig))


def test_litesvm_chain_caps_the_number_of_spending_limits() -> None:
    svm = LiteSVM()
    multisig, agent = Pubkey.new_unique(), Pubkey.new_unique()
    for _ in range(MAX_SPENDING_LIMITS):
        put_spending_limit(svm, multisig, Pubkey.new_unique(), members=[agent])
    assert len(asyncio.run(LiteSvmChain(svm).spending_limits(multisig))) == MAX_SPENDING_LIMITS
    put_spending_limit(svm, multisig, Pubkey.new_unique(), members=[agent])
    with pytest.raises(ChainError, match=f"more than {MAX_SPENDING_LIMITS} spending limits"):
        asyncio.run(LiteSvmChain(svm).spending_limits(multisig))


# -- RpcChain --------------------------------------------------------------------------------------------------------


def answering(svm: LiteSVM, seen: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    """A getProgramAccounts node over ``svm``: applies the request's memcmp filters, answers base64 accounts."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        program, config = body["params"]
        filters = [(f["memcmp"]["offset"], base64.b64decode(f["memcmp"]["bytes"])) for f in config["filters"]]
        assert all(f["memcmp"]["encoding"] == "base64" for f in config["filters"])
        result = [
            {"pubkey": str(address),
             "account": {"lamports": account.lamports, "owner": str(account.owner), "executable": False,
                         "rentEpoch": 0, "space": len(account.data),
                         "data": [base64.b64encode(bytes(account.data)).decode(), "base64"]}}
            for address, account in svm.get_program_accounts(Pubkey.from_string(program))
            if all(bytes(account.data)[at : at + len(raw)] == raw for at, raw in filters)
        ]  # fmt: skip
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})

    return handle


def rpc_limits(
    handle: Callable[[httpx.Request], httpx.Response], multisig: Pubkey, *, commitment: str = "confirmed"
) -> list[SpendingLimitAccount]:
    async def read() -> list[SpendingLimitAccount]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
            chain = RpcChain(client, "https://user:secret@rpc.invalid/", commitment=commitment)
            return await chain.spending_limits(multisig)

    return asyncio.run(read())


def test_rpc_chain_lists_spending_limits_with_get_program_accounts() -> None:
    svm = LiteSVM()
    agent, other_agent = Pubkey.new_unique(), Pubkey.new_unique()
    multisig = put_multisig(svm, Pubkey.new_unique(), [Pubkey.new_unique(), agent])
    other_multisig = Pubkey.new_unique()
    first = put_spending_limit(svm, multisig, Pubkey.new_unique(), members=[agent])
    second = put_spending_limit(svm, multisig, Pubkey.new_unique(), members=[agent], period=3, amount=9)
    put_spending_limit(svm, other_multisig, Pubkey.new_unique(), members=[other_agent])
    seen: list[dict[str, Any]] = []
    limits = rpc_limits(answering(svm, seen), multisig, commitment="finalized")
    assert [limit.address for limit in limits] == sorted([first, second], key=bytes)
    assert limits == asyncio.run(LiteSvmChain(svm).spending_limits(multisig))
    ((call,),) = [seen]
    assert call["method"] == "getProgramAccounts"
    assert call["params"] == [
        "SQDS4ep65T869zMMBKyuUq6aD6EgTu8psMjkvj52pCf",
        {"encoding": "base64", "commitment": "finalized",
         "filters": [{"memcmp": {"offset": 0, "bytes": base64.b64encode(DISCRIMINATOR).decode(), "encoding": "base64"}},
                     {"memcmp": {"offset": 8, "bytes": base64.b64encode(bytes(multisig)).decode(),
                                 "encoding": "base64"}}]},
    ]  # fmt: skip
    assert rpc_limits(answering(svm, seen), Pubkey.new_unique()) == []
    assert seen[-1]["params"][1]["commitment"] == "confirmed"


def _answer(result: Any = None, *, error: Any = None, status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        body = {"jsonrpc": "2.0", "id": json.loads(request.content)["id"]}
        body.update({"error": error} if error is not None else {"result": result})
        return httpx.Response(status, json=body)

    return handle


def _item(address: Pubkey, data: bytes, *, owner: Pubkey = PROGRAM_ID) -> dict[str, Any]:
    return {"pubkey": str(address), "account": {"owner": str(owner), "lamports": 1, "executable": False,
                                                "data": [base64.b64encode(data).decode(), "base64"]}}  # fmt: skip


def test_rpc_chain_refuses_malformed_answers() -> None:
    value = fields()
    multisig = value["multisig"]
    good = _item(address_of(value), encode(value))
    assert rpc_limits(_answer([good]), multisig) == [expected(value)]
    account = good["account"]
    other_multisig = fields()
    proposal_like = fields(multisig=multisig)
    too_many = [_item(address_of(v), encode(v)) for v in (fields(multisig=multisig) for _ in range(257))]
    cases: list[tuple[Any, str]] = [
        (None, "getProgramAccounts: malformed answer"),
        ({"context": {"slot": 1}, "value": [good]}, "getProgramAccounts: malformed answer"),
        ("nonsense", "getProgramAccounts: malformed answer"),
        (["nonsense"], "malformed account"),
        ([{"account": account}], "malformed account"),
        ([{**good, "pubkey": "not a key"}], "malformed account"),
        ([{**good, "pubkey": 7}], "malformed account"),
        ([{**good, "account": {**account, "owner": "not a key"}}], "malformed account"),
        ([{**good, "account": {**account, "data": [account["data"][0], "base58"]}}], "malformed account"),
        ([{**good, "account": {**account, "data": ["!!!", "base64"]}}], "malformed account"),
        ([{**good, "account": {**account, "data": []}}], "malformed account"),
        ([{**good, "account": {**account, "data": "abc"}}], "malformed account"),
        ([{**good, "account": {**account, "data": [7, "base64"]}}], "malformed account"),
        ([{**good, "account": {k: v for k, v in account.items() if k != "data"}}], "malformed account"),
        ([_item(address_of(value), b"short")], "too short"),
        ([_item(address_of(value), encode(value), owner=TOKEN_PROGRAM)], "not owned by the Squads v4 program"),
        # A node ignoring the filters: another multisig's limit, another account type.
        ([good, _item(address_of(other_multisig), encode(other_multisig))], "spending limit of another multisig"),
        ([_item(address_of(proposal_like), anchor_discriminator("account", "Proposal") + encode(proposal_like)[8:])],
         "wrong discriminator"),
        ([good, good], "spending limit listed twice"),
        (too_many, f"more than {MAX_SPENDING_LIMITS} spending limits"),
    ]  # fmt: skip
    for result, message in cases:
        with pytest.raises(ChainError, match=message) as caught:
            rpc_limits(_answer(result), multisig)
        assert "secret" not in str(caught.value)
    assert len(rpc_limits(_answer(too_many[:MAX_SPENDING_LIMITS]), multisig)) == MAX_SPENDING_LIMITS
    with pytest.raises(ChainError, match="RPC getProgramAccounts error: method disabled"):
        rpc_limits(_answer(error={"code": -32601, "message": "method disabled"}), multisig)
    with pytest.raises(ChainError, match="RPC getProgramAccounts failed: HTTPStatusError") as caught:
        rpc_limits(_answer(status=500), multisig)
    assert "secret" not in str(caught.value)
