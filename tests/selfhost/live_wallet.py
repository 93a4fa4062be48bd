"""A wallet on a live stack's HTTP API: owner-signed calls, agent-signed transactions, SOL transfers, freeze orders."""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
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
