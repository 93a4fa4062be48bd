"""The chain seam: lookup-table contents, Squads multisig and spending-limit accounts, durable-nonce accounts,
submission, latest blockhash, balances.

`Chain` is the protocol; `LiteSvmChain` is the embedded adapter (solders' LiteSVM, for the self-host demo and
tests) and `RpcChain` speaks Solana JSON-RPC over httpx (no solana-py at runtime). Every failure becomes
`ChainError` (its message is a fixed phrase plus the RPC's error text, never a URL with credentials); an account
the chain answered does not exist is its subclass `AccountNotFound`, so that a caller can tell "no such account"
(a definite answer about the chain) from "the chain could not be read".

Lookup-table contents read here are not what decides: both checks resolve lookups from the owner's pins in the
policy (`policies.lookup_tables`), and these contents are only cross-checked against them. A table account must be
owned by the address lookup table program and have the exact layout (56-byte header, then 32-byte addresses);
anything else is an error, not a guess. A Squads multisig account is read and checked by
`parent_proxy.squads_multisig_account`; its `MultisigAccountError` becomes `ChainError` here. A multisig's
spending limits (`Chain.spending_limits`) are every account of the Squads program that starts with the
``SpendingLimit`` discriminator and names the multisig at offset 8 (RPC ``getProgramAccounts`` with those two
``memcmp`` filters), each read and checked by `parent_proxy.squads_spending_limit_account`; a malformed one, one of
another multisig, or more than `MAX_SPENDING_LIMITS` of them is a `ChainError` (never a shorter list). A
durable-nonce account (`Chain.nonce_account`) is read and checked by `parent_proxy.nonce_account`.

What `RpcChain` reads is bounded, since some of the accounts are named by an agent (its request's lookup tables):
every call has one deadline for the whole exchange (`RPC_TIMEOUT_SECONDS`: connecting, sending, and the whole
answer, so an answer dripped slowly is cut there, not only a read that stalls), and its answer is streamed with a
byte cap (`MAX_RPC_ANSWER_BYTES`) and asked uncompressed; past either, the call is a `ChainError` and what was
received is dropped. Lookup tables are asked with a ``dataSlice`` one byte longer than the largest valid table
(`LOOKUP_TABLE_SLICE_BYTES`), so an account of any size costs at most that; an account the slice does not hold whole
(its data fills the slice, or the answer's ``space`` says the account is larger than its data) is refused as a
malformed table, never cut down into one that looks valid.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import Sequence
from typing import Any, Protocol

import httpx
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

from parent_proxy.nonce_account import NonceAccount, NonceAccountError, parse_nonce_account
from parent_proxy.squads_multisig_account import MultisigAccount, MultisigAccountError, parse_multisig_account
from parent_proxy.squads_spending_limit_account import (
    SPENDING_LIMIT_DISCRIMINATOR,
    SpendingLimitAccount,
    SpendingLimitAccountError,
    parse_spending_limit_account,
)
from policies.programs import SQUADS_V4_PROGRAM

ADDRESS_LOOKUP_TABLE_PROGRAM = Pubkey.from_string("AddressLookupTab1e1111111111111111111111111")
LOOKUP_TABLE_META_BYTES = 56
"""solana-address-lookup-table-program ``LOOKUP_TABLE_META_SIZE``."""
MAX_LOOKUP_TABLE_ADDRESSES = 256
LOOKUP_TABLE_MAX_BYTES = LOOKUP_TABLE_META_BYTES + 32 * MAX_LOOKUP_TABLE_ADDRESSES
"""The largest valid lookup table account: the header and 256 addresses (8,248 bytes)."""
LOOKUP_TABLE_SLICE_BYTES = LOOKUP_TABLE_MAX_BYTES + 1
"""The ``dataSlice`` length lookup tables are read with: one byte more than any valid table, so that a longer
account comes back filling it (and is refused), never cut to a valid-looking table."""
MAX_TABLES_PER_REQUEST = 32
RPC_TIMEOUT_SECONDS = 5.0
"""One deadline for a whole RPC call: connect, send, and read the whole answer (not per read)."""
MAX_RPC_ANSWER_BYTES = 1024 * 1024
"""The most bytes of one RPC answer read (1 MiB); a longer one is a `ChainError`. The largest answer asked for is
32 sliced lookup tables, about 360 kB (base64 and JSON included); a multisig account or 256 spending limits of a
realistic size are far below it. It also bounds the event-loop time of parsing the answer (a few ms for account
data; about 30 ms for the worst JSON a hostile RPC could write), so the JSON is parsed on the loop: ``json.loads``
holds the GIL, and a worker thread would not free the loop for that time anyway."""
MAX_SPENDING_LIMITS = 256
"""At most this many spending limits of one multisig are accepted; more is a `ChainError`, not a truncated list
(a wallet has a few: one per mint and period). It bounds the work and memory one answer can cost."""


class ChainError(Exception):
    """The chain could not answer, or answered something malformed."""


class AccountNotFound(ChainError):
    """The chain answered that the account does not exist (RPC ``value: null``; LiteSVM: no account). Only this,
    never a failed or malformed answer: those stay a plain `ChainError`."""


class Chain(Protocol):
    async def lookup_tables(self, addresses: Sequence[Pubkey]) -> dict[Pubkey, tuple[Pubkey, ...]]:
        """The contents of each named address lookup table; `AccountNotFound` if one is missing, `ChainError` if
        one cannot be read or is malformed."""
        ...

    async def multisig_account(self, address: Pubkey) -> MultisigAccount:
        """The Squads v4 multisig at ``address``; `AccountNotFound` if it is missing, `ChainError` if it cannot be
        read, is not owned by Squads, or is malformed."""
        ...

    async def spending_limits(self, multisig: Pubkey) -> list[SpendingLimitAccount]:
        """Every Squads v4 spending limit of ``multisig`` (none: ``[]``), sorted by address (its bytes); `ChainError`
        if any is malformed or there are more than `MAX_SPENDING_LIMITS`. Check `SpendingLimitAccount.names`."""
        ...

    async def nonce_account(self, address: Pubkey) -> NonceAccount:
        """The initialized System nonce account at ``address``; `AccountNotFound` if missing, `ChainError` if
        anything else."""
        ...

    async def submit(self, signed_transaction: bytes) -> str:
        """Broadcast a fully signed transaction once; return its base58 signature. Never retried here."""
        ...

    async def latest_blockhash(self) -> str: ...

    async def balance(self, address: Pubkey) -> int:
        """Lamports held by ``address`` (0 if the account does not exist)."""
        ...


def parse_lookup_table(owner: Pubkey, data: bytes) -> tuple[Pubkey, ...]:
    """Addresses of a lookup table account, after checking its owner and layout."""
    # 1. Owned by the lookup table program (anyone can write those bytes into an account they own).
    if owner != ADDRESS_LOOKUP_TABLE_PROGRAM:
        raise ChainError("account is not an address lookup table")
    # 2. Header present and a whole number of addresses after it, within the program's maximum.
    body = len(data) - LOOKUP_TABLE_META_BYTES
    if body < 0 or body % 32 or body // 32 > MAX_LOOKUP_TABLE_ADDRESSES:
        raise ChainError("malformed address lookup table")
    # 3. Discriminator: 1 = LookupTable (0 = uninitialized).
    if int.from_bytes(data[0:4], "little") != 1:
        raise ChainError("address lookup table is not initialized")
    return tuple(Pubkey.from_bytes(data[i : i + 32]) for i in range(LOOKUP_TABLE_META_BYTES, len(data), 32))


def _multisig(address: Pubkey, owner: Pubkey, data: bytes) -> MultisigAccount:
    try:
        return parse_multisig_account(address, owner, data)
    except MultisigAccountError as exc:
        raise ChainError(str(exc)) from exc


def _nonce(address: Pubkey, owner: Pubkey, data: bytes) -> NonceAccount:
    try:
        return parse_nonce_account(address, owner, data)
    except NonceAccountError as exc:
        raise ChainError(str(exc)) from exc


def _spending_limits(multisig: Pubkey, accounts: Sequence[tuple[Pubkey, Pubkey, bytes]]) -> list[SpendingLimitAccount]:
    """The checked spending limits of ``multisig`` from (address, owner, data) triples already filtered by the
    discriminator and the multisig; the filtering is checked again here (an RPC node may ignore filters)."""
    if len(accounts) > MAX_SPENDING_LIMITS:
        raise ChainError(f"more than {MAX_SPENDING_LIMITS} spending limits")
    limits: dict[Pubkey, SpendingLimitAccount] = {}
    for address, owner, data in accounts:
        if address in limits:
            raise ChainError("spending limit listed twice")
        try:
            limit = parse_spending_limit_account(address, owner, data)
        except SpendingLimitAccountError as exc:
            raise ChainError(str(exc)) from exc
        if limit.multisig != multisig:
            raise ChainError("spending limit of another multisig")
        limits[address] = limit
    return [limits[a] for a in sorted(limits, key=bytes)]


def _rpc_account(value: Any, method: str) -> tuple[Pubkey, bytes]:
    """An RPC account object's owner and data (base64 encoding); `ChainError` naming ``method`` if malformed."""
    try:
        owner = Pubkey.from_string(value["owner"])
        encoded = value["data"]
        if encoded[1] != "base64":
            raise ValueError("not base64")
        return owner, base64.b64decode(encoded[0], validate=True)
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise ChainError(f"RPC {method}: malformed account") from exc


def _b64(data: bytes) -> str:
    """``memcmp`` filter bytes, base64 (``"encoding": "base64"``, accepted by Solana RPC since 1.14)."""
    return base64.b64encode(data).decode()


_TABLE_SLICE = {"offset": 0, "length": LOOKUP_TABLE_SLICE_BYTES}


def _check_count(addresses: Sequence[Pubkey]) -> None:
    if len(addresses) > MAX_TABLES_PER_REQUEST or len(set(addresses)) != len(addresses):
        raise ChainError(f"at most {MAX_TABLES_PER_REQUEST} distinct lookup tables")


class LiteSvmChain:
    """The embedded chain. LiteSVM is not thread-safe: every call runs on the event loop thread."""

    def __init__(self, svm: LiteSVM) -> None:
        self.svm = svm

    async def lookup_tables(self, addresses: Sequence[Pubkey]) -> dict[Pubkey, tuple[Pubkey, ...]]:
        _check_count(addresses)
        tables: dict[Pubkey, tuple[Pubkey, ...]] = {}
        for address in addresses:
            account = self.svm.get_account(address)
            if account is None:
                raise AccountNotFound("address lookup table not found")
            tables[address] = parse_lookup_table(account.owner, bytes(account.data))
        return tables

    def _account(self, address: Pubkey, what: str) -> tuple[Pubkey, bytes]:
        account = self.svm.get_account(address)
        if account is None:
            raise AccountNotFound(f"{what} not found")
        return account.owner, bytes(account.data)

    async def multisig_account(self, address: Pubkey) -> MultisigAccount:
        return _multisig(address, *self._account(address, "multisig account"))

    async def nonce_account(self, address: Pubkey) -> NonceAccount:
        return _nonce(address, *self._account(address, "nonce account"))

    async def spending_limits(self, multisig: Pubkey) -> list[SpendingLimitAccount]:
        prefix = SPENDING_LIMIT_DISCRIMINATOR + bytes(multisig)
        found: list[tuple[Pubkey, Pubkey, bytes]] = []
        for address, account in self.svm.get_program_accounts(SQUADS_V4_PROGRAM):
            data = bytes(account.data)
            if data.startswith(prefix):  # the RPC adapter's two memcmp filters
                found.append((address, account.owner, data))
        return _spending_limits(multisig, found)

    async def submit(self, signed_transaction: bytes) -> str:
        try:
            tx = VersionedTransaction.from_bytes(signed_transaction)
        except ValueError as exc:
            raise ChainError("not a transaction") from exc
        result = self.svm.send_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            raise ChainError(f"transaction failed: {result.err()}")
        return str(tx.signatures[0])

    async def latest_blockhash(self) -> str:
        return str(self.svm.latest_blockhash())

    async def balance(self, address: Pubkey) -> int:
        return int(self.svm.get_balance(address) or 0)


class RpcChain:
    """Solana JSON-RPC over an `httpx.AsyncClient` (its transport is the test seam)."""

    def __init__(self, client: httpx.AsyncClient, url: str, *, commitment: str = "confirmed") -> None:
        self._client = client
        self._url = url
        self._commitment = commitment
        self._ids = itertools.count(1)

    async def _call(self, method: str, params: list[Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        try:
            async with asyncio.timeout(RPC_TIMEOUT_SECONDS):
                content = await self._answer(method, body)
            answer = json.loads(content)
        except TimeoutError as exc:
            raise ChainError(f"RPC {method} failed: no whole answer within {RPC_TIMEOUT_SECONDS:g} s") from exc
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            raise ChainError(f"RPC {method} failed: {type(exc).__name__}") from exc
        if not isinstance(answer, dict):
            raise ChainError(f"RPC {method}: malformed answer")
        if "error" in answer:
            error = answer["error"]
            message = error.get("message") if isinstance(error, dict) else None
            raise ChainError(f"RPC {method} error: {str(message)[:200]}")
        return answer.get("result")

    async def _answer(self, method: str, body: dict[str, Any]) -> bytes:
        """The answer's bytes, streamed: at most `MAX_RPC_ANSWER_BYTES` (more, or a length announcing more: a
        `ChainError`, the rest never read), uncompressed (a compressed answer would be inflated past any count)."""
        too_large = ChainError(f"RPC {method} failed: answer larger than {MAX_RPC_ANSWER_BYTES} bytes")
        headers = {"Accept-Encoding": "identity"}
        request = self._client.stream("POST", self._url, json=body, headers=headers, timeout=RPC_TIMEOUT_SECONDS)
        async with request as response:
            response.raise_for_status()
            if response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
                raise ChainError(f"RPC {method} failed: compressed answer")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > MAX_RPC_ANSWER_BYTES:
                raise too_large
            received = bytearray()
            async for chunk in response.aiter_bytes():  # no Content-Encoding (above): the bytes received
                received += chunk
                if len(received) > MAX_RPC_ANSWER_BYTES:
                    raise too_large
        return bytes(received)

    async def lookup_tables(self, addresses: Sequence[Pubkey]) -> dict[Pubkey, tuple[Pubkey, ...]]:
        _check_count(addresses)
        if not addresses:
            return {}
        # Each account's first bytes only (`LOOKUP_TABLE_SLICE_BYTES`): an agent names these addresses.
        config = {"encoding": "base64", "commitment": self._commitment, "dataSlice": _TABLE_SLICE}
        result = await self._call("getMultipleAccounts", [[str(a) for a in addresses], config])
        values = result.get("value") if isinstance(result, dict) else None
        if not isinstance(values, list) or len(values) != len(addresses):
            raise ChainError("RPC getMultipleAccounts: malformed answer")
        tables: dict[Pubkey, tuple[Pubkey, ...]] = {}
        for address, value in zip(addresses, values, strict=True):
            if value is None:
                raise AccountNotFound("address lookup table not found")
            owner, data = _rpc_account(value, "getMultipleAccounts")
            space = value.get("space")  # the whole account's size, where the RPC says it (Solana RPC does)
            if space is not None and space != len(data):
                raise ChainError("malformed address lookup table")  # larger than its slice: not one whole table
            # An account longer than any table fills the slice, one byte past the largest valid layout: refused.
            tables[address] = parse_lookup_table(owner, data)
        return tables

    async def _account(self, address: Pubkey, what: str) -> tuple[Pubkey, bytes]:
        result = await self._call(
            "getAccountInfo", [str(address), {"encoding": "base64", "commitment": self._commitment}]
        )
        if not isinstance(result, dict) or "value" not in result:
            raise ChainError("RPC getAccountInfo: malformed answer")
        value = result["value"]
        if value is None:
            raise AccountNotFound(f"{what} not found")
        return _rpc_account(value, "getAccountInfo")

    async def multisig_account(self, address: Pubkey) -> MultisigAccount:
        return _multisig(address, *await self._account(address, "multisig account"))

    async def nonce_account(self, address: Pubkey) -> NonceAccount:
        return _nonce(address, *await self._account(address, "nonce account"))

    async def spending_limits(self, multisig: Pubkey) -> list[SpendingLimitAccount]:
        filters = [
            {"memcmp": {"offset": 0, "bytes": _b64(SPENDING_LIMIT_DISCRIMINATOR), "encoding": "base64"}},
            {
                "memcmp": {
                    "offset": len(SPENDING_LIMIT_DISCRIMINATOR),
                    "bytes": _b64(bytes(multisig)),
                    "encoding": "base64",
                }
            },
        ]
        result = await self._call(
            "getProgramAccounts",
            [str(SQUADS_V4_PROGRAM), {"encoding": "base64", "commitment": self._commitment, "filters": filters}],
        )
        if not isinstance(result, list):
            raise ChainError("RPC getProgramAccounts: malformed answer")
        if len(result) > MAX_SPENDING_LIMITS:
            raise ChainError(f"more than {MAX_SPENDING_LIMITS} spending limits")
        found: list[tuple[Pubkey, Pubkey, bytes]] = []
        for item in result:
            try:
                address, account = Pubkey.from_string(item["pubkey"]), item["account"]
            except (KeyError, TypeError, ValueError) as exc:
                raise ChainError("RPC getProgramAccounts: malformed account") from exc
            found.append((address, *_rpc_account(account, "getProgramAccounts")))
        return _spending_limits(multisig, found)

    async def submit(self, signed_transaction: bytes) -> str:
        encoded = base64.b64encode(signed_transaction).decode()
        result = await self._call(
            "sendTransaction",
            [encoded, {"encoding": "base64", "maxRetries": 0, "preflightCommitment": self._commitment}],
        )
        if not isinstance(result, str):
            raise ChainError("RPC sendTransaction: malformed answer")
        return result

    async def latest_blockhash(self) -> str:
        result = await self._call("getLatestBlockhash", [{"commitment": self._commitment}])
        try:
            return str(result["value"]["blockhash"])
        except (KeyError, TypeError) as exc:
            raise ChainError("RPC getLatestBlockhash: malformed answer") from exc

    async def balance(self, address: Pubkey) -> int:
        result = await self._call("getBalance", [str(address), {"commitment": self._commitment}])
        try:
            value = result["value"]
        except (KeyError, TypeError) as exc:
            raise ChainError("RPC getBalance: malformed answer") from exc
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ChainError("RPC getBalance: malformed answer")
        return value
