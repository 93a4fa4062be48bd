"""``POST /v1/wallets`` passes the enclave's provisioning receipt through; it verifies under the session key of
``GET /v1/attestation`` and binds wallet, agent key and owner key."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from solders.pubkey import Pubkey

from enclave_app.receipts import verify_provision_receipt
from tests.proxy.api_harness import running_harness

NONCE = "cd" * 32


@pytest.mark.parametrize("mode", ["nitro", "none"])
def test_created_wallet_carries_a_verifiable_provisioning_receipt(tmp_path: Path, mode: str) -> None:
    for h in running_harness(tmp_path, attestation=mode):
        created = h.owner_call("POST", "/v1/wallets", {"wallet_id": "w9", "owner_public_key": str(h.owner_pub)})
        assert created.status_code == 201, created.text
        body = created.json()
        session = bytes(Pubkey.from_string(h.client.get(f"/v1/attestation?nonce={NONCE}").json()["session_public_key"]))
        receipt = verify_provision_receipt(
            base64.b64decode(body["provision_receipt"]), base64.b64decode(body["provision_receipt_signature"]), session
        )
        assert receipt.wallet_id == "w9"
        assert receipt.agent_public_key == bytes(Pubkey.from_string(body["agent_public_key"]))
        assert receipt.owner_public_key == bytes(h.owner_pub)
