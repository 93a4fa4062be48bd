"""The enclave's own counters cap a lying parent over a window an owner lengthens later.

Before: the ledger kept signed amounts only for the installed policy's horizon. With an hourly limit installed,
amounts older than an hour were forgotten; when the owner then installed a daily limit, a parent that reported
nothing spent got the whole daily allowance signed again.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.hash import Hash
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from enclave_app.protocol import SignTransactionRequest, SpentEntry
from enclave_app.signer import sign_transaction
from enclave_app.state import Enclave, Wallet
from policies.examples import example_policy_json
from policies.signing import load_signed_policy, sign_document
from tests.support.policies import MERCHANT

SOL = 1_000_000_000
START = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def install(enclave: Enclave, wallet: Wallet, owner: Ed25519PrivateKey, sequence: int, window: int) -> None:
    document = json.loads(example_policy_json())
    document.update(wallet_id="w", sequence=sequence)
    for limit in document["rules"]["limits"]:  # SOL: 5 SOL automatic per window
        limit["periods"][0]["window_seconds"] = window
    envelope = json.dumps(sign_document("policy", document, owner))
    enclave.install_policy(wallet, load_signed_policy(envelope, owner=wallet.owner, wallet_id="w"))


def pay(enclave: Enclave, wallet: Wallet, lamports: int) -> str:
    """One payment, with the parent reporting nothing spent in any window (the lie)."""
    ix = transfer(TransferParams(from_pubkey=wallet.agent, to_pubkey=MERCHANT, lamports=lamports))
    raw = bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], wallet.agent, Hash.new_unique())))
    spent = tuple(SpentEntry(asset, window, 0) for asset, window in wallet.policy.spend_windows())  # type: ignore[union-attr]
    answer = sign_transaction(enclave, SignTransactionRequest(wallet_id="w", transaction=raw, spent=spent))
    return str(answer.decision["verdict"])


def test_a_lengthened_window_still_counts_what_was_signed_under_the_shorter_one() -> None:
    clock = Clock()
    enclave = Enclave(nsm=UnsafeDevelopmentNsm(pcrs={0: bytes(48)}), clock=clock, require_multisig=False)
    owner, agent_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    agent = Pubkey.from_bytes(agent_key.public_key().public_bytes_raw())
    wallet = Wallet("w", Pubkey.from_bytes(owner.public_key().public_bytes_raw()), agent_key, agent)
    enclave.add(wallet)
    install(enclave, wallet, owner, 1, 3600)  # hourly limit: the ledger's horizon is one hour
    for _ in range(4):
        assert pay(enclave, wallet, SOL) == "allow"
        clock.now += timedelta(seconds=1)
    clock.now += timedelta(hours=2)  # the four payments are past the hourly horizon
    assert pay(enclave, wallet, SOL) == "allow"  # a new hour: 1 of 5 SOL
    install(enclave, wallet, owner, 2, 86_400)  # the owner moves to a daily limit
    clock.now += timedelta(seconds=1)
    assert pay(enclave, wallet, 1) == "escalate"  # 5 SOL signed today: even one lamport more needs the owner
