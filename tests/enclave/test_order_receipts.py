"""Order receipts: the enclave's answers to freeze, unfreeze and install_policy carry a receipt, signed by the
session key in a domain of its own, naming wallet, purpose, the order's sequence and document hash and the wallet's
state after it, with a counter from the boot's one receipt sequence; older enclaves' answers (without the fields)
still decode, and a refused order gets no receipt."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from enclave_app.errors import EnclaveRequestError, ProtocolError, ReceiptError
from enclave_app.order_receipts import OrderReceipt, verify_order_receipt
from enclave_app.protocol import PolicyInstalledResponse, WalletFrozenResponse, decode_response
from enclave_app.receipts import (
    ORDER_RECEIPT_DOMAIN,
    RECEIPT_DOMAIN,
    SessionKey,
    verify_agent_key_receipt,
    verify_provision_receipt,
    verify_receipt,
)
from enclave_app.sealing import LocalSealer
from policies.signing import document_sha256
from tests.enclave.sign_requests import WALLET, spent, transfer_tx
from tests.support.enclave_world import EnclaveWorld, serving

KEY = bytes(range(32))
SIG = bytes(64)
H1, H2 = hashlib.sha256(b"one").digest(), hashlib.sha256(b"two").digest()


def _document(envelope: bytes) -> bytes:
    return document_sha256(json.loads(envelope)["document"])


def test_orders_are_answered_with_receipts_in_the_boots_one_counter_sequence(world: EnclaveWorld) -> None:
    async def run() -> None:
        async with serving(world.boot(sealers=LocalSealer(b"operator secret for the tests!!"))) as (client, _):
            session = (await client.ping()).session_public_key
            provisioned = await client.provision_wallet(WALLET, world.owner_public)
            policy = world.policy(WALLET, sequence=3)
            installed = await client.install_policy(WALLET, policy)
            assert installed.receipt is not None and installed.receipt_signature is not None
            stated = verify_order_receipt(installed.receipt, installed.receipt_signature, session)
            digest = _document(policy)
            assert digest == installed.policy_hash  # the policy hash decision receipts state
            assert (stated.purpose, stated.wallet_id, stated.sequence) == ("policy", WALLET, 3)
            assert stated.document_hash == digest and stated.policy_hash == digest and stated.frozen is False
            assert stated.counter == 1 and abs(stated.time_ms - world.clock().timestamp() * 1000) < 5_000
            # Decisions and orders share one counter sequence.
            agent = Pubkey.from_bytes(provisioned.agent_public_key)
            decided = await client.sign_transaction(WALLET, transfer_tx(agent, 1000), spent=spent())
            assert verify_receipt(decided.receipt, decided.receipt_signature, session).counter == 2
            order = world.order("freeze", WALLET, 5)
            frozen = await client.freeze(WALLET, order)
            assert frozen.receipt is not None and frozen.receipt_signature is not None
            stated = verify_order_receipt(frozen.receipt, frozen.receipt_signature, session)
            assert (stated.purpose, stated.sequence, stated.frozen, stated.counter) == ("freeze", 5, True, 3)
            assert stated.document_hash == _document(order) and stated.policy_hash == digest
            # A refused order (stale) gets no receipt and takes no counter.
            with pytest.raises(EnclaveRequestError, match="order_stale"):
                await client.unfreeze(WALLET, world.order("unfreeze", WALLET, 5))
            order = world.order("unfreeze", WALLET, 6)
            thawed = await client.unfreeze(WALLET, order)
            assert thawed.receipt is not None and thawed.receipt_signature is not None
            stated = verify_order_receipt(thawed.receipt, thawed.receipt_signature, session)
            assert (stated.purpose, stated.sequence, stated.frozen, stated.counter) == ("unfreeze", 6, False, 4)
            assert stated.document_hash == _document(order)
            # Domains: no other verifier takes an order receipt, and the order verifier takes no decision receipt.
            for verify in (verify_receipt, verify_provision_receipt, verify_agent_key_receipt):
                with pytest.raises(ReceiptError, match="signature invalid"):
                    verify(thawed.receipt, thawed.receipt_signature, session)
            with pytest.raises(ReceiptError, match="order receipt signature invalid"):
                verify_order_receipt(decided.receipt, decided.receipt_signature, session)
            with pytest.raises(ReceiptError, match="order receipt signature invalid"):
                verify_order_receipt(thawed.receipt, thawed.receipt_signature, KEY)

    asyncio.run(run())


RECEIPT = OrderReceipt("freeze", "w1", 7, H1, True, H2, 1_700_000_000_000, 12)


def test_order_receipt_encoding_is_deterministic_cbor_and_round_trips() -> None:
    assert RECEIPT.encode() == cbor2.dumps(
        {"v": 1, "purpose": "freeze", "wallet_id": "w1", "sequence": 7, "document_hash": H1, "frozen": True,
         "policy_hash": H2, "time_ms": 1_700_000_000_000, "counter": 12}
    )  # fmt: skip
    session = SessionKey(bytes(32))
    data, signature = session.sign_order(RECEIPT)
    assert data == RECEIPT.encode()
    assert verify_order_receipt(data, signature, session.public_key) == RECEIPT
    no_policy = dataclasses.replace(RECEIPT, purpose="unfreeze", frozen=False, policy_hash=None)
    assert verify_order_receipt(*session.sign_order(no_policy), session.public_key) == no_policy


@pytest.mark.parametrize(
    "change",
    [
        {"purpose": "unfreeze", "frozen": False}, {"wallet_id": "w2"}, {"sequence": 8}, {"document_hash": H2},
        {"policy_hash": H1}, {"policy_hash": None}, {"time_ms": 1}, {"counter": 13},
    ],
    ids="+".join,
)  # fmt: skip
def test_every_field_is_covered_by_the_signature(change: dict[str, Any]) -> None:
    session = SessionKey(bytes(32))
    _, signature = session.sign_order(RECEIPT)
    with pytest.raises(ReceiptError, match="order receipt signature invalid"):
        verify_order_receipt(dataclasses.replace(RECEIPT, **change).encode(), signature, session.public_key)


def test_receipts_the_enclave_cannot_state_are_refused_even_when_signed() -> None:
    session = SessionKey(bytes(32))
    key = Ed25519PrivateKey.from_private_bytes(bytes(32))

    def signed(value: object) -> tuple[bytes, bytes]:
        data = cbor2.dumps(value)
        return data, key.sign(ORDER_RECEIPT_DOMAIN + data)

    good = {"v": 1, "purpose": "freeze", "wallet_id": "w1", "sequence": 7, "document_hash": H1, "frozen": True,
            "policy_hash": None, "time_ms": 1, "counter": 1}  # fmt: skip
    for bad, message in (
        ({**good, "purpose": "provision"}, "not an order receipt purpose"),
        ({**good, "frozen": False}, "a freeze leaves the wallet frozen"),
        ({**good, "purpose": "unfreeze"}, "a freeze leaves the wallet frozen and an unfreeze unfrozen"),
        ({**good, "purpose": "policy", "policy_hash": H2}, "names the policy it installed"),
        ({**good, "purpose": "policy"}, "names the policy it installed"),
        ({**good, "document_hash": H1[:31]}, "32 bytes"),
        ({**good, "counter": 0}, "out of range"),
        ({**good, "sequence": -1}, "out of range"),
        ({**good, "v": 2}, "version"),
        ({**good, "frozen": 1}, "malformed"),
        ({**good, "sequence": True}, "malformed"),
        ({k: v for k, v in good.items() if k != "counter"}, "malformed"),
        ({**good, "extra": 1}, "malformed"),
    ):
        with pytest.raises(ReceiptError, match=message):
            verify_order_receipt(*signed(bad), session.public_key)
    # The decision-receipt domain is not the order-receipt domain.
    data = cbor2.dumps(good)
    with pytest.raises(ReceiptError, match="signature invalid"):
        verify_order_receipt(data, key.sign(RECEIPT_DOMAIN + data), session.public_key)
    with pytest.raises(ReceiptError, match="names the policy it installed"):
        dataclasses.replace(RECEIPT, purpose="policy").encode()


@pytest.mark.parametrize(
    "full",
    [
        PolicyInstalledResponse(wallet_id="w1", sequence=4, policy_hash=KEY, receipt=b"r", receipt_signature=SIG),
        WalletFrozenResponse(wallet_id="w1", frozen=True, order_sequence=9, receipt=b"r", receipt_signature=SIG),
    ],
    ids=lambda message: message.TYPE,
)
def test_order_answer_wire_shapes(full: PolicyInstalledResponse | WalletFrozenResponse) -> None:
    assert decode_response(full.to_wire()) == full
    older = {k: v for k, v in full.to_wire().items() if k not in ("receipt", "receipt_signature")}
    assert decode_response(older) == dataclasses.replace(full, receipt=None, receipt_signature=None)
    without = dataclasses.replace(full, receipt=None, receipt_signature=None).to_wire()
    assert without == older  # a receipt-less answer goes out in the older shape, which an older parent reads
    for partial, refusal in (
        ({**older, "receipt": b"r"}, "missing or extra fields"),  # no shape has the receipt alone
        ({**older, "receipt": b"r", "receipt_signature": None}, "a receipt and its signature, or neither"),
    ):
        with pytest.raises(ProtocolError, match=refusal):
            decode_response(partial)
    with pytest.raises(ProtocolError, match="a receipt and its signature, or neither"):
        dataclasses.replace(full, receipt_signature=None).to_wire()
