"""selfhost/local_chain.py: the LiteSVM JSON-RPC server, checked over real HTTP, and the proxy's own RPC adapter
(parent_proxy.chain.RpcChain) run against it: the pairing `waiaas demo` relies on."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from solders.account import Account
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from parent_proxy.chain import ADDRESS_LOOKUP_TABLE_PROGRAM, LOOKUP_TABLE_META_BYTES, ChainError, RpcChain
from selfhost import local_chain
from selfhost.local_chain import MAX_AIRDROP_LAMPORTS, LocalChain
from tests.support.squads_rotation import put_multisig, put_spending_limit

SOL = 1_000_000_000


@pytest.fixture
def chain() -> Iterator[tuple[str, LocalChain]]:
    backend = LocalChain()
    server = local_chain.serve(0, backend)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", backend
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def rpc(url: str, method: str, params: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": method, **extra}
    if params is not None:
        body["params"] = params
    answer: dict[str, Any] = httpx.post(url, json=body, timeout=5).json()
    return answer


def error_code(answer: dict[str, Any]) -> int:
    assert "result" not in answer, answer
    code: int = answer["error"]["code"]
    return code


def signed_transfer(url: str, payer: Keypair, to: Pubkey, lamports: int) -> bytes:
    blockhash = Hash.from_string(rpc(url, "getLatestBlockhash")["result"]["value"]["blockhash"])
    message = Message.new_with_blockhash(
        [transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=lamports))],
        payer.pubkey(),
        blockhash,
    )
    return bytes(Transaction([payer], message, blockhash))


def test_binds_loopback_only(chain: tuple[str, LocalChain]) -> None:
    url, _ = chain
    assert url.startswith("http://127.0.0.1:")
    assert local_chain.HOST == "127.0.0.1"


def test_airdrop_transfer_and_balances(chain: tuple[str, LocalChain]) -> None:
    url, _ = chain
    payer, payee = Keypair(), Keypair().pubkey()
    assert rpc(url, "requestAirdrop", [str(payer.pubkey()), 2 * SOL])["id"] == 7
    assert rpc(url, "getBalance", [str(payer.pubkey())])["result"]["value"] == 2 * SOL
    raw = signed_transfer(url, payer, payee, SOL // 4)
    sent = rpc(url, "sendTransaction", [base64.b64encode(raw).decode(), {"encoding": "base64"}])
    assert sent["result"] == str(Transaction.from_bytes(raw).signatures[0])
    assert rpc(url, "getBalance", [str(payee)])["result"]["value"] == SOL // 4
    assert rpc(url, "getBalance", [str(payer.pubkey())])["result"]["value"] == 2 * SOL - SOL // 4 - 5000
    # The same transaction again is refused by the chain (already processed): a JSON-RPC error, not a result.
    again = rpc(url, "sendTransaction", [base64.b64encode(raw).decode(), {"encoding": "base64"}])
    assert error_code(again) == local_chain.TRANSACTION_FAILED


def test_a_failing_transaction_is_an_error(chain: tuple[str, LocalChain]) -> None:
    url, _ = chain
    broke = Keypair()  # no lamports: cannot pay the fee
    raw = signed_transfer(url, broke, Keypair().pubkey(), 1)
    answer = rpc(url, "sendTransaction", [base64.b64encode(raw).decode(), {"encoding": "base64"}])
    assert error_code(answer) == local_chain.TRANSACTION_FAILED


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("getBalance", ["not-a-key"]),
        ("getBalance", [str(Pubkey.default()), {"encoding": "base58"}]),
        ("getBalance", []),
        ("requestAirdrop", [str(Pubkey.default()), MAX_AIRDROP_LAMPORTS + 1]),
        ("requestAirdrop", [str(Pubkey.default()), 0]),
        ("requestAirdrop", [str(Pubkey.default()), True]),
        ("requestAirdrop", [str(Pubkey.default()), "100"]),
        ("sendTransaction", ["AAAA"]),
        ("sendTransaction", ["!!!!", {"encoding": "base64"}]),
        ("sendTransaction", ["A" * 2000, {"encoding": "base64"}]),
        ("sendTransaction", [base64.b64encode(b"\x01\x02").decode(), {"encoding": "base64"}]),
        ("getMultipleAccounts", [[], {"encoding": "base64"}]),
        ("getMultipleAccounts", [[str(Pubkey.default())] * 101, {"encoding": "base64"}]),
        ("getAccountInfo", [str(Pubkey.default()), {"encoding": "jsonParsed"}]),
        ("getLatestBlockhash", "not a list"),
    ],
)
def test_invalid_params_are_refused(chain: tuple[str, LocalChain], method: str, params: Any) -> None:
    url, _ = chain
    assert error_code(rpc(url, method, params)) == local_chain.INVALID_PARAMS


def test_closed_method_set_and_request_shape(chain: tuple[str, LocalChain]) -> None:
    url, _ = chain
    assert error_code(rpc(url, "getSignaturesForAddress", [])) == local_chain.METHOD_NOT_FOUND
    assert error_code(rpc(url, "getHealth", [], extra="field")) == local_chain.INVALID_REQUEST
    batch = httpx.post(url, json=[{"jsonrpc": "2.0", "id": 1, "method": "getHealth"}], timeout=5).json()
    assert error_code(batch) == local_chain.INVALID_REQUEST
    bad_id = httpx.post(url, json={"jsonrpc": "2.0", "id": [1], "method": "getHealth"}, timeout=5).json()
    assert error_code(bad_id) == local_chain.INVALID_REQUEST
    garbage = httpx.post(url, content=b"{not json", timeout=5).json()
    assert error_code(garbage) == local_chain.PARSE_ERROR
    assert rpc(url, "getHealth")["result"] == "ok"


def test_http_limits(chain: tuple[str, LocalChain]) -> None:
    url, _ = chain
    too_large = httpx.post(url, content=b" " * (local_chain.MAX_BODY_BYTES + 1), timeout=5)
    assert too_large.status_code == 413
    assert httpx.get(url, timeout=5).status_code == 405
    assert httpx.post(url + "other", json={}, timeout=5).status_code == 400


def test_the_proxys_rpc_adapter_works_against_it(chain: tuple[str, LocalChain]) -> None:
    url, backend = chain
    payer, payee = Keypair(), Keypair().pubkey()
    table, addresses = Pubkey.new_unique(), [Pubkey.new_unique() for _ in range(3)]
    data = (1).to_bytes(4, "little") + bytes(LOOKUP_TABLE_META_BYTES - 4) + b"".join(bytes(a) for a in addresses)
    backend.svm.set_account(table, Account(10**9, data, ADDRESS_LOOKUP_TABLE_PROGRAM, False, 0))
    rpc(url, "requestAirdrop", [str(payer.pubkey()), SOL])

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            adapter = RpcChain(client, url)
            assert await adapter.balance(payer.pubkey()) == SOL
            assert await adapter.latest_blockhash() == rpc(url, "getLatestBlockhash")["result"]["value"]["blockhash"]
            assert await adapter.lookup_tables([table]) == {table: tuple(addresses)}
            with pytest.raises(ChainError, match="not found"):
                await adapter.lookup_tables([Pubkey.new_unique()])
            raw = signed_transfer(url, payer, payee, SOL // 100)
            assert await adapter.submit(raw) == str(Transaction.from_bytes(raw).signatures[0])
            assert await adapter.balance(payee) == SOL // 100
            with pytest.raises(ChainError, match="sendTransaction error"):
                await adapter.submit(raw)

    asyncio.run(scenario())


def test_spending_limits_through_get_program_accounts(chain: tuple[str, LocalChain]) -> None:
    """The proxy's RPC adapter lists a multisig's spending limits from this server (memcmp filters applied here)."""
    url, backend = chain
    agent = Pubkey.new_unique()
    multisig = put_multisig(backend.svm, Pubkey.new_unique(), [Pubkey.new_unique(), agent])
    mine = put_spending_limit(backend.svm, multisig, Pubkey.new_unique(), members=[agent])
    put_spending_limit(backend.svm, Pubkey.new_unique(), Pubkey.new_unique(), members=[agent])  # another multisig

    async def read() -> list[Pubkey]:
        async with httpx.AsyncClient() as client:
            return [limit.address for limit in await RpcChain(client, url).spending_limits(multisig)]

    assert asyncio.run(read()) == [mine]


@pytest.mark.parametrize(
    "filters",
    [
        None, [], [{"memcmp": {"offset": 0, "bytes": "AQ=="}}],  # no encoding named
        [{"memcmp": {"offset": 0, "bytes": "3yZe7d", "encoding": "base58"}}],
        [{"memcmp": {"offset": -1, "bytes": "AQ==", "encoding": "base64"}}],
        [{"memcmp": {"offset": True, "bytes": "AQ==", "encoding": "base64"}}],
        [{"memcmp": {"offset": 0, "bytes": "", "encoding": "base64"}}],
        [{"memcmp": {"offset": 0, "bytes": "!!", "encoding": "base64"}}],
        [{"dataSize": 8}], [{"memcmp": {"offset": 0, "bytes": "AQ==", "encoding": "base64"}}] * 5,
    ],
)  # fmt: skip
def test_get_program_accounts_refuses_filters_it_does_not_take(chain: tuple[str, LocalChain], filters: Any) -> None:
    url, _ = chain
    config: dict[str, Any] = {"encoding": "base64"} if filters is None else {"encoding": "base64", "filters": filters}
    answer = rpc(url, "getProgramAccounts", ["SQDS4ep65T869zMMBKyuUq6aD6EgTu8psMjkvj52pCf", config])
    assert error_code(answer) == local_chain.INVALID_PARAMS
