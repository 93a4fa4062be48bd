"""Agent-key rotation through the API harness: a wallet with an on-chain multisig, the owner's request bodies, paths."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from policies.orders import AGENT_KEY_ROTATION_PURPOSE, AGENT_KEY_SWITCH_PURPOSE, rotation_document, switch_document
from policies.signing import sign_document
from tests.proxy.api_harness import Harness, provision, svm
from tests.support.squads_rotation import multisig_address, put_multisig

CREATE_KEY = Pubkey.from_string("9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin")


def multisig_wallet(h: Harness) -> Pubkey:
    """A provisioned wallet whose policy declares a multisig of the owner and the agent, on chain before the policy
    is installed (the install checks it); the wallet names no vault, so its vault is the multisig's vault 0."""
    multisig = multisig_address(CREATE_KEY)[0]
    provision(
        h, h.policy(squads_multisig=str(multisig)), before_install=lambda h: chain_shows(h, [h.owner_pub, h.agent])
    )
    return multisig


def chain_shows(h: Harness, members: list[Pubkey]) -> None:
    put_multisig(svm(h), CREATE_KEY, members)


def agent_key_path(h: Harness, tail: str = "") -> str:
    return f"/v1/wallets/{h.wallet_id}/agent-key{tail}"


def _expires() -> int:
    return int(time.time()) + 600


def rotation_body(h: Harness, raw: bytes, new: Pubkey, *, key: Ed25519PrivateKey | None = None,
                   agent: Pubkey | None = None) -> dict[str, Any]:  # fmt: skip
    message = to_bytes_versioned(VersionedTransaction.from_bytes(raw).message)
    document = rotation_document(h.wallet_id, agent or h.agent, new, hashlib.sha256(message).digest(), _expires())
    envelope = sign_document(AGENT_KEY_ROTATION_PURPOSE, document, key or h.owner)
    return {"transaction": base64.b64encode(raw).decode(), "envelope": envelope}


def switch_body(h: Harness, new: Pubkey, *, key: Ed25519PrivateKey | None = None) -> dict[str, Any]:
    document = switch_document(h.wallet_id, h.agent, new, _expires())
    return {"envelope": sign_document(AGENT_KEY_SWITCH_PURPOSE, document, key or h.owner)}


def session_key(h: Harness) -> bytes:
    answer = h.client.get("/v1/attestation", params={"nonce": "00" * 16})
    return bytes(Pubkey.from_string(answer.json()["session_public_key"]))
