"""Provisioning receipts: the enclave's answer to provision_wallet carries a receipt, signed by the attested session
key, binding wallet id, agent key and owner key (a parent substituting its own owner key is caught by the owner);
load_wallet answers carry none; older enclaves' answers (without the fields) still decode."""

from __future__ import annotations

import asyncio

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_app.errors import ProtocolError, ReceiptError
from enclave_app.protocol import WalletResponse, decode_response
from enclave_app.receipts import (
    PROVISION_RECEIPT_DOMAIN,
    ProvisionReceipt,
    SessionKey,
    verify_provision_receipt,
    verify_receipt,
)
from enclave_app.sealing import LocalSealer
from tests.enclave.sign_requests import WALLET
from tests.support.enclave_world import EnclaveWorld, serving

KEY = bytes(range(32))
SIG = bytes(64)


def test_provision_answer_carries_a_receipt_signed_by_the_session_key_load_answer_none(world: EnclaveWorld) -> None:
    async def run() -> None:
        async with serving(world.boot(sealers=LocalSealer(b"operator secret for the tests!!"))) as (client, _):
            status = await client.ping()
            answer = await client.provision_wallet(WALLET, world.owner_public)
            assert answer.receipt is not None and answer.receipt_signature is not None
            receipt = verify_provision_receipt(answer.receipt, answer.receipt_signature, status.session_public_key)
            assert receipt.purpose == "provision"
            assert receipt.wallet_id == WALLET
            assert receipt.agent_public_key == answer.agent_public_key
            assert receipt.owner_public_key == world.owner_public
            assert abs(receipt.time_ms - world.clock().timestamp() * 1000) < 5_000
            # A decision-receipt verifier refuses it (separate domains), and another key does not verify it.
            with pytest.raises(ReceiptError, match=r"^receipt signature invalid$"):
                verify_receipt(answer.receipt, answer.receipt_signature, status.session_public_key)
            with pytest.raises(ReceiptError, match="signature invalid"):
                verify_provision_receipt(answer.receipt, answer.receipt_signature, KEY)
            assert answer.sealed_blob is not None
            loaded = await client.load_wallet(
                WALLET,
                owner_public_key=world.owner_public,
                agent_public_key=answer.agent_public_key,
                sealed_blob=answer.sealed_blob,
            )
            assert loaded.receipt is None and loaded.receipt_signature is None

    asyncio.run(run())


def test_receipt_encoding_is_deterministic_cbor_and_round_trips() -> None:
    receipt = ProvisionReceipt("w1", KEY, bytes(32), 1_700_000_000_000)
    encoded = receipt.encode()
    assert encoded == cbor2.dumps(
        {"v": 1, "purpose": "provision", "wallet_id": "w1", "agent_public_key": KEY,
         "owner_public_key": bytes(32), "time_ms": 1_700_000_000_000}
    )  # fmt: skip
    session = SessionKey(bytes(32))
    data, signature = session.sign_provision(receipt)
    assert data == encoded
    assert verify_provision_receipt(data, signature, session.public_key) == receipt


def test_malformed_or_misdirected_receipts_are_refused() -> None:
    session = SessionKey(bytes(32))
    key = Ed25519PrivateKey.from_private_bytes(bytes(32))

    def signed(value: object) -> tuple[bytes, bytes]:
        data = cbor2.dumps(value)
        return data, key.sign(PROVISION_RECEIPT_DOMAIN + data)

    good = {"v": 1, "purpose": "provision", "wallet_id": "w1", "agent_public_key": KEY, "owner_public_key": KEY,
            "time_ms": 1}  # fmt: skip
    for bad, message in (
        ({**good, "purpose": "transaction"}, "not a provisioning receipt"),
        ({**good, "v": 2}, "version"),
        ({**good, "agent_public_key": KEY[:31]}, "malformed"),
        ({**good, "time_ms": True}, "malformed"),
        ({k: v for k, v in good.items() if k != "time_ms"}, "malformed"),
        ({**good, "extra": 1}, "malformed"),
    ):
        with pytest.raises(ReceiptError, match=message):
            verify_provision_receipt(*signed(bad), session.public_key)
    data, signature = signed(good)
    with pytest.raises(ReceiptError, match="signature invalid"):
        verify_provision_receipt(data + b"\x00", signature, session.public_key)


def test_wallet_answer_wire_shapes() -> None:
    full = WalletResponse(wallet_id="w1", agent_public_key=KEY, sealed_blob=b"s", receipt=b"r", receipt_signature=SIG)
    assert decode_response(full.to_wire()) == full
    older = {"v": 1, "type": "wallet", "wallet_id": "w1", "agent_public_key": KEY, "sealed_blob": None}
    assert decode_response(older) == WalletResponse(wallet_id="w1", agent_public_key=KEY, sealed_blob=None)
    for partial, refusal in (
        ({**older, "receipt": b"r"}, "missing or extra fields"),  # no shape has the receipt alone
        ({**older, "receipt": b"r", "receipt_signature": None}, "a receipt and its signature, or neither"),
    ):
        with pytest.raises(ProtocolError, match=refusal):
            decode_response(partial)
    with pytest.raises(ProtocolError, match="a wallet answer has a receipt and its signature, or neither"):
        WalletResponse(wallet_id="w1", agent_public_key=KEY, sealed_blob=None, receipt=b"r").to_wire()
