"""What one `RpcChain` call can cost: lookup tables read with a ``dataSlice``, every answer capped in bytes and cut at
one deadline for the whole call.

An agent names the lookup tables a request reads, so any account (up to 10 MiB each, 32 of them) could be one.
Before, the adapter asked for whole accounts, read the whole answer into memory whatever its size, and its 5 s
timeout was httpx's per operation, so an answer dripped slowly was never cut.

The RPC node is a stand-in at the HTTP seam: selfhost.local_chain's methods over a real LiteSVM behind an httpx
MockTransport, applying ``dataSlice`` as a Solana node does (the local chain returns whole accounts); and, for the
deadline, a real HTTP server on 127.0.0.1 that drips its answer.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from solders.account import Account
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey

from parent_proxy import chain as chain_module
from parent_proxy.chain import (
    ADDRESS_LOOKUP_TABLE_PROGRAM,
    LOOKUP_TABLE_MAX_BYTES,
    LOOKUP_TABLE_SLICE_BYTES,
    MAX_LOOKUP_TABLE_ADDRESSES,
    MAX_RPC_ANSWER_BYTES,
    ChainError,
    RpcChain,
)
from selfhost import local_chain
from tests.proxy.rpc_node import node
from tests.support.chain import install_lookup_table
from tests.support.http_server import serving

URL = "https://user:secret@rpc.invalid/"


def read_tables(client: httpx.AsyncClient, tables: list[Pubkey]) -> dict[Pubkey, tuple[Pubkey, ...]]:
    async def go() -> dict[Pubkey, tuple[Pubkey, ...]]:
        async with client:
            return await RpcChain(client, URL).lookup_tables(tables)

    return asyncio.run(go())


def balance(client: httpx.AsyncClient) -> int:
    async def go() -> int:
        async with client:
            return await RpcChain(client, URL).balance(Pubkey.new_unique())

    return asyncio.run(go())


def answering(respond: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(respond))


def balance_answer(request: httpx.Request, pad: int = 0) -> bytes:
    """A valid getBalance answer (5 lamports), ``pad`` bytes longer than it needs to be (JSON whitespace)."""
    body = {"jsonrpc": "2.0", "id": json.loads(request.content)["id"], "result": {"context": {"slot": 1}, "value": 5}}
    return json.dumps(body).encode() + b" " * pad


# -- the lookup tables' dataSlice -----------------------------------------------------------------------------------


def test_lookup_tables_are_asked_with_a_data_slice_one_byte_past_the_largest_table() -> None:
    svm = LiteSVM()
    seen: list[dict[str, Any]] = []
    table, addresses = Pubkey.new_unique(), [Pubkey.new_unique() for _ in range(3)]
    install_lookup_table(svm, table, addresses)
    assert read_tables(node(svm, seen), [table]) == {table: tuple(addresses)}
    assert [body["method"] for body in seen] == ["getMultipleAccounts"]
    assert seen[0]["params"][1]["dataSlice"] == {"offset": 0, "length": LOOKUP_TABLE_SLICE_BYTES}
    assert LOOKUP_TABLE_SLICE_BYTES == 56 + 32 * 256 + 1


def test_the_largest_valid_table_still_resolves_through_the_slice() -> None:
    svm, table = LiteSVM(), Pubkey.new_unique()
    addresses = [Pubkey.new_unique() for _ in range(MAX_LOOKUP_TABLE_ADDRESSES)]
    install_lookup_table(svm, table, addresses)
    assert len(bytes(svm.get_account(table).data)) == LOOKUP_TABLE_MAX_BYTES  # type: ignore[union-attr]
    assert read_tables(node(svm, []), [table]) == {table: tuple(addresses)}
    assert read_tables(node(svm, [], space=False), [table]) == {table: tuple(addresses)}


@pytest.mark.parametrize("space", [True, False], ids=["space-said", "space-unsaid"])
def test_a_table_account_longer_than_any_table_is_refused_not_cut_to_one(space: bool) -> None:
    """A table-program account of 10 MiB whose first bytes are a valid table: the slice comes back full (one byte
    past the largest layout) and is refused, also from a node that does not say the account's ``space``; the
    answer stays small."""
    svm, table = LiteSVM(), Pubkey.new_unique()
    sizes: list[int] = []
    header = (1).to_bytes(4, "little") + bytes(52)
    data = header + bytes(Pubkey.new_unique()) * 256 + bytes(10 * 1024 * 1024 - LOOKUP_TABLE_MAX_BYTES)
    svm.set_account(table, Account(10**9, data, ADDRESS_LOOKUP_TABLE_PROGRAM, False, 0))
    with pytest.raises(ChainError, match="malformed address lookup table"):
        read_tables(node(svm, [], sizes, space=space), [table])
    assert len(sizes) == 1 and sizes[0] < 2 * LOOKUP_TABLE_SLICE_BYTES  # the slice, not 10 MiB


def test_an_answer_whose_space_says_the_account_is_larger_than_its_data_is_refused() -> None:
    """A node that returns fewer bytes than the account holds (a valid-looking table prefix): ``space``, the whole
    account's size, tells it; the prefix is not taken for the table."""
    svm, table, addresses = LiteSVM(), Pubkey.new_unique(), [Pubkey.new_unique() for _ in range(3)]
    install_lookup_table(svm, table, addresses)
    backend = local_chain.LocalChain(svm)

    def handle(request: httpx.Request) -> httpx.Response:
        answer = local_chain.handle_body(backend, request.content)
        answer["result"]["value"][0]["space"] = 10 * 1024 * 1024
        return httpx.Response(200, json=answer)

    with pytest.raises(ChainError, match="malformed address lookup table"):
        read_tables(answering(handle), [table])


# -- the byte cap (every call) --------------------------------------------------------------------------------------


def test_an_answer_longer_than_the_cap_is_refused() -> None:
    """A valid getBalance answer padded past `MAX_RPC_ANSWER_BYTES`, with its Content-Length: refused."""
    client = answering(lambda request: httpx.Response(200, content=balance_answer(request, MAX_RPC_ANSWER_BYTES)))
    with pytest.raises(ChainError, match=f"RPC getBalance failed: answer larger than {MAX_RPC_ANSWER_BYTES} bytes"):
        balance(client)
    assert balance(answering(lambda request: httpx.Response(200, content=balance_answer(request, 1000)))) == 5


def test_an_answer_streamed_past_the_cap_without_a_length_is_cut_there() -> None:
    """No Content-Length (chunked): reading stops once the cap is passed; the rest is never read."""
    produced: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        answer = balance_answer(request)

        async def chunks() -> AsyncIterator[bytes]:
            yield answer
            for _ in range(4 * MAX_RPC_ANSWER_BYTES // 65536):  # 4 MiB of JSON whitespace after a valid answer
                produced.append(65536)
                yield b" " * 65536

        return httpx.Response(200, content=chunks())

    with pytest.raises(ChainError, match="answer larger than"):
        balance(answering(handle))
    assert sum(produced) <= MAX_RPC_ANSWER_BYTES + 65536


def test_a_compressed_answer_is_refused() -> None:
    """The adapter asks for an uncompressed answer (a compressed one inflates past any byte count)."""
    asked: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("Accept-Encoding", ""))
        return httpx.Response(200, content=gzip.compress(balance_answer(request)), headers={"Content-Encoding": "gzip"})

    with pytest.raises(ChainError, match="RPC getBalance failed: compressed answer"):
        balance(answering(handle))
    assert asked == ["identity"]


# -- one deadline for the whole call --------------------------------------------------------------------------------


@pytest.fixture
def dripping() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering a valid getBalance answer 200 bytes at a time, one piece every
    50 ms (about 30 s in all, if a client waited for it): each read gets bytes well within any per-read timeout."""

    class Drip(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            payload = balance_answer(httpx.Request("POST", "http://x", json=body), pad=120_000)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            try:
                for i in range(0, len(payload), 200):
                    self.wfile.write(payload[i : i + 200])
                    self.wfile.flush()
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client hung up: what the deadline does

        def log_message(self, *_: object) -> None:
            pass

    with serving(Drip) as url:
        yield f"{url}/"


def test_a_dripped_answer_is_cut_at_the_deadline(dripping: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chain_module, "RPC_TIMEOUT_SECONDS", 0.5)

    async def go() -> int:
        async with httpx.AsyncClient() as client:
            return await RpcChain(client, dripping).balance(Pubkey.new_unique())

    started = time.perf_counter()
    with pytest.raises(ChainError, match=r"RPC getBalance failed: no whole answer within 0\.5 s"):
        asyncio.run(go())
    assert time.perf_counter() - started < 10  # the whole answer would take about 30 s; the deadline is 0.5 s
