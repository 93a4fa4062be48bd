"""An in-memory enclave Handler: one wallet, fixed owner and agent keys, the example policy (rules changed as asked),
at a fixed time (`policy_handler`) or at a time the test moves (`offchain_handler`, with `SettableClock`)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from enclave_app.no_attestation import NoAttestationNsm
from enclave_app.protocol import ErrorResponse, InstallPolicyRequest
from enclave_app.sealing import LocalSealer
from enclave_app.server import Handler
from enclave_app.state import Enclave, Wallet
from policies.orders import freeze_document
from policies.signing import sign_document
from tests.support.policies import example_policy

NOW = datetime(2032, 2, 3, 4, 5, 6, tzinfo=UTC)
WALLET = "w-review"
OWNER = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)
AGENT_KEY = Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)
AGENT = Pubkey.from_bytes(AGENT_KEY.public_key().public_bytes_raw())


def policy_handler(**rule_changes: Any) -> Handler:
    enclave = Enclave(nsm=NoAttestationNsm(), clock=lambda: NOW, require_multisig=False)
    owner = Pubkey.from_bytes(OWNER.public_key().public_bytes_raw())
    enclave.add(Wallet(wallet_id=WALLET, owner=owner, agent_key=AGENT_KEY, agent=AGENT))
    handler = Handler(enclave, LocalSealer(b"operator secret for the tests!!"))
    document = example_policy()
    document["wallet_id"] = WALLET
    document["rules"].update(rule_changes)
    signed = json.dumps(sign_document("policy", document, OWNER)).encode()
    answer = asyncio.run(handler.handle(InstallPolicyRequest(WALLET, signed)))
    assert not isinstance(answer, ErrorResponse), answer
    return handler


def owner_order(wallet_id: str, sequence: int, *, freeze: bool) -> bytes:
    """A freeze (or unfreeze) order for ``wallet_id`` signed by ``OWNER``, expiring ten minutes after ``NOW``."""
    document = freeze_document(wallet_id, sequence, int((NOW + timedelta(minutes=10)).timestamp()))
    return json.dumps(sign_document("freeze" if freeze else "unfreeze", document, OWNER)).encode()


class SettableClock:
    """The enclave's clock, at ``NOW`` until the test sets ``now``."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def offchain_handler(
    allowed: bool | None, *, expires_at: int | None = None, clock: SettableClock | None = None, **rules: Any
) -> Handler:
    """A wallet with the example policy, ``offchain_messages.allowed`` set and ``rules`` replaced; None: no policy
    installed."""
    enclave = Enclave(nsm=NoAttestationNsm(), clock=clock or SettableClock(), require_multisig=False)
    owner = Pubkey.from_bytes(OWNER.public_key().public_bytes_raw())
    enclave.add(Wallet(wallet_id=WALLET, owner=owner, agent_key=AGENT_KEY, agent=AGENT))
    handler = Handler(enclave, LocalSealer(b"operator secret for the tests!!"))
    if allowed is not None:
        document = example_policy()
        document["wallet_id"] = WALLET
        document["rules"]["offchain_messages"] = {"allowed": allowed}
        document["rules"].update(rules)
        if expires_at is not None:
            document["expires_at"] = expires_at
        signed = json.dumps(sign_document("policy", document, OWNER)).encode()
        assert not isinstance(asyncio.run(handler.handle(InstallPolicyRequest(WALLET, signed))), ErrorResponse)
    return handler
