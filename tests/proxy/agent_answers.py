"""The agent's side of a signing answer, for the tests of ``waiaas agent verify-receipt``.

`agent_main` runs ``waiaas`` with the ``agent`` subcommand that pyproject.toml declares, loaded as `policies.cli` loads
every ``waiaas.commands`` entry point (so also where the installed package metadata predates the entry point).
`AgentWorld` makes signing answers as an enclave with a session key the development NSM attests would make them,
from keys the test holds: each field can then be changed alone, still signed by the attested key.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.hash import Hash
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from enclave_app.protocol import SESSION_USER_DATA
from enclave_app.receipts import Receipt, SessionKey, reasons_digest
from parent_proxy.sign_parts import message_hash
from policies.cli import ENTRY_POINT_GROUP
from policies.signing import POLICY_PURPOSE, document_sha256, sign_document
from tests.proxy.api_harness import sign_in_slot
from tests.support.policies import MERCHANT, example_policy, owner_public_key

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PCR0 = bytes([5]) * 48
NONCE = "cd" * 32


def agent_main(argv: Sequence[str]) -> int:
    """``waiaas agent ...`` through the entry point pyproject.toml declares for ``agent``."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    value = project["project"]["entry-points"][ENTRY_POINT_GROUP]["agent"]
    parser = argparse.ArgumentParser(prog="waiaas")
    subparsers = parser.add_subparsers(dest="command", required=True)
    EntryPoint(name="agent", value=value, group=ENTRY_POINT_GROUP).load()(subparsers)
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


def attestation_answer(nsm: UnsafeDevelopmentNsm, session_public_key: bytes, nonce: bytes) -> dict[str, Any]:
    """A ``GET /v1/attestation`` answer (mode nitro) whose document attests ``session_public_key`` over ``nonce``."""
    document = nsm.attestation(public_key=session_public_key, user_data=SESSION_USER_DATA, nonce=nonce)
    return {"document": base64.b64encode(document).decode(), "mode": "nitro", "reason": None,
            "session_public_key": str(Pubkey.from_bytes(session_public_key)), "enclave_state": "ready"}  # fmt: skip


@dataclass
class AgentWorld:
    """One wallet ``w1``: its agent key, its owner's signed policy, an attested enclave session key."""

    folder: Path
    nsm: UnsafeDevelopmentNsm = field(default_factory=lambda: UnsafeDevelopmentNsm(pcrs={0: PCR0}))
    session: SessionKey = field(default_factory=lambda: SessionKey(os.urandom(32)))
    agent: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    owner: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    wallet_id: str = "w1"

    @property
    def agent_public_key(self) -> Pubkey:
        return owner_public_key(self.agent)

    def envelope(self, wallet_id: str = "w1", sequence: int = 1, owner: Ed25519PrivateKey | None = None) -> Any:
        document = example_policy()
        document["wallet_id"], document["sequence"] = wallet_id, sequence
        return sign_document(POLICY_PURPOSE, document, owner or self.owner)

    def policy_hash(self, **change: Any) -> bytes:
        return document_sha256(self.envelope(**change)["document"])

    def transaction(self, lamports: int = 1000) -> bytes:
        """An unsigned transfer from the agent key (the fee payer, signer slot 0): what the agent sends."""
        ix = transfer(TransferParams(from_pubkey=self.agent_public_key, to_pubkey=MERCHANT, lamports=lamports))
        return bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], self.agent_public_key, Hash.default())))

    def answer(
        self,
        transaction: bytes,
        *,
        session: SessionKey | None = None,
        signer: Ed25519PrivateKey | None = None,
        receipt_for: bytes | None = None,
        **receipt_fields: Any,
    ) -> dict[str, Any]:
        """The 200 answer to signing ``transaction``: signed by ``signer`` (the agent key), with a receipt by
        ``session`` (the attested one) about ``receipt_for`` (``transaction``) and ``receipt_fields`` changed."""
        session = session or self.session
        signed, signature = sign_in_slot(signer or self.agent, transaction)
        fields: dict[str, Any] = {
            "kind": "transaction", "wallet_id": self.wallet_id, "policy_sequence": 1, "policy_hash": self.policy_hash(),
            "message_hash": message_hash(receipt_for or transaction), "verdict": "allow", "approved": False,
            "reasons_digest": reasons_digest([]), "time_ms": int(time.time() * 1000), "counter": 7,
        }  # fmt: skip
        fields.update(receipt_fields)
        receipt, receipt_signature = session.sign(Receipt(**fields))
        decision = {"verdict": fields["verdict"], "policy_sequence": fields["policy_sequence"], "reasons": []}
        return {
            "status": "signed", "request_id": "r1", "signature": str(Signature.from_bytes(signature)),
            "signed_transaction": base64.b64encode(signed).decode(), "decision": decision,
            "receipt": {"receipt": base64.b64encode(receipt).decode(),
                        "signature": str(Signature.from_bytes(receipt_signature)),
                        "session_public_key": str(Pubkey.from_bytes(session.public_key))},
            "submission": None,
        }  # fmt: skip

    def attestation(self, session_public_key: bytes | None = None, nonce: str = NONCE) -> dict[str, Any]:
        return attestation_answer(self.nsm, session_public_key or self.session.public_key, bytes.fromhex(nonce))

    def trust(self) -> tuple[str, ...]:
        """``--root-pem`` (written to the folder) and ``--pcr 0=...``: the anchor of the development NSM."""
        (self.folder / "root.pem").write_bytes(self.nsm.root_certificate_pem)
        return "--root-pem", str(self.folder / "root.pem"), "--pcr", f"0={PCR0.hex()}"

    def write(self, name: str, value: Any) -> str:
        path = self.folder / f"{name}.json"
        path.write_text(json.dumps(value))
        return str(path)
