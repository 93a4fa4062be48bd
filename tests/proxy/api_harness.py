"""Test harness for the HTTP API: the real enclave app (development NSM, local sealer) served over a Unix socket
from its own thread and event loop, a real SQLite store, an embedded LiteSVM chain, and owner-signed calls.

Seam doubles used by some tests (under tests/ only): a clock that can be made to fail, a store wrapper whose named
methods raise `StoreUnavailable`, SQLite triggers that make one kind of write fail inside the store's own
transactions, raw socket servers that never answer or answer nonsense, and a stand-in enclave with
a session key of its own (it answers attestation and status with that key, and one fixed answer to the rest, or one
made from the request: `ForRequest`). A stand-in that signs uses the wallet's real agent key, unsealed from the
stored blob with the test operator secret (`agent_private_key`), as the real enclave does, and its receipts state
the hash of the message requested (`signed_receipt`'s ``message_hash``; its default, 32 zero bytes, is about no
message) unless a test is about that hash.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import Instruction
from solders.message import Message, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction, VersionedTransaction

from enclave_app.client import WALLET_REQUEST_TIMEOUT_SECONDS
from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from enclave_app.errors import FramingError
from enclave_app.framing import encode_frame, read_frame, write_frame
from enclave_app.no_attestation import NoAttestationNsm
from enclave_app.protocol import (
    AttestationMode,
    AttestationResponse,
    EnclaveState,
    Request,
    SignTransactionRequest,
    StatusResponse,
    TransactionDecisionResponse,
    decode_request,
)
from enclave_app.protocol import Message as EnclaveMessage
from enclave_app.receipts import Receipt, SessionKey, reasons_digest
from enclave_app.sealing import LocalSealer, SealBinding, unseal_agent_key
from enclave_app.server import EnclaveServer, Handler
from enclave_app.state import Enclave
from enclave_app.transport import UnixAddress
from parent_proxy.app import create_app
from parent_proxy.auth import RateLimiter, attestation_limiter
from parent_proxy.chain import LiteSvmChain
from parent_proxy.enclave_pool import PooledEnclaveClient
from parent_proxy.enclave_relay import EnclaveRelay
from parent_proxy.errors import StoreUnavailable
from parent_proxy.owner_auth import OwnerRequest, StoreNonceRegistry, owner_request_headers
from parent_proxy.sealed_copies import SealedCopies
from parent_proxy.sealed_directory import SealedDirectory
from parent_proxy.services import Services
from parent_proxy.sign_parts import message_hash
from parent_proxy.store.sqlite import SqliteStore
from policies.orders import approval_document
from policies.signing import POLICY_PURPOSE, sign_document
from tests.support.policies import example_policy, owner_public_key

if TYPE_CHECKING:
    from solders.litesvm import LiteSVM

LAMPORTS_PER_SOL = 1_000_000_000
OPERATOR_SECRET = b"operator-secret-for-tests-only!!"
"""The real test enclave's `LocalSealer` secret (`start_enclave`)."""
SIGNATURE_BYTES = 64
HARNESS_ORIGIN = "http://testserver"
"""The harness deployment's public origin by default: the test client's own default base URL."""


class SwitchableClock:
    """The system clock moved by ``offset`` seconds, until ``broken`` is set: then every read raises."""

    def __init__(self) -> None:
        self.broken = False
        self.offset = 0.0

    def now(self) -> float:
        if self.broken:
            raise OSError("clock device unreadable")
        return time.time() + self.offset


class FailingStore:
    """Wraps a real store; the methods named in ``failing`` raise `StoreUnavailable` (the cloud/disk seam), and
    those named in ``before`` call their hook first (e.g. to hold the worker thread there)."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.failing: set[str] = set()
        self.before: dict[str, Callable[[], object]] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name in self.failing:

            def fail(*_: Any, **__: Any) -> Any:
                raise StoreUnavailable("injected: store unreachable")

            return fail
        if name in self.before:
            hook = self.before[name]

            def hooked(*args: Any, **kwargs: Any) -> Any:
                hook()
                return attribute(*args, **kwargs)

            return hooked
        return attribute


@contextmanager
def unwritable(h: Harness, table: str) -> Iterator[None]:
    """While open, the SQLite store's ``table`` is renamed away: every transaction that writes it fails, as a real
    store failure would, and so does whatever else that transaction writes."""
    conn = h.store.inner._conn()
    conn.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        yield
    finally:
        conn.execute(f"ALTER TABLE {table}_away RENAME TO {table}")


@contextmanager
def refused_records(h: Harness, event_type: str) -> Iterator[None]:
    """While open, the SQLite store refuses every audit record of ``event_type`` (a constraint failure inside the
    transaction that writes it, so whatever that transaction also writes fails with it)."""
    if not event_type.replace(".", "").replace("_", "").isalnum():
        raise ValueError(f"not an event type: {event_type!r}")
    conn = h.store.inner._conn()
    conn.execute(
        f"CREATE TRIGGER injected_refusal BEFORE INSERT ON audit_log WHEN NEW.event_type = '{event_type}' "
        "BEGIN SELECT RAISE(ABORT, 'injected: record refused'); END"
    )
    try:
        yield
    finally:
        conn.execute("DROP TRIGGER injected_refusal")


@contextmanager
def unstorable_answers(h: Harness) -> Iterator[None]:
    """While open, every update of an idempotency record (storing an answer under a key) fails in the SQLite store
    as an unreadable schema does (`StoreUnavailable`), inside the transaction that makes it."""
    conn = h.store.inner._conn()
    conn.execute("CREATE TABLE injected_missing (x)")
    conn.execute(
        "CREATE TRIGGER injected_failure BEFORE UPDATE ON idempotency "
        "BEGIN INSERT INTO injected_missing VALUES (1); END"
    )
    conn.execute("DROP TABLE injected_missing")  # the trigger now fails to compile: "no such table"
    try:
        yield
    finally:
        conn.execute("DROP TRIGGER injected_failure")


class LoopThread:
    """An event loop in a daemon thread, for servers the app talks to while TestClient runs the app elsewhere."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


def start_enclave(
    loop: LoopThread,
    path: Path,
    *,
    attestation: str = "nitro",
    nsm: Any = None,
    clock: SwitchableClock | None = None,
    require_multisig: bool = False,
) -> asyncio.Server:
    """The real enclave app: development NSM (mode nitro), or no attestation at all (mode none); or, in mode nitro,
    the given ``nsm`` (e.g. the real NSM driver over the fake device of tests/fakes, rooted in a test PKI). With
    ``clock`` (the proxy's), the enclave's clock is moved by the same offset (as the clocks of one host agree);
    the proxy clock's failures stay the proxy's. ``require_multisig``: ``WAIAAS_ENCLAVE_REQUIRE_MULTISIG`` (true in
    the image), false by default as the harness proxy's ``require_multisig``."""

    def now() -> datetime:
        return datetime.fromtimestamp(time.time() + (clock.offset if clock is not None else 0.0), UTC)

    async def start() -> asyncio.Server:
        if nsm is None:
            device: Any = UnsafeDevelopmentNsm(pcrs={0: bytes(48)}) if attestation == "nitro" else NoAttestationNsm()
        else:
            device = nsm
        mode = AttestationMode(attestation)
        enclave = Enclave(nsm=device, clock=now, require_multisig=require_multisig, attestation_mode=mode)
        handler = Handler(enclave, LocalSealer(OPERATOR_SECRET))
        return await EnclaveServer(handler).start(UnixAddress(str(path)))

    server: asyncio.Server = loop.run(start())
    return server


def stop_enclave(h: Harness, loop: LoopThread, server: asyncio.Server) -> None:
    """Stop the enclave server as when its process goes: the proxy's pooled connections close too, and the socket
    path is free for a replacement."""
    server.close()
    loop.run(h.services.relay.close())
    loop.run(server.wait_closed())
    h.socket.unlink(missing_ok=True)


def fresh_relay(h: Harness, timeout: float) -> None:
    """Replace the proxy's enclave relay by a fresh one (as after a proxy restart: nothing attested, no wallet
    loaded) whose every request, wallet loads included, gives up after ``timeout`` seconds: the tests of a slow
    enclave, after a provisioning that ran with the production's bounds."""
    h.services.relay = EnclaveRelay(PooledEnclaveClient(UnixAddress(str(h.socket)), timeout=timeout))


def start_raw_server(loop: LoopThread, path: Path, handle: Callable[..., Any]) -> asyncio.Server:
    async def start() -> asyncio.Server:
        return await asyncio.start_unix_server(handle, str(path))

    server: asyncio.Server = loop.run(start())
    return server


def answering_requests(answer: Callable[[Request], EnclaveMessage]) -> Callable[..., Any]:
    """A raw enclave's connection handler: each request decoded with the real protocol code and answered with
    ``answer(request)``, until the client closes the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (frame := await read_frame(reader)) is not None:
                writer.write(encode_frame(answer(decode_request(frame)).to_wire()))
                await writer.drain()
        finally:
            writer.close()

    return handle


@contextmanager
def raw_enclave_harness(tmp_path: Path) -> Iterator[Callable[[Callable[[Request], EnclaveMessage]], Harness]]:
    """A harness (enclave timeout 0.5 s) and a function that puts a raw enclave on its socket answering each request
    with ``answer(request)`` (`answering_requests`) and returns the harness; every such server is closed at the end."""
    loop = LoopThread()
    h = build_harness(tmp_path, loop, enclave_timeout=0.5)
    servers: list[asyncio.Server] = []

    def serve(answer: Callable[[Request], EnclaveMessage]) -> Harness:
        servers.append(start_raw_server(loop, h.socket, answering_requests(answer)))
        return h

    try:
        with h.client:
            yield serve
    finally:
        for server in servers:
            server.close()
        loop.stop()


def start_answering_server(loop: LoopThread, path: Path, answer: bytes) -> asyncio.Server:
    """A stand-in enclave that reads one request and writes ``answer`` (raw bytes: a frame or garbage), then closes."""

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(65536)
            writer.write(answer)
            await writer.drain()
        finally:
            writer.close()

    return start_raw_server(loop, path, respond)


def new_session_key() -> SessionKey:
    return SessionKey(os.urandom(32))


STAND_IN_POLICY_SEQUENCE = 1
"""The policy sequence a stand-in enclave's receipts and decisions state."""


def stand_in_decision(verdict: str) -> dict[str, Any]:
    """The decision a stand-in enclave answers with, agreeing with what `signed_receipt` states (the policy
    sequence, no reasons) as the real enclave's decision agrees with its receipt."""
    return {"verdict": verdict, "policy_sequence": STAND_IN_POLICY_SEQUENCE, "reasons": []}


def signed_receipt(
    session: SessionKey,
    wallet_id: str,
    *,
    kind: str = "transaction",
    verdict: str = "deny",
    approved: bool = False,
    message_hash: bytes = bytes(32),
    time_ms: int | None = None,
    reasons: list[Any] | None = None,
) -> tuple[bytes, bytes]:
    """A decision receipt and its signature by ``session`` (what a stand-in enclave with that key would answer),
    dated ``time_ms`` (default: now), stating the digest of ``reasons`` (default: none)."""
    receipt = Receipt(
        kind=kind, wallet_id=wallet_id, policy_sequence=STAND_IN_POLICY_SEQUENCE, policy_hash=bytes(32),
        message_hash=message_hash,
        verdict=verdict, approved=approved, reasons_digest=reasons_digest(reasons or []),
        time_ms=int(time.time() * 1000) if time_ms is None else time_ms,
        counter=session.next_counter(),
    )  # fmt: skip
    return session.sign(receipt)


def agent_private_key(h: Harness) -> Ed25519PrivateKey:
    """The wallet's agent key, unsealed from its stored blob with the test enclave's operator secret (the key the
    real enclave signs with); `unseal_agent_key` checks it is the stored agent public key's."""
    wallet = h.store.get_wallet(h.wallet_id)
    binding = SealBinding(wallet.wallet_id, wallet.agent_pubkey, wallet.owner_pubkey)
    return unseal_agent_key(LocalSealer(OPERATOR_SECRET), wallet.sealed_key, binding)


def sign_in_slot(key: Ed25519PrivateKey, unsigned: bytes, slot: int = 0) -> tuple[bytes, bytes]:
    """``unsigned`` with ``key``'s Ed25519 signature over its message in signer slot ``slot``, and that signature
    (as the enclave splices it in; fewer than 128 signers, so the count is one byte)."""
    signature = key.sign(to_bytes_versioned(VersionedTransaction.from_bytes(unsigned).message))
    start = 1 + SIGNATURE_BYTES * slot
    return unsigned[:start] + signature + unsigned[start + SIGNATURE_BYTES :], signature


@dataclass(frozen=True, slots=True)
class ForRequest:
    """A stand-in answer made from the decoded request it answers (say, a receipt about the message sent)."""

    make: Callable[[Request], EnclaveMessage]


def stand_in_refusal(session: SessionKey, wallet_id: str) -> ForRequest:
    """A deny decision whose receipt ``session`` signed, about the transaction requested (as the real enclave's)."""

    def make(request: Request) -> TransactionDecisionResponse:
        if not isinstance(request, SignTransactionRequest):
            raise TypeError(f"a refusal answers sign_transaction, not {type(request).__name__}")
        receipt, signature = signed_receipt(session, wallet_id, message_hash=message_hash(request.transaction))
        return TransactionDecisionResponse(
            decision=stand_in_decision("deny"), signature=None, signed_transaction=None,
            receipt=receipt, receipt_signature=signature,
        )  # fmt: skip

    return ForRequest(make)


StandInAnswer = EnclaveMessage | ForRequest


def start_stand_in_enclave(
    loop: LoopThread, path: Path, session: SessionKey, answer: Callable[[], StandInAnswer] | StandInAnswer
) -> asyncio.Server:
    """A stand-in enclave with session key ``session``: ``attestation`` (mode none) and ``ping`` name that key, as
    the real enclave does; every other request gets ``answer`` (or ``answer()``; a `ForRequest` is made from the
    request). Any number of requests per connection, like the real server."""

    def respond_to(request: Any) -> EnclaveMessage:
        kind = request.get("type") if isinstance(request, dict) else None
        if kind == "attestation":
            return AttestationResponse(
                document=None, mode=AttestationMode.NONE, reason="stand-in enclave for tests",
                session_public_key=session.public_key,
            )  # fmt: skip
        if kind == "ping":
            return StatusResponse(state=EnclaveState.READY, wallets=1, session_public_key=session.public_key)
        reply = answer() if callable(answer) else answer
        return reply.make(decode_request(request)) if isinstance(reply, ForRequest) else reply

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await read_frame(reader)) is not None:
                await write_frame(writer, respond_to(request).to_wire())
        except FramingError:
            pass
        finally:
            writer.close()

    return start_raw_server(loop, path, serve)


@dataclass
class Harness:
    client: TestClient
    services: Services
    store: Any
    clock: SwitchableClock
    owner: Ed25519PrivateKey
    socket: Path
    origin: str = HARNESS_ORIGIN
    """The deployment's public origin: the test client's base URL and the audience its owner requests are signed for."""
    wallet_id: str = "w1"
    agent: Pubkey = field(default_factory=Pubkey.default)
    token: str = ""
    token_id: str = ""

    @property
    def owner_pub(self) -> Pubkey:
        return owner_public_key(self.owner)

    def owner_call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: Ed25519PrivateKey | None = None,
        timestamp: int | None = None,
        nonce: str | None = None,
    ) -> Any:
        content = b"" if body is None else json.dumps(body).encode()
        signer = key or self.owner
        request = OwnerRequest(
            method, path, content, int(time.time()) if timestamp is None else timestamp, nonce or secrets.token_hex(16),
            audience=self.origin,
        )  # fmt: skip
        headers = owner_request_headers(request, owner_public_key(signer), signer.sign)
        headers["Content-Type"] = "application/json"
        return self.client.request(method, path, content=content, headers=headers)

    def sign(self, tx: bytes, key: str | None = None, token: str | None = None, **extra: Any) -> Any:
        import base64

        body = {"transaction": base64.b64encode(tx).decode(), "idempotency_key": key or secrets.token_hex(8), **extra}
        return self.client.post(
            f"/v1/wallets/{self.wallet_id}/transactions/sign",
            json=body,
            headers={"Authorization": f"Bearer {token or self.token}"},
        )

    def policy(self, sequence: int = 1, *, expires_at: int | None = None, **rules: Any) -> dict[str, Any]:
        doc = example_policy()
        doc["wallet_id"], doc["sequence"] = self.wallet_id, sequence
        if expires_at is not None:
            doc["expires_at"] = expires_at
        doc["rules"].update(rules)
        return sign_document(POLICY_PURPOSE, doc, self.owner)

    def transfer(self, lamports: int, to: Pubkey, *, instructions: tuple[Instruction, ...] = ()) -> bytes:
        ixs = [
            set_compute_unit_price(1_000),
            set_compute_unit_limit(50_000),
            transfer(TransferParams(from_pubkey=self.agent, to_pubkey=to, lamports=lamports)),
            *instructions,
        ]
        message = Message.new_with_blockhash(ixs, self.agent, Hash.new_unique())
        return bytes(Transaction.new_unsigned(message))

    def audit_events(self) -> list[str]:
        return [r.event_type for r in self.store.audit_records(0, 10_000)]

    def spent(self, asset: str = "SOL", window: int = 86_400) -> int:
        return int(self.store.spent_in_window(self.wallet_id, asset, window, time.time()))


def build_harness(
    tmp_path: Path,
    loop: LoopThread,
    *,
    enclave_timeout: float = 5.0,
    rate: float = 1000.0,
    burst: int | None = None,
    store: Any = None,
    require_multisig: bool = False,
    origin: str = HARNESS_ORIGIN,
    store_threads: int = 1,
) -> Harness:
    """The API over a SQLite store in ``tmp_path`` (or ``store``, say a DynamoDB one), wrapped in a `FailingStore`.
    ``require_multisig`` is `Services.require_multisig` (``WAIAAS_REQUIRE_MULTISIG``, true in production): false
    here, as on the self-host local chain, because most tests install policies that declare no multisig (the
    example policy's); the tests of the requirement itself ask for true. ``origin``: the deployment's one public
    origin (`Services.public_origins`), which is also the test client's base URL. ``store_threads``:
    `Services.store_threads` (two let a request run while another is held in a store hook). ``rate`` and ``burst``
    (``int(rate)`` unless given): the per-token and attestation buckets; a test counting on the bucket running dry
    sets a rate far below its burst, so a slow machine's refill between calls cannot hand it a token back."""
    from solders.litesvm import LiteSVM

    socket = tmp_path / "enclave.sock"
    store = FailingStore(store or SqliteStore(tmp_path / "state.db"))
    clock = SwitchableClock()
    owner = Ed25519PrivateKey.generate()
    services = Services(
        store=store,
        clock=clock,
        relay=EnclaveRelay(  # sealing requests get the production's longer bound, whatever ``enclave_timeout`` is
            PooledEnclaveClient(
                UnixAddress(str(socket)), timeout=enclave_timeout, wallet_timeout=WALLET_REQUEST_TIMEOUT_SECONDS
            )
        ),
        chain=LiteSvmChain(LiteSVM()),
        rate_limiter=RateLimiter(rate, int(rate) if burst is None else burst),
        attestation_limiter=attestation_limiter(rate, int(rate) if burst is None else burst),
        nonces=StoreNonceRegistry(store),
        owner_keys=frozenset({owner_public_key(owner)}),
        public_origins=frozenset({origin}),
        owner_max_skew_seconds=300,
        max_body_bytes=16 * 1024,
        require_multisig=require_multisig,
        store_threads=store_threads,
    )
    client = TestClient(create_app(services), base_url=origin, raise_server_exceptions=False)
    return Harness(client, services, store, clock, owner, socket, origin)


def provision(
    h: Harness, policy: dict[str, Any] | None = None, *, before_install: Callable[[Harness], object] | None = None
) -> None:
    """Create wallet ``h.wallet_id``, issue a token, install ``policy`` (default: the example). ``before_install``
    runs once the agent key is known, before the policy goes in (say, to set up the multisig it declares)."""
    created = h.owner_call("POST", "/v1/wallets", {"wallet_id": h.wallet_id, "owner_public_key": str(h.owner_pub)})
    if created.status_code != 201:
        raise AssertionError(created.text)
    h.agent = Pubkey.from_string(created.json()["agent_public_key"])
    if before_install is not None:
        before_install(h)
    issued = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/tokens")
    h.token, h.token_id = issued.json()["token"], issued.json()["token_id"]
    installed = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": policy or h.policy()})
    if installed.status_code != 200:
        raise AssertionError(installed.text)


def svm(h: Harness) -> LiteSVM:
    """The harness's embedded chain (the tests write accounts into it)."""
    assert isinstance(h.services.chain, LiteSvmChain)
    return h.services.chain.svm


def signature_of(response: Any) -> Signature:
    return Signature.from_string(response.json()["signature"])


def running_harness(
    tmp_path: Path,
    *,
    attestation: str = "nitro",
    nsm: Any = None,
    enclave_requires_multisig: bool | None = None,
    **kwargs: Any,
) -> Iterator[Harness]:
    """`build_harness` (``kwargs``) with the real enclave (`start_enclave`), which requires a multisig as the proxy
    does (``require_multisig``) unless ``enclave_requires_multisig`` says otherwise."""
    loop = LoopThread()
    server = None
    if enclave_requires_multisig is None:
        enclave_requires_multisig = bool(kwargs.get("require_multisig", False))
    try:
        h = build_harness(tmp_path, loop, **kwargs)
        server = start_enclave(loop, h.socket, attestation=attestation, nsm=nsm, clock=h.clock,
                               require_multisig=enclave_requires_multisig)  # fmt: skip
        with h.client:
            yield h
    finally:
        if server is not None:
            server.close()
        loop.stop()


@contextmanager
def provisioned_harness(
    tmp_path: Path, *, policy: Callable[[Harness], dict[str, Any]] | None = None, **kwargs: Any
) -> Iterator[tuple[Harness, LoopThread, list[asyncio.Server]]]:
    """`build_harness` (``kwargs``) with the real enclave (`start_enclave`: its server is the first of the yielded
    list) and a provisioned wallet (`provision`, with ``policy(h)`` if given); every server in the list, and any a
    test adds to it, is closed at the end."""
    loop = LoopThread()
    h = build_harness(tmp_path, loop, **kwargs)
    servers = [start_enclave(loop, h.socket)]
    try:
        with h.client:
            provision(h, None if policy is None else policy(h))
            yield h, loop, servers
    finally:
        for s in servers:
            s.close()
        loop.stop()


@contextmanager
def stand_in_harness(tmp_path: Path) -> Iterator[tuple[Harness, LoopThread, list[asyncio.Server]]]:
    """A provisioned wallet (off-chain messages allowed) whose real enclave is stopped again, so that stand-in
    enclaves can take its socket; every server in the yielded list is closed at the end."""

    def policy(h: Harness) -> dict[str, Any]:
        return h.policy(1, offchain_messages={"allowed": True})

    with provisioned_harness(tmp_path, policy=policy, enclave_timeout=2.0) as running:
        h, loop, servers = running
        stop_enclave(h, loop, servers[0])
        yield running


def spy_calls(target: Any, method: str) -> list[Any]:
    """Wrap ``target``'s async ``method``; the list grows by the first argument of each call (which goes through)."""
    calls: list[Any] = []
    original = getattr(target, method)

    async def spied(first: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(first)
        return await original(first, *args, **kwargs)

    setattr(target, method, spied)
    return calls


def approve_escalated(h: Harness, tx: bytes) -> tuple[str, Any]:
    """Sign ``tx``, which the proxy's own check escalates (202, no enclave call), then send the owner's approval of
    exactly that transaction: the approval id and the approval's answer."""
    escalated = h.sign(tx)
    assert escalated.status_code == 202, escalated.text
    approval_id = escalated.json()["approval_id"]
    document = approval_document(h.wallet_id, message_hash(tx), int(time.time()) + 600)
    path = f"/v1/wallets/{h.wallet_id}/approvals/{approval_id}/approve"
    return approval_id, h.owner_call("POST", path, {"envelope": sign_document("approval", document, h.owner)})


def pending_approval_ids(h: Harness) -> list[str]:
    return [p["approval_id"] for p in h.owner_call("GET", f"/v1/wallets/{h.wallet_id}/approvals").json()]


def copying_harness(tmp_path: Path, sealed: Path, *, provisioned: bool = False) -> Iterator[Harness]:
    """`running_harness` whose proxy copies each new sealed key into the directory ``sealed`` (made here, mode 0700),
    as the self-host bundle's sealed-keys volume; ``provisioned``: with its wallet made (`provision`)."""
    sealed.mkdir(mode=0o700)
    for harness in running_harness(tmp_path):
        harness.services.sealed_copies = SealedCopies.in_directory(SealedDirectory(sealed))
        if provisioned:
            provision(harness)
        yield harness
