"""The agent signing flow end to end: HTTP -> proxy checks -> the real enclave app over a Unix socket -> store."""

from __future__ import annotations

import base64
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.system_program import AssignParams, assign
from solders.transaction import VersionedTransaction

from parent_proxy.sign_parts import message_hash
from policies.orders import approval_document, freeze_document
from policies.signing import sign_document
from tests.proxy.api_harness import LAMPORTS_PER_SOL, Harness
from tests.support.policies import BLOCKED, MERCHANT


def test_allowed_transfer_is_signed_committed_and_audited(provisioned: Harness) -> None:
    tx = provisioned.transfer(LAMPORTS_PER_SOL // 2, MERCHANT)
    response = provisioned.sign(tx, key="k1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "signed" and body["decision"]["verdict"] == "allow"
    signed = VersionedTransaction.from_bytes(base64.b64decode(body["signed_transaction"]))
    Ed25519PublicKey.from_public_bytes(bytes(provisioned.agent)).verify(
        bytes(signed.signatures[0]), to_bytes_versioned(signed.message)
    )
    assert provisioned.spent() == LAMPORTS_PER_SOL // 2
    assert "transaction.signed" in provisioned.audit_events()
    assert body["receipt"]["receipt"] and body["receipt"]["signature"]


def test_same_idempotency_key_replays_and_other_request_conflicts(provisioned: Harness) -> None:
    tx = provisioned.transfer(1000, MERCHANT)
    first = provisioned.sign(tx, key="same")
    again = provisioned.sign(tx, key="same")
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert provisioned.spent() == 1000  # reserved once
    other = provisioned.sign(provisioned.transfer(2000, MERCHANT), key="same")
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"


def test_denied_destination_is_403_with_reasons(provisioned: Harness) -> None:
    response = provisioned.sign(provisioned.transfer(1000, BLOCKED))
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "policy_denied"
    assert any(r["rule"] == "destinations.deny" for r in error["reasons"])
    assert provisioned.spent() == 0
    assert "transaction.denied" in provisioned.audit_events()


def test_attack_freezes_wallet_until_owner_unfreezes(provisioned: Harness) -> None:
    attack = assign(AssignParams(pubkey=provisioned.agent, owner=Pubkey.new_unique()))  # hand the wallet away
    response = provisioned.sign(provisioned.transfer(1, MERCHANT, instructions=(attack,)))
    assert response.status_code == 403 and response.json()["error"]["code"] == "wallet_frozen"
    assert provisioned.store.get_wallet(provisioned.wallet_id).frozen
    blocked = provisioned.sign(provisioned.transfer(1000, MERCHANT))
    assert blocked.status_code == 403 and blocked.json()["error"]["code"] == "wallet_frozen"

    order = sign_document(
        "unfreeze", freeze_document(provisioned.wallet_id, 1, int(time.time()) + 600), provisioned.owner
    )
    unfrozen = provisioned.owner_call("POST", f"/v1/wallets/{provisioned.wallet_id}/unfreeze", {"envelope": order})
    assert unfrozen.status_code == 200, unfrozen.text
    assert provisioned.sign(provisioned.transfer(1000, MERCHANT)).status_code == 200


def test_owner_freeze_blocks_signing(provisioned: Harness) -> None:
    order = sign_document(
        "freeze", freeze_document(provisioned.wallet_id, 1, int(time.time()) + 600), provisioned.owner
    )
    frozen = provisioned.owner_call("POST", f"/v1/wallets/{provisioned.wallet_id}/freeze", {"envelope": order})
    assert frozen.status_code == 200 and frozen.json()["frozen"] is True
    assert frozen.json()["enclave_acknowledged"] is True
    response = provisioned.sign(provisioned.transfer(1000, MERCHANT))
    assert response.status_code == 403 and response.json()["error"]["code"] == "wallet_frozen"


def test_freeze_order_signed_by_another_key_is_refused(provisioned: Harness) -> None:
    order = sign_document(
        "freeze", freeze_document(provisioned.wallet_id, 1, int(time.time()) + 600), Ed25519PrivateKey.generate()
    )
    response = provisioned.owner_call("POST", f"/v1/wallets/{provisioned.wallet_id}/freeze", {"envelope": order})
    assert response.status_code == 401 and response.json()["error"]["code"] == "owner_signature_invalid"
    assert not provisioned.store.get_wallet(provisioned.wallet_id).frozen


def test_escalation_waits_for_owner_then_signs_once(provisioned: Harness) -> None:
    tx = provisioned.transfer(2 * LAMPORTS_PER_SOL, MERCHANT)  # above the automatic 1 SOL, below the 10 SOL ceiling
    response = provisioned.sign(tx)
    assert response.status_code == 202, response.text
    approval_id = response.json()["approval_id"]
    assert provisioned.spent() == 0  # nothing held while waiting
    pending = provisioned.owner_call("GET", f"/v1/wallets/{provisioned.wallet_id}/approvals")
    assert [p["approval_id"] for p in pending.json()] == [approval_id]

    document = approval_document(provisioned.wallet_id, message_hash(tx), int(time.time()) + 600)
    envelope = sign_document("approval", document, provisioned.owner)
    path = f"/v1/wallets/{provisioned.wallet_id}/approvals/{approval_id}/approve"
    approved = provisioned.owner_call("POST", path, {"envelope": envelope})
    assert approved.status_code == 200, approved.text
    assert approved.json()["transaction"]["status"] == "signed"
    assert provisioned.spent() == 2 * LAMPORTS_PER_SOL
    again = provisioned.owner_call("POST", path, {"envelope": envelope})
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


def test_approval_for_another_message_is_refused(provisioned: Harness) -> None:
    response = provisioned.sign(provisioned.transfer(2 * LAMPORTS_PER_SOL, MERCHANT))
    approval_id = response.json()["approval_id"]
    other = provisioned.transfer(3 * LAMPORTS_PER_SOL, MERCHANT)
    envelope = sign_document(
        "approval",
        approval_document(provisioned.wallet_id, message_hash(other), int(time.time()) + 600),
        provisioned.owner,
    )
    refused = provisioned.owner_call(
        "POST", f"/v1/wallets/{provisioned.wallet_id}/approvals/{approval_id}/approve", {"envelope": envelope}
    )
    # The owner's signature holds: a signed approval of another message is a refused field (401 before).
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"
    assert "message_hash" in refused.json()["error"]["message"]
    stranger = sign_document(
        "approval",
        approval_document(provisioned.wallet_id, message_hash(provisioned.transfer(2 * LAMPORTS_PER_SOL, MERCHANT)),
                          int(time.time()) + 600),
        Ed25519PrivateKey.generate(),
    )  # fmt: skip
    refused = provisioned.owner_call(
        "POST", f"/v1/wallets/{provisioned.wallet_id}/approvals/{approval_id}/approve", {"envelope": stranger}
    )
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "owner_signature_invalid"
    assert provisioned.spent() == 0


def test_rejection_closes_the_approval(provisioned: Harness) -> None:
    approval_id = provisioned.sign(provisioned.transfer(2 * LAMPORTS_PER_SOL, MERCHANT)).json()["approval_id"]
    rejected = provisioned.owner_call("POST", f"/v1/wallets/{provisioned.wallet_id}/approvals/{approval_id}/reject")
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert provisioned.owner_call("GET", f"/v1/wallets/{provisioned.wallet_id}/approvals").json() == []


def test_over_ceiling_is_denied(provisioned: Harness) -> None:
    response = provisioned.sign(provisioned.transfer(11 * LAMPORTS_PER_SOL, MERCHANT))
    assert response.status_code == 403 and response.json()["error"]["code"] == "policy_denied"


def test_wallet_view_reports_limits_left(provisioned: Harness) -> None:
    assert provisioned.sign(provisioned.transfer(LAMPORTS_PER_SOL // 4, MERCHANT)).status_code == 200
    view = provisioned.client.get(
        f"/v1/wallets/{provisioned.wallet_id}", headers={"Authorization": f"Bearer {provisioned.token}"}
    )
    assert view.status_code == 200
    body = view.json()
    assert body["agent_public_key"] == str(provisioned.agent) and body["policy_sequence"] == 1 and not body["frozen"]
    sol = next(limit for limit in body["limits"] if limit["asset"] == "SOL")
    assert int(sol["spent"]) == LAMPORTS_PER_SOL // 4
    assert int(sol["automatic_left"]) == 5 * LAMPORTS_PER_SOL - LAMPORTS_PER_SOL // 4


def test_submit_broadcasts_through_the_chain_adapter(provisioned: Harness) -> None:
    svm = provisioned.services.chain.svm  # type: ignore[attr-defined]
    svm.airdrop(provisioned.agent, 2 * LAMPORTS_PER_SOL)
    from solders.message import Message
    from solders.system_program import TransferParams, transfer
    from solders.transaction import Transaction

    ix = transfer(TransferParams(from_pubkey=provisioned.agent, to_pubkey=MERCHANT, lamports=1_000_000))  # rent-exempt
    tx = bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], provisioned.agent, svm.latest_blockhash())))
    response = provisioned.sign(tx, submit=True)
    assert response.status_code == 200, response.text
    assert response.json()["submission"]["submitted"] is True, response.json()["submission"]
    assert svm.get_balance(MERCHANT) == 1_000_000


def test_off_chain_message_is_signed(provisioned: Harness) -> None:
    from tests.support.offchain_messages import offchain_message

    message = offchain_message(provisioned.agent, "hello")
    response = provisioned.client.post(
        f"/v1/wallets/{provisioned.wallet_id}/messages/sign",
        json={"message": base64.b64encode(message).decode()},
        headers={"Authorization": f"Bearer {provisioned.token}"},
    )
    assert response.status_code == 200, response.text
    from solders.signature import Signature

    signature = Signature.from_string(response.json()["signature"])
    Ed25519PublicKey.from_public_bytes(bytes(provisioned.agent)).verify(bytes(signature), message)


def test_off_chain_message_refused_when_the_policy_does_not_allow_it(provisioned: Harness) -> None:
    from tests.support.offchain_messages import offchain_message

    installed = provisioned.owner_call(
        "PUT",
        f"/v1/wallets/{provisioned.wallet_id}/policy",
        {"envelope": provisioned.policy(2, offchain_messages={"allowed": False})},
    )
    assert installed.status_code == 200, installed.text
    response = provisioned.client.post(
        f"/v1/wallets/{provisioned.wallet_id}/messages/sign",
        json={"message": base64.b64encode(offchain_message(provisioned.agent, "hello")).decode()},
        headers={"Authorization": f"Bearer {provisioned.token}"},
    )
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "policy_denied"
    assert "signature" not in response.text
