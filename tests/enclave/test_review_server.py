"""Review findings on the server: a refusal whose reason echoes hostile input (an envelope's unknown key, a
duplicate key) is still answered with its error code, over the wire, on a connection that stays usable."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from enclave_app.framing import read_frame
from enclave_app.no_attestation import NoAttestationNsm
from enclave_app.protocol import MAX_ERROR_MESSAGE_CHARS, ErrorCode, ErrorResponse, StatusResponse, decode_response
from enclave_app.sealing import LocalSealer
from enclave_app.server import EnclaveServer, Handler
from enclave_app.state import Enclave, Wallet
from tests.support.policy_handler import NOW

WALLET = "w-review"


class _Writer:
    """Collects what the server writes (a stand-in for a StreamWriter at the socket seam)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        return None

    async def wait_closed(self) -> None:
        return None


def _frame(value: Any) -> bytes:
    body = cbor2.dumps(value)
    return struct.pack(">I", len(body)) + body


def _serve(frames: bytes) -> list[Any]:
    enclave = Enclave(nsm=NoAttestationNsm(), clock=lambda: NOW, require_multisig=False)
    key = Ed25519PrivateKey.from_private_bytes(bytes([3]) * 32)
    agent = Pubkey.from_bytes(key.public_key().public_bytes_raw())
    enclave.add(Wallet(wallet_id=WALLET, owner=Pubkey.from_bytes(bytes([5]) * 32), agent_key=key, agent=agent))
    handler = Handler(enclave, LocalSealer(b"operator secret for the tests!!"))

    async def run() -> list[Any]:
        reader = asyncio.StreamReader()
        reader.feed_data(frames)
        reader.feed_eof()
        writer = _Writer()
        await EnclaveServer(handler, read_timeout=1.0).serve_connection(reader, writer)  # type: ignore[arg-type]
        out = asyncio.StreamReader()
        out.feed_data(bytes(writer.data))
        out.feed_eof()
        answers = []
        while (frame := await read_frame(out)) is not None:
            answers.append(decode_response(frame))
        return answers

    return asyncio.run(run())


@pytest.mark.parametrize(
    "order",
    [
        json.dumps({"x" * 3000: 1}).encode(),
        b'{"document": {"' + b"k" * 1500 + b'": 1, "' + b"k" * 1500 + b'": 2}, "signature": ""}',
    ],
    ids=["unknown envelope key", "duplicate key"],
)
@pytest.mark.parametrize("kind", ["freeze", "unfreeze"])
def test_refusal_echoing_a_long_hostile_key_is_still_answered(order: bytes, kind: str) -> None:
    request = {"v": 1, "type": kind, "wallet_id": WALLET, "order": order}
    answers = _serve(_frame(request) + _frame({"v": 1, "type": "ping"}))
    assert [type(answer) for answer in answers] == [ErrorResponse, StatusResponse]
    refusal = answers[0]
    assert refusal.code is ErrorCode.ORDER_INVALID
    assert refusal.message.startswith(f"{kind} order refused: ")
    assert len(refusal.message) <= MAX_ERROR_MESSAGE_CHARS
