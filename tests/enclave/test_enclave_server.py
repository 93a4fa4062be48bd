"""The server under hostile input and failure: bad frames, limits, timeouts, the failed state, off-chain messages,
and a scan proving that no key bytes ever reach a response, a log line or the console."""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from solders.pubkey import Pubkey
from solders.signature import Signature

from enclave_app.errors import EnclaveRequestError, InconsistentStateError
from enclave_app.framing import MAX_FRAME_BYTES, read_frame
from enclave_app.protocol import EnclaveState, ErrorCode, ErrorResponse, decode_response
from enclave_app.receipts import verify_receipt
from enclave_app.sealing import LocalSealer
from enclave_app.server import EnclaveServer
from enclave_app.transport import TcpAddress
from tests.enclave.sign_requests import WALLET, ready_wallet, spent, transfer_tx, verdict
from tests.support.enclave_world import Boot, EnclaveWorld, serving


@pytest.fixture
def local_boot(world: EnclaveWorld) -> Boot:
    """A boot with the local sealer: no KMS round trip (Argon2id only on provision/load)."""
    return world.boot(sealers=LocalSealer(b"operator secret for the tests!!"))


class _Writer:
    """Collects what the server writes (a stand-in for a StreamWriter at the socket seam)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        return None


def _answers(data: bytes) -> list[Any]:
    async def run() -> list[Any]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        out = []
        while (frame := await read_frame(reader)) is not None:
            out.append(decode_response(frame))
        return out

    return asyncio.run(run())


def _serve_bytes(boot: Boot, data: bytes) -> list[Any]:
    async def run() -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        writer = _Writer()
        await EnclaveServer(boot.handler, read_timeout=1.0).serve_connection(reader, writer)  # type: ignore[arg-type]
        assert writer.closed
        return bytes(writer.data)

    return _answers(asyncio.run(run()))


def _frame(value: Any) -> bytes:
    body = cbor2.dumps(value)
    return struct.pack(">I", len(body)) + body


def test_oversized_frame_gets_bad_frame_before_any_read(local_boot: Boot) -> None:
    answers = _serve_bytes(local_boot, struct.pack(">I", MAX_FRAME_BYTES + 1))
    assert answers == [ErrorResponse(code=ErrorCode.BAD_FRAME, message="frame too large")]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x00\x00\x00\x00", ErrorCode.BAD_FRAME),
        (b"\x00\x00\x00\x02\xff\xff", ErrorCode.BAD_FRAME),
        (b"\x00\x00\x00\x05ab", ErrorCode.BAD_FRAME),
        (b"\x00\x00", ErrorCode.BAD_FRAME),
        (_frame({"v": 1, "type": "launch"}), ErrorCode.BAD_REQUEST),
        (_frame(cbor2.CBORTag(1, 0)), ErrorCode.BAD_FRAME),
    ],
)
def test_malformed_frames_get_an_error_code(local_boot: Boot, data: bytes, code: ErrorCode) -> None:
    answers = _serve_bytes(local_boot, data)
    assert [a.code for a in answers] == [code]
    assert local_boot.enclave.state is EnclaveState.BOOTING


def test_bad_request_keeps_the_connection_a_bad_frame_ends_it(local_boot: Boot) -> None:
    data = _frame({"v": 1, "type": "ping", "x": 1}) + _frame({"v": 1, "type": "ping"}) + b"\x00\x00\x00\x00"
    data += _frame({"v": 1, "type": "ping"})
    answers = _serve_bytes(local_boot, data)
    assert [type(a).__name__ for a in answers] == ["ErrorResponse", "StatusResponse", "ErrorResponse"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300) | st.builds(lambda b: struct.pack(">I", len(b)) + b, st.binary(max_size=300)))
def test_hostile_bytes_never_crash_the_server(local_boot: Boot, data: bytes) -> None:
    answers = _serve_bytes(local_boot, data)
    for answer in answers:
        if isinstance(answer, ErrorResponse):
            assert answer.code in (ErrorCode.BAD_FRAME, ErrorCode.BAD_REQUEST)
    assert local_boot.enclave.state is not EnclaveState.FAILED


def test_connection_limit_and_read_timeout(local_boot: Boot) -> None:
    async def run() -> None:
        async with serving(local_boot, max_connections=1, read_timeout=0.3) as (client, _):
            address = client._address
            assert isinstance(address, TcpAddress)  # `serving` listens on TCP
            reader, writer = await asyncio.open_connection(address.host, address.port)
            writer.write(b"\x00\x00")  # half a header, then silence
            await writer.drain()
            with pytest.raises(EnclaveRequestError, match="busy: connection limit reached"):
                await client.ping()
            answer = decode_response(await read_frame(reader))
            assert answer == ErrorResponse(code=ErrorCode.TIMEOUT, message="frame not received")
            writer.close()
            await asyncio.sleep(0.05)
            assert (await client.ping()).state is EnclaveState.BOOTING

    asyncio.run(run())


def test_a_request_not_served_in_time_is_answered_timeout_and_the_enclave_serves_on(
    local_boot: Boot, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = local_boot.handler.handle
    slow = {"on": True}

    async def slow_handle(request: Any) -> Any:
        if slow["on"]:
            await asyncio.sleep(5)
        return await handle(request)

    monkeypatch.setattr(local_boot.handler, "handle", slow_handle)

    async def run() -> None:
        async with serving(local_boot, request_timeout=0.2) as (client, _):
            started = asyncio.get_running_loop().time()
            with pytest.raises(EnclaveRequestError, match="timeout: request not served in time"):
                await client.ping()
            assert asyncio.get_running_loop().time() - started < 2
            slow["on"] = False
            assert (await client.ping()).state is EnclaveState.BOOTING

    asyncio.run(run())


def test_unexpected_error_moves_to_failed_which_refuses_everything(
    world: EnclaveWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    boot = world.boot()

    async def run() -> None:
        async with serving(boot) as (client, _):
            agent = await ready_wallet(world, client)

            def broken(*_args: Any) -> Any:
                raise KeyError("boom")

            monkeypatch.setattr("enclave_app.server.sign_transaction", broken)
            with pytest.raises(EnclaveRequestError, match="internal: internal error; enclave failed"):
                await client.sign_transaction(WALLET, transfer_tx(agent, 1000), spent=spent())
            monkeypatch.undo()
            for call in (client.ping(), client.attestation(b"n" * 16), client.install_policy(WALLET, b"{}")):
                with pytest.raises(EnclaveRequestError, match="failed: enclave is in the failed state"):
                    await call
            with pytest.raises(EnclaveRequestError, match="failed"):
                await client.sign_transaction(WALLET, transfer_tx(agent, 1000), spent=spent())

    asyncio.run(run())
    assert boot.enclave.state is EnclaveState.FAILED


def test_inconsistency_moves_to_failed(world: EnclaveWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    boot = world.boot()

    async def run() -> None:
        async with serving(boot) as (client, _):
            agent = await ready_wallet(world, client)

            def inconsistent(*_args: Any) -> Any:
                raise InconsistentStateError("allowed transaction has no single agent signer slot")

            monkeypatch.setattr("enclave_app.signer.sign_at_agent_slot", inconsistent)
            with pytest.raises(EnclaveRequestError, match="failed: enclave entered the failed state"):
                await client.sign_transaction(WALLET, transfer_tx(agent, 1000), spent=spent())

    asyncio.run(run())
    assert boot.enclave.state is EnclaveState.FAILED


def _offchain(signers: list[bytes], text: bytes = b"hello agent") -> bytes:
    body = b"\xffsolana offchain" + b"\x00" + bytes(32) + b"\x00" + bytes([len(signers)]) + b"".join(signers)
    return body + struct.pack("<H", len(text)) + text


def test_offchain_messages(world: EnclaveWorld) -> None:
    async def run() -> None:
        async with serving(world.boot()) as (client, _):
            agent = await ready_wallet(world, client)
            message = _offchain([bytes(agent)])
            answer = await client.sign_message(WALLET, message)
            assert Signature.from_bytes(answer.signature).verify(agent, message)
            status = await client.ping()
            receipt = verify_receipt(answer.receipt, answer.receipt_signature, status.session_public_key)
            assert receipt.kind == "message" and receipt.verdict == "allow"
            with pytest.raises(EnclaveRequestError, match="message_invalid: the agent key is not a signer"):
                await client.sign_message(WALLET, _offchain([bytes(Pubkey.new_unique())]))
            with pytest.raises(EnclaveRequestError, match="message_invalid: not a valid off-chain message"):
                await client.sign_message(WALLET, transfer_tx(agent, 1))
            with pytest.raises(EnclaveRequestError, match="unknown_wallet"):
                await client.sign_message("nobody", message)

    asyncio.run(run())


def _forms(secret: bytes) -> list[bytes]:
    from solders.keypair import Keypair

    forms = [secret, secret.hex().encode(), secret.hex().upper().encode(), base64.b64encode(secret)]
    forms.append(base64.urlsafe_b64encode(secret).rstrip(b"="))
    forms.append(str(Keypair.from_seed(secret)).encode())  # base58 of the 64-byte keypair
    forms.append(repr(list(secret)).encode())
    return forms


def test_no_key_bytes_in_any_response_log_or_output(
    world: EnclaveWorld, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    boot = world.boot()
    seen: list[bytes] = []

    async def run() -> None:
        async with serving(boot) as (client, _):
            original = client.request

            async def recording(message: Any) -> Any:
                answer = await original(message)
                seen.append(cbor2.dumps(answer.to_wire()))
                return answer

            client.request = recording  # type: ignore[method-assign]
            agent = await ready_wallet(world, client)
            await client.attestation(b"n" * 16)
            await client.sign_transaction(WALLET, transfer_tx(agent, 1000), spent=spent())
            await client.sign_transaction(WALLET, transfer_tx(agent, 1000), spent=())
            await client.sign_message(WALLET, _offchain([bytes(agent)]))
            for call, code in (
                (client.provision_wallet(WALLET, world.owner_public), ErrorCode.WALLET_EXISTS),
                (client.install_policy(WALLET, b"{}"), ErrorCode.POLICY_INVALID),
            ):
                with pytest.raises(EnclaveRequestError) as refused:
                    await call
                assert refused.value.code == code
            print(repr(boot.enclave.wallet(WALLET)), repr(boot.enclave.session), boot.enclave.__dict__)

    asyncio.run(run())
    wallet = boot.enclave.wallet(WALLET)
    secrets = [wallet.agent_key.private_bytes_raw(), boot.enclave.session._key.private_bytes_raw()]
    captured = capsys.readouterr()
    haystacks = [*seen, caplog.text.encode(), captured.out.encode(), captured.err.encode()]
    assert len(seen) >= 7 and "Wallet(" in captured.out
    for secret in secrets:
        for form in _forms(secret):
            for haystack in haystacks:
                assert form not in haystack


def test_verdict_helper_reads_the_decision(world: EnclaveWorld) -> None:
    async def run() -> str:
        async with serving(world.boot()) as (client, _):
            agent = await ready_wallet(world, client)
            return verdict(await client.sign_transaction(WALLET, transfer_tx(agent, 1000), spent=spent()))

    assert asyncio.run(run()) == "allow"
