"""A local Solana JSON-RPC server backed by an embedded LiteSVM: one chain that the proxy and the demo both see.

``python -m selfhost.local_chain --port N`` serves HTTP JSON-RPC 2.0 on 127.0.0.1 only. It answers exactly the
methods the proxy's RPC chain adapter (parent_proxy/chain.py, ``RpcChain``) and ``waiaas demo`` call, and nothing
else, so that the demo exercises the proxy's real RPC adapter rather than the embedded one:

=========================  =============================================================================
method                     params accepted
=========================  =============================================================================
``getHealth``              none
``getLatestBlockhash``     ``[config?]``
``getBalance``             ``[pubkey, config?]``
``getAccountInfo``         ``[pubkey, {"encoding": "base64", ...}]``
``getMultipleAccounts``    ``[[pubkey, ...] (<= 100), {"encoding": "base64", ...}]``
``getProgramAccounts``     ``[program, {"encoding": "base64", "filters": [{"memcmp": {...}}, ...]}]`` (1 to 4
                           memcmp filters with base64 ``bytes`` and ``"encoding": "base64"``; at most
                           :data:`MAX_PROGRAM_ACCOUNTS` accounts answered)
``sendTransaction``        ``[base64 transaction (<= 1232 bytes), {"encoding": "base64", ...}]``
``requestAirdrop``         ``[pubkey, lamports (1 ..`` :data:`MAX_AIRDROP_LAMPORTS` ``)]``
=========================  =============================================================================

Validation is strict: one JSON object per POST (no batches), a body of at most :data:`MAX_BODY_BYTES`, a closed
method set, every parameter checked (base58 keys via solders, base64 strictly, integer ranges); anything else is a
JSON-RPC error, never a guess. ``config`` objects may carry ``commitment`` and the like, which mean nothing on a
single-node chain and are ignored; an ``encoding`` other than base64 is refused. LiteSVM is not thread-safe: every
call holds one lock. Nothing here is a real network: it is for the local demo and trying the API by hand.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, NoReturn

from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

HOST: Final = "127.0.0.1"
MAX_BODY_BYTES: Final = 64 * 1024
MAX_TRANSACTION_BYTES: Final = 1232
"""Solana's packet data size (``PACKET_DATA_SIZE``)."""
MAX_ACCOUNTS_PER_CALL: Final = 100
"""Solana RPC's own limit for getMultipleAccounts."""
MAX_AIRDROP_LAMPORTS: Final = 1_000 * 1_000_000_000
MAX_PROGRAM_ACCOUNTS: Final = 1_000
"""getProgramAccounts answers at most this many accounts (an error beyond: narrow the filters)."""
MAX_MEMCMP_FILTERS: Final = 4
MAX_MEMCMP_BYTES: Final = 128
READ_TIMEOUT_SECONDS: Final = 10.0

# JSON-RPC 2.0 error codes, plus Solana's for a failed transaction.
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
TRANSACTION_FAILED: Final = -32002


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _params(params: Any, required: int, optional: int = 0) -> list[Any]:
    if params is None:
        params = []
    if not isinstance(params, list) or not required <= len(params) <= required + optional:
        raise RpcError(INVALID_PARAMS, f"expected {required} to {required + optional} params")
    return params + [None] * (required + optional - len(params))


def _pubkey(value: Any) -> Pubkey:
    if not isinstance(value, str) or not 32 <= len(value) <= 44:
        raise RpcError(INVALID_PARAMS, "invalid public key")
    try:
        return Pubkey.from_string(value)
    except ValueError as exc:
        raise RpcError(INVALID_PARAMS, "invalid public key") from exc


def _config(value: Any, *, base64_required: bool) -> None:
    if value is None:
        if base64_required:
            raise RpcError(INVALID_PARAMS, "encoding must be base64")
        return
    if not isinstance(value, dict):
        raise RpcError(INVALID_PARAMS, "config must be an object")
    encoding = value.get("encoding")
    if base64_required and encoding != "base64":
        raise RpcError(INVALID_PARAMS, "encoding must be base64")
    if not base64_required and encoding is not None:
        raise RpcError(INVALID_PARAMS, "encoding is not accepted here")


def _filters(value: Any) -> list[Any]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_MEMCMP_FILTERS:
        raise RpcError(INVALID_PARAMS, f"filters must be a list of 1 to {MAX_MEMCMP_FILTERS} memcmp filters")
    return value


def _memcmp(item: Any) -> tuple[int, bytes]:
    """A ``{"memcmp": {"offset": int, "bytes": base64, "encoding": "base64"}}`` filter as (offset, bytes)."""
    memcmp = item.get("memcmp") if isinstance(item, dict) and len(item) == 1 else None
    if not isinstance(memcmp, dict) or set(memcmp) != {"offset", "bytes", "encoding"}:
        raise RpcError(INVALID_PARAMS, 'a filter must be {"memcmp": {"offset", "bytes", "encoding": "base64"}}')
    offset, encoded = memcmp["offset"], memcmp["bytes"]
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= 10 * 1024 * 1024:
        raise RpcError(INVALID_PARAMS, "memcmp offset must be an integer in 0..10 MiB")
    if memcmp["encoding"] != "base64" or not isinstance(encoded, str) or len(encoded) > 2 * MAX_MEMCMP_BYTES:
        raise RpcError(INVALID_PARAMS, "memcmp bytes must be base64 (encoding base64)")
    try:
        wanted = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RpcError(INVALID_PARAMS, "memcmp bytes must be base64 (encoding base64)") from exc
    if not 1 <= len(wanted) <= MAX_MEMCMP_BYTES:
        raise RpcError(INVALID_PARAMS, f"memcmp bytes must decode to 1 to {MAX_MEMCMP_BYTES} bytes")
    return offset, wanted


class LocalChain:
    """The JSON-RPC methods over one LiteSVM, serialized by a lock."""

    def __init__(self, svm: LiteSVM | None = None) -> None:
        self.svm = svm or LiteSVM()
        self._lock = threading.Lock()
        self._methods: dict[str, Callable[[Any], Any]] = {
            "getHealth": self.get_health,
            "getLatestBlockhash": self.get_latest_blockhash,
            "getBalance": self.get_balance,
            "getAccountInfo": self.get_account_info,
            "getMultipleAccounts": self.get_multiple_accounts,
            "getProgramAccounts": self.get_program_accounts,
            "sendTransaction": self.send_transaction,
            "requestAirdrop": self.request_airdrop,
        }

    def call(self, method: Any, params: Any) -> Any:
        handler = self._methods.get(method) if isinstance(method, str) else None
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, "method not found")
        with self._lock:
            return handler(params)

    def _context(self) -> dict[str, int]:
        return {"slot": int(self.svm.get_clock().slot)}

    def get_health(self, params: Any) -> str:
        _params(params, 0)
        return "ok"

    def get_latest_blockhash(self, params: Any) -> dict[str, Any]:
        (config,) = _params(params, 0, 1)
        _config(config, base64_required=False)
        slot = int(self.svm.get_clock().slot)
        return {"context": {"slot": slot}, "value": {"blockhash": str(self.svm.latest_blockhash()),
                                                     "lastValidBlockHeight": slot + 150}}  # fmt: skip

    def get_balance(self, params: Any) -> dict[str, Any]:
        address, config = _params(params, 1, 1)
        _config(config, base64_required=False)
        return {"context": self._context(), "value": int(self.svm.get_balance(_pubkey(address)) or 0)}

    def _account(self, address: Pubkey) -> dict[str, Any] | None:
        account = self.svm.get_account(address)
        if account is None:
            return None
        data = bytes(account.data)
        return {
            "data": [base64.b64encode(data).decode(), "base64"],
            "executable": bool(account.executable),
            "lamports": int(account.lamports),
            "owner": str(account.owner),
            "rentEpoch": int(account.rent_epoch),
            "space": len(data),
        }

    def get_account_info(self, params: Any) -> dict[str, Any]:
        address, config = _params(params, 2)
        _config(config, base64_required=True)
        return {"context": self._context(), "value": self._account(_pubkey(address))}

    def get_multiple_accounts(self, params: Any) -> dict[str, Any]:
        addresses, config = _params(params, 2)
        _config(config, base64_required=True)
        if not isinstance(addresses, list) or not 1 <= len(addresses) <= MAX_ACCOUNTS_PER_CALL:
            raise RpcError(INVALID_PARAMS, f"expected 1 to {MAX_ACCOUNTS_PER_CALL} public keys")
        keys = [_pubkey(address) for address in addresses]
        return {"context": self._context(), "value": [self._account(key) for key in keys]}

    def get_program_accounts(self, params: Any) -> list[dict[str, Any]]:
        program, config = _params(params, 2)
        _config(config, base64_required=True)
        filters = [_memcmp(item) for item in _filters(config.get("filters"))]
        matched = []
        for address, account in self.svm.get_program_accounts(_pubkey(program)):
            data = bytes(account.data)
            if all(data[offset : offset + len(wanted)] == wanted for offset, wanted in filters):
                matched.append(address)
        if len(matched) > MAX_PROGRAM_ACCOUNTS:
            raise RpcError(INVALID_PARAMS, f"more than {MAX_PROGRAM_ACCOUNTS} accounts match: narrow the filters")
        return [{"pubkey": str(address), "account": self._account(address)} for address in sorted(matched, key=bytes)]

    def send_transaction(self, params: Any) -> str:
        encoded, config = _params(params, 2)
        _config(config, base64_required=True)
        if not isinstance(encoded, str) or len(encoded) > 4 * ((MAX_TRANSACTION_BYTES + 2) // 3):
            raise RpcError(INVALID_PARAMS, "transaction must be base64 of at most 1232 bytes")
        try:
            raw = base64.b64decode(encoded, validate=True)
            transaction = VersionedTransaction.from_bytes(raw)
        except (binascii.Error, ValueError) as exc:
            raise RpcError(INVALID_PARAMS, "not a base64 serialized transaction") from exc
        result = self.svm.send_transaction(transaction)
        if isinstance(result, FailedTransactionMetadata):
            raise RpcError(TRANSACTION_FAILED, f"Transaction failed: {result.err()}")
        return str(transaction.signatures[0])

    def request_airdrop(self, params: Any) -> str:
        address, lamports = _params(params, 2)
        if isinstance(lamports, bool) or not isinstance(lamports, int) or not 1 <= lamports <= MAX_AIRDROP_LAMPORTS:
            raise RpcError(INVALID_PARAMS, f"lamports must be an integer in 1..{MAX_AIRDROP_LAMPORTS}")
        result = self.svm.airdrop(_pubkey(address), lamports)
        if isinstance(result, FailedTransactionMetadata):
            raise RpcError(TRANSACTION_FAILED, f"airdrop failed: {result.err()}")
        return str(result.signature())


def handle_body(chain: LocalChain, body: bytes) -> dict[str, Any]:
    """One JSON-RPC request body -> its response object (errors included)."""
    request_id: Any = None
    try:
        try:
            request = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise RpcError(PARSE_ERROR, "parse error") from exc
        if not isinstance(request, dict):
            raise RpcError(INVALID_REQUEST, "one JSON-RPC request object per call (no batches)")
        candidate = request.get("id")
        if candidate is not None and (isinstance(candidate, bool) or not isinstance(candidate, str | int)):
            raise RpcError(INVALID_REQUEST, "id must be a string or an integer")
        request_id = candidate
        if request.get("jsonrpc") != "2.0" or set(request) - {"jsonrpc", "id", "method", "params"}:
            raise RpcError(INVALID_REQUEST, "invalid request")
        result = chain.call(request.get("method"), request.get("params"))
    except RpcError as exc:
        return {"jsonrpc": "2.0", "id": request_id, "error": {"code": exc.code, "message": exc.message}}
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT_SECONDS

    def _reply(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "")
        if self.path != "/" or not length.isdigit():
            self.close_connection = True
            self._reply(400, b'{"error": "POST / with a Content-Length"}')
            return
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            self._reply(413, b'{"error": "body too large"}')
            return
        body = self.rfile.read(int(length))
        self._reply(200, json.dumps(handle_body(self.server.chain, body)).encode())

    def do_GET(self) -> None:
        self.close_connection = True
        self._reply(405, b'{"error": "JSON-RPC over POST only"}')

    def log_message(self, format: str, *args: Any) -> None:
        return  # requests carry nothing worth logging, and signed transactions are not logged


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, chain: LocalChain) -> None:
        self.chain = chain
        super().__init__((HOST, port), _Handler)


def serve(port: int, chain: LocalChain | None = None) -> _Server:
    """A server bound to 127.0.0.1:``port`` (0 = any free port); call ``serve_forever`` on it."""
    return _Server(port, chain or LocalChain())


def _terminate(_signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selfhost.local_chain", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error("--port must be 1-65535")
    server = serve(args.port)
    signal.signal(signal.SIGTERM, _terminate)
    print(f"local chain (LiteSVM) listening on http://{HOST}:{args.port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
