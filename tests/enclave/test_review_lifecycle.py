"""Findings of the sixth session's review of the enclave lifecycle (each test failed before its fix).

- Two Argon2id derivations at once (two wallets loaded or provisioned together with the local sealer) never
  returned, and the next one raised MemoryError, which moved the signer to the failed state.
- A key derivation that fails is a sealing failure (``unseal_failed``), not an inconsistency of the enclave.
- A lone surrogate in an owner envelope moved the enclave to failed, or dropped the connection unanswered.
- A peer that never read its answers held its connection slot for ever.
- A TCP listener on any address was accepted.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from enclave_app.client import EnclaveClient
from enclave_app.errors import EnclaveRequestError, SealingError, SettingsError
from enclave_app.framing import encode_frame
from enclave_app.protocol import (
    MAX_ERROR_MESSAGE_CHARS,
    EnclaveState,
    ErrorCode,
    ErrorResponse,
    FreezeRequest,
    InstallPolicyRequest,
    PingRequest,
    Request,
    SignTransactionRequest,
    TransactionDecisionResponse,
    UnfreezeRequest,
)
from enclave_app.sealing import LocalSealer, SealBinding, unseal_agent_key
from enclave_app.server import EnclaveServer, quotable
from enclave_app.settings import load_settings
from enclave_app.transport import UnixAddress
from tests.enclave.sign_requests import spent, transfer_tx
from tests.enclave.startup_env import enclave_env
from tests.support.policy_handler import AGENT, WALLET, policy_handler
from tests.support.served_enclave import OWNER_PUBLIC, SECRET, sealed, serve


def test_wallets_loaded_and_provisioned_at_the_same_time_all_succeed(tmp_path: Path) -> None:
    code = f"from tests.support.served_enclave import concurrent_loads; concurrent_loads({str(tmp_path)!r})"
    try:
        run = subprocess.run(
            [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=90,
            cwd=Path(__file__).parents[2],
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("concurrent wallet loads did not finish within 90 s (key derivations stuck)")
    assert run.stdout.strip() == "state=provisioned wallets=4 failures=[]", (run.stdout, run.stderr[-2000:])


def test_a_failing_key_derivation_is_a_sealing_error_and_the_signer_stays_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public, blob = sealed("w1")
    binding = SealBinding("w1", public, OWNER_PUBLIC)

    def exhausted(self: Argon2id, secret: bytes) -> bytes:
        raise MemoryError("Not enough memory to derive key")

    monkeypatch.setattr(Argon2id, "derive", exhausted)
    with pytest.raises(SealingError, match="key derivation failed"):
        unseal_agent_key(LocalSealer(SECRET), blob, binding)

    async def main() -> None:
        enclave, server, client = await serve(tmp_path)
        async with server:
            with pytest.raises(EnclaveRequestError) as refused:
                await client.load_wallet("w1", owner_public_key=OWNER_PUBLIC, agent_public_key=public, sealed_blob=blob)
            assert refused.value.code == "unseal_failed"
            assert enclave.state is not EnclaveState.FAILED and enclave.wallet_count == 0
            monkeypatch.undo()
            await client.load_wallet("w1", owner_public_key=OWNER_PUBLIC, agent_public_key=public, sealed_blob=blob)
            assert enclave.wallet_count == 1

    asyncio.run(asyncio.wait_for(main(), 60))


# -- a lone surrogate in an owner envelope (JSON "\ud800") -------------------------------------------------------------
SURROGATE_DOCUMENT = b'{"document": {"x": "\\ud800"}, "signature": "' + b"1" * 64 + b'"}'
SURROGATE_KEY = b'{"document": {}, "signature": "x", "\\ud800": 1}'


@pytest.mark.parametrize("envelope", [SURROGATE_DOCUMENT, SURROGATE_KEY], ids=["in-a-value", "as-a-key"])
@pytest.mark.parametrize("kind", ["install_policy", "freeze", "unfreeze", "escalation_approval"])
def test_a_lone_surrogate_in_an_owner_envelope_is_refused_and_changes_nothing(kind: str, envelope: bytes) -> None:
    """Before: a UnicodeEncodeError in the canonical encoding, before the signature check, moved the enclave to
    failed (in a value), or the refusal quoting the key could not be encoded and the connection dropped unanswered."""
    handler = policy_handler()
    requests: dict[str, Callable[[], Request]] = {
        "install_policy": lambda: InstallPolicyRequest(WALLET, envelope),
        "freeze": lambda: FreezeRequest(WALLET, envelope),
        "unfreeze": lambda: UnfreezeRequest(WALLET, envelope),
        "escalation_approval": lambda: SignTransactionRequest(
            WALLET, transfer_tx(AGENT, 2 * 10**9), spent=spent(), approval=envelope
        ),
    }
    request = requests[kind]()
    before = (handler.enclave.state, handler.enclave.wallet(WALLET).frozen)
    answer = asyncio.run(handler.handle(request))
    assert (handler.enclave.state, handler.enclave.wallet(WALLET).frozen) == before
    assert getattr(answer, "signature", None) is None
    if isinstance(answer, ErrorResponse):
        assert answer.code is not ErrorCode.INTERNAL and answer.code is not ErrorCode.FAILED, answer
        encode_frame(answer.to_wire())  # the answer can be sent
    else:  # the escalation's answer: refused, with its reasons
        assert isinstance(answer, TransactionDecisionResponse), answer
        assert answer.decision["verdict"] in ("escalate", "deny"), answer.decision


def test_an_error_message_quoting_a_lone_surrogate_can_be_sent() -> None:
    message = quotable("policy signature or document invalid: envelope.\ud800 " + "x" * 1000)
    assert message.startswith("policy signature or document invalid: envelope.\\ud800")
    assert len(message) <= MAX_ERROR_MESSAGE_CHARS
    encode_frame(ErrorResponse(code=ErrorCode.ORDER_INVALID, message=message).to_wire())


# -- a peer that never reads its answers -------------------------------------------------------------------------------
def test_a_peer_that_never_reads_its_answers_loses_its_connection_slot(tmp_path: Path) -> None:
    """Before: writing the answers had no time limit; with the socket buffers full the slot was held for ever and
    every other client got ``busy``."""
    handler = policy_handler()

    async def main() -> None:
        path = str(tmp_path / "s.sock")
        server = EnclaveServer(handler, max_connections=1, read_timeout=1.0, request_timeout=1.0)
        async with await server.start(UnixAddress(path)):
            _reader, writer = await asyncio.open_unix_connection(path)
            writer.write(encode_frame(PingRequest().to_wire()) * 200_000)  # answers never read
            await asyncio.sleep(4)
            status = await EnclaveClient(UnixAddress(path), timeout=3).ping()  # the slot is free again
            assert status.state is EnclaveState.READY
            writer.transport.abort()  # its unsent requests are dropped with it
            await asyncio.sleep(0)

    asyncio.run(asyncio.wait_for(main(), 60))


# -- where the signer may listen ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("listen", ["tcp:0.0.0.0:5005", "tcp:10.0.0.5:5005", "tcp:localhost:5005", "tcp:[::]:5005"])
def test_a_tcp_listener_off_loopback_is_refused_at_start_up(tmp_path: Path, listen: str) -> None:
    """Before: accepted, though whoever reaches the listener is "the parent" (no authentication in the protocol)."""
    with pytest.raises(SettingsError, match="loopback"):
        load_settings(enclave_env(tmp_path, LISTEN=listen))


@pytest.mark.parametrize("listen", ["tcp:127.0.0.1:5005", "tcp:[::1]:5005"])
def test_a_loopback_tcp_listener_is_accepted(tmp_path: Path, listen: str) -> None:
    assert load_settings(enclave_env(tmp_path, LISTEN=listen)).listen is not None
