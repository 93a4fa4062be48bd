"""A wallet on a live stack's HTTP API: owner-signed calls, agent-signed transactions, SOL transfers, freeze orders."""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from parent_proxy.owner_auth import signed_request_headers
from parent_proxy.owner_cli_common import envelope
from parent_proxy.owner_signers import LocalOwnerSigner
from policies.canonical import parse_json_object
from policies.examples import example_policy_json
from policies.orders import freeze_document

SOL = 1_000_000_000
MERCHANT = Pubkey.from_string("FHEqRxoKaHqjfmpq5sDHwcTRetKh7uJny2UVN4pcd24J")


@dataclass
class LiveWallet:
    base: str
    owner: LocalOwnerSigner
    wallet_id: str
    agent: Pubkey = field(default_factory=Pubkey.default)
    token: str = ""

    def owner_call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        content = b"" if body is None else json.dumps(body).encode()
        headers = signed_request_headers(
            self.base, method, path, content, owner=self.owner.public_key, sign=self.owner.sign
        )
        return httpx.request(method, self.base + path, content=content, headers=headers, timeout=30)

    def sign(self, transaction: bytes) -> httpx.Response:
        body = {"transaction": base64.b64encode(transaction).decode(), "idempotency_key": secrets.token_hex(8)}
        return httpx.post(
            f"{self.base}/v1/wallets/{self.wallet_id}/transactions/sign",
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def tx(self, *instructions: Instruction) -> bytes:
        budget = [set_compute_unit_price(1_000), set_compute_unit_limit(50_000)]
        message = Message.new_with_blockhash([*budget, *instructions], self.agent, Hash.new_unique())
        return bytes(Transaction.new_unsigned(message))

    def pay(self, lamports: int, to: Pubkey = MERCHANT) -> bytes:
        return self.tx(transfer(TransferParams(from_pubkey=self.agent, to_pubkey=to, lamports=lamports)))

    def order(self, purpose: str, sequence: int) -> dict[str, Any]:
        return envelope(self.owner, purpose, freeze_document(self.wallet_id, sequence, int(time.time()) + 600))


def new_wallet(base: str, owner_key: Ed25519PrivateKey) -> LiveWallet:
    """A wallet created on the stack at ``base`` by ``owner_key``, with the example policy installed and an agent
    token issued (each step checked)."""
    w = LiveWallet(base, LocalOwnerSigner(owner_key), f"w-{secrets.token_hex(6)}")
    body = {"wallet_id": w.wallet_id, "owner_public_key": str(w.owner.public_key)}
    created = w.owner_call("POST", "/v1/wallets", body)
    assert created.status_code == 201, created.text
    assert created.json()["wallet_id"] == w.wallet_id
    w.agent = Pubkey.from_string(created.json()["agent_public_key"])
    document = parse_json_object(example_policy_json(), what="policy")
    document["wallet_id"] = w.wallet_id
    installed = w.owner_call(
        "PUT", f"/v1/wallets/{w.wallet_id}/policy", {"envelope": envelope(w.owner, "policy", document)}
    )
    assert installed.status_code == 200, installed.text
    assert installed.json()["sequence"] == 1 and installed.json()["enclave_installed"] is True
    issued = w.owner_call("POST", f"/v1/wallets/{w.wallet_id}/tokens")
    assert issued.status_code == 201 and issued.headers["Cache-Control"] == "no-store"
    w.token = issued.json()["token"]
    return w
