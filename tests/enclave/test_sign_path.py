"""The sign path's cheaper pieces give exactly what the straightforward ones gave: the signature spliced into the
transaction bytes equals solders' ``populate``, the hand-made receipt encoding equals ``cbor2.dumps``, and the
derived values of an installed policy are those of the policy."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.hash import Hash
from solders.message import Message, MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from enclave_app.errors import InconsistentStateError, ReceiptError
from enclave_app.receipts import (
    EMPTY_REASONS_DIGEST,
    Receipt,
    SessionKey,
    encode_receipt,
    reasons_digest,
    receipt_prefix,
    verify_receipt,
)
from enclave_app.signer import sign_at_agent_slot
from enclave_app.state import Enclave, Wallet
from policies.examples import example_policy_json
from policies.signing import load_signed_policy, sign_document
from policies.transaction import decode_transaction

AGENT_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
AGENT = Pubkey.from_bytes(AGENT_KEY.public_key().public_bytes_raw())
OTHER = Pubkey.from_bytes(Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key().public_bytes_raw())
MERCHANT = Pubkey.new_unique()


def _wallet() -> Wallet:
    return Wallet(wallet_id="w", owner=OTHER, agent_key=AGENT_KEY, agent=AGENT)


def _populate(raw: bytes, signature: bytes, slot: int) -> bytes:
    tx = VersionedTransaction.from_bytes(raw)
    signatures = list(tx.signatures)
    signatures[slot] = Signature.from_bytes(signature)
    return bytes(VersionedTransaction.populate(tx.message, signatures))


def _legacy(payer: Pubkey, *, second_signer: Pubkey | None = None) -> bytes:
    ixs = [transfer(TransferParams(from_pubkey=payer, to_pubkey=MERCHANT, lamports=5))]
    if second_signer is not None:
        ixs.append(transfer(TransferParams(from_pubkey=second_signer, to_pubkey=MERCHANT, lamports=7)))
    message = Message.new_with_blockhash(ixs, payer, Hash.new_unique())
    return bytes(VersionedTransaction.populate(message, [Signature.default()] * message.header.num_required_signatures))


@pytest.mark.parametrize(
    ("raw", "slot"),
    [
        (_legacy(AGENT), 0),
        (_legacy(OTHER, second_signer=AGENT), 1),
        (_legacy(AGENT, second_signer=OTHER), 0),
    ],
    ids=["agent pays", "agent second signer", "agent pays, second signer"],
)
def test_spliced_signature_equals_populate(raw: bytes, slot: int) -> None:
    decoded = decode_transaction(raw)
    assert decoded.message_bytes == to_bytes_versioned(VersionedTransaction.from_bytes(raw).message)
    signature, signed = sign_at_agent_slot(_wallet(), raw, decoded)
    AGENT_KEY.public_key().verify(signature, decoded.message_bytes)
    assert signed == _populate(raw, signature, slot)


def test_spliced_signature_equals_populate_for_v0_with_a_lookup_table() -> None:
    table = Pubkey.new_unique()
    contents = [Pubkey.new_unique(), MERCHANT]
    ix = transfer(TransferParams(from_pubkey=AGENT, to_pubkey=MERCHANT, lamports=9))
    message = MessageV0.try_compile(AGENT, [ix], [AddressLookupTableAccount(table, contents)], Hash.new_unique())
    raw = bytes(VersionedTransaction.populate(message, [Signature.default()]))
    decoded = decode_transaction(raw, lookup_tables={table: contents})
    assert decoded.version == 0 and decoded.lookup_tables == (table,)
    signature, signed = sign_at_agent_slot(_wallet(), raw, decoded)
    assert signed == _populate(raw, signature, 0)


def test_no_agent_slot_is_an_inconsistency() -> None:
    raw = _legacy(OTHER)
    with pytest.raises(InconsistentStateError, match="no single agent signer slot"):
        sign_at_agent_slot(_wallet(), raw, decode_transaction(raw))


def test_bytes_that_do_not_match_the_decoded_message_are_an_inconsistency() -> None:
    raw, other = _legacy(AGENT), _legacy(AGENT)
    with pytest.raises(InconsistentStateError, match="does not match its bytes"):
        sign_at_agent_slot(_wallet(), raw, decode_transaction(other))
    with pytest.raises(InconsistentStateError, match="does not match its bytes"):
        sign_at_agent_slot(_wallet(), raw + b"\x00", decode_transaction(raw))


_receipts = st.builds(
    Receipt,
    kind=st.sampled_from(["transaction", "message"]) | st.text(max_size=30),
    wallet_id=st.text(min_size=1, max_size=128),
    policy_sequence=st.none() | st.integers(-(2**64), 2**64 - 1),
    policy_hash=st.none() | st.binary(min_size=32, max_size=32) | st.binary(max_size=300),
    message_hash=st.binary(max_size=70000),
    verdict=st.sampled_from(["allow", "escalate", "deny", "freeze"]),
    approved=st.booleans(),
    reasons_digest=st.binary(min_size=32, max_size=32),
    time_ms=st.integers(0, 2**64 - 1),
    counter=st.integers(0, 2**64 - 1),
)


@settings(max_examples=300, deadline=None)
@given(_receipts)
def test_receipt_encoding_is_cbor2s(receipt: Receipt) -> None:
    fields = {"v": 1, **{field.name: getattr(receipt, field.name) for field in dataclasses.fields(receipt)}}
    assert receipt.encode() == cbor2.dumps(fields)


def test_receipt_encoding_refuses_what_it_cannot_encode_exactly() -> None:
    with pytest.raises(ReceiptError, match="out of range"):
        receipt_prefix("transaction", "w", 2**64, None)
    with pytest.raises(ReceiptError, match="out of range"):
        encode_receipt(b"", message_hash=bytes(32), verdict="allow", approved=False, reasons_digest=bytes(32),
                       time_ms=1.5, counter=1)  # type: ignore[arg-type]  # fmt: skip


def test_signed_receipt_verifies_and_reasons_digest_is_documented_json() -> None:
    session = SessionKey(bytes(range(32)))
    receipt = Receipt("transaction", "w", 3, bytes(32), bytes(32), "deny", False, reasons_digest([{"b": 1, "a": 2}]),
                      10, 4)  # fmt: skip
    encoded, signature = session.sign(receipt)
    assert verify_receipt(encoded, signature, session.public_key) == receipt
    assert receipt.reasons_digest == hashlib.sha256(b'[{"a":2,"b":1}]').digest()
    assert EMPTY_REASONS_DIGEST == reasons_digest([]) == hashlib.sha256(b"[]").digest()


def test_installed_policy_derivations() -> None:
    owner = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    owner_public = Pubkey.from_bytes(owner.public_key().public_bytes_raw())
    document = json.loads(example_policy_json())
    document["wallet_id"] = "w"
    policy = load_signed_policy(json.dumps(sign_document("policy", document, owner)), owner=owner_public, wallet_id="w")
    enclave = Enclave(
        nsm=UnsafeDevelopmentNsm(pcrs={0: bytes(48)}), clock=lambda: datetime.now(UTC), require_multisig=False
    )
    wallet = Wallet(wallet_id="w", owner=owner_public, agent_key=AGENT_KEY, agent=AGENT)
    enclave.add(wallet)
    assert (wallet.horizon, wallet.policy, wallet.policy_hash) == (0, None, None)
    digest = enclave.install_policy(wallet, policy)
    installed = wallet.installed
    assert installed is not None and wallet.policy is policy
    assert digest == wallet.policy_hash == hashlib.sha256(policy.canonical).digest()
    assert installed.spend_windows == policy.spend_windows()
    rules = policy.rules
    windows = [w for _, w in policy.spend_windows()] + [rules.rate.window_seconds]
    if rules.freeze.denials is not None:
        windows.append(rules.freeze.denials.window_seconds)
    assert wallet.horizon == max(windows)
    receipt = Receipt("transaction", "w", policy.sequence, digest, bytes(32), "allow", False, bytes(32), 1, 2)
    assert receipt.encode().startswith(installed.transaction_receipt_prefix)
    assert wallet.agent_keys == frozenset({AGENT})
