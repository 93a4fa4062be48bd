"""Policy expiry in the enclave (the authoritative check): an expired policy is never installed, so a hostile
parent cannot bring an old one back after a restart; an installed policy denies from its ``expires_at`` second on,
and the receipt says so."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.hash import Hash
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from enclave_app.errors import StateError
from enclave_app.protocol import ErrorCode, SignTransactionRequest, SpentEntry
from enclave_app.receipts import reasons_digest, verify_receipt
from enclave_app.signer import sign_transaction
from enclave_app.state import Enclave, Wallet
from policies.examples import example_policy_json
from policies.signing import load_signed_policy, sign_document
from tests.support.policies import MERCHANT

EXPIRES = datetime(2031, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def setup(now: datetime) -> tuple[Enclave, Wallet, Ed25519PrivateKey, Clock]:
    clock = Clock(now)
    enclave = Enclave(nsm=UnsafeDevelopmentNsm(pcrs={0: bytes(48)}), clock=clock, require_multisig=False)
    owner, agent_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    wallet = Wallet(
        wallet_id="w",
        owner=Pubkey.from_bytes(owner.public_key().public_bytes_raw()),
        agent_key=agent_key,
        agent=Pubkey.from_bytes(agent_key.public_key().public_bytes_raw()),
    )
    enclave.add(wallet)
    return enclave, wallet, owner, clock


def install(enclave: Enclave, wallet: Wallet, owner: Ed25519PrivateKey, sequence: int, expires: datetime) -> None:
    document = json.loads(example_policy_json())
    document.update(wallet_id="w", sequence=sequence, expires_at=int(expires.timestamp()))
    envelope = json.dumps(sign_document("policy", document, owner))
    enclave.install_policy(wallet, load_signed_policy(envelope, owner=wallet.owner, wallet_id="w"))


def request(wallet: Wallet) -> SignTransactionRequest:
    ix = transfer(TransferParams(from_pubkey=wallet.agent, to_pubkey=MERCHANT, lamports=1_000))
    raw = bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], wallet.agent, Hash.new_unique())))
    spent = tuple(SpentEntry(asset, window, 0) for asset, window in wallet.policy.spend_windows())  # type: ignore[union-attr]
    return SignTransactionRequest(wallet_id="w", transaction=raw, spent=spent)


def test_an_expired_policy_is_not_installed() -> None:
    enclave, wallet, owner, _clock = setup(EXPIRES)
    with pytest.raises(StateError, match="policy has expired") as refused:
        install(enclave, wallet, owner, 1, EXPIRES)  # expired at this very second
    assert refused.value.code is ErrorCode.POLICY_STALE
    assert wallet.policy is None


def test_the_installed_policy_denies_from_its_expiry_on() -> None:
    enclave, wallet, owner, clock = setup(EXPIRES - timedelta(seconds=2))
    install(enclave, wallet, owner, 1, EXPIRES)
    allowed = sign_transaction(enclave, request(wallet))
    assert allowed.decision["verdict"] == "allow" and allowed.signature is not None
    clock.now = EXPIRES
    denied = sign_transaction(enclave, request(wallet))
    assert denied.decision["verdict"] == "deny" and denied.signature is None and denied.signed_transaction is None
    assert [r["rule"] for r in denied.decision["reasons"]] == ["policy_expired"]
    receipt = verify_receipt(denied.receipt, denied.receipt_signature, enclave.session.public_key)
    assert receipt.verdict == "deny" and receipt.reasons_digest == reasons_digest(denied.decision["reasons"])
    # a renewed policy (higher sequence, later expiry) serves again; the old one cannot come back
    install(enclave, wallet, owner, 2, EXPIRES + timedelta(days=30))
    assert sign_transaction(enclave, request(wallet)).decision["verdict"] == "allow"
