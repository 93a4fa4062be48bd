"""Agent-key rotation through the HTTP API: the real proxy, store, enclave (local sealer) and embedded chain. The
Squads program is not available offline, so the multisig account the rotation transaction would leave is written
into the chain by the test (`tests.support.squads_rotation.put_multisig`); everything else runs for real."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from solders.account import Account
from solders.hash import Hash
from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from enclave_app.client import WALLET_REQUEST_TIMEOUT_SECONDS
from enclave_app.receipts import verify_agent_key_receipt
from enclave_app.transport import UnixAddress
from parent_proxy.app import create_app
from parent_proxy.auth import RateLimiter, attestation_limiter
from parent_proxy.chain import LiteSvmChain
from parent_proxy.enclave_pool import PooledEnclaveClient
from parent_proxy.enclave_relay import EnclaveRelay
from parent_proxy.owner_auth import StoreNonceRegistry
from parent_proxy.rotation_transaction import RotationBuildError, advance_nonce_instruction, build_rotation_transaction
from parent_proxy.services import Services
from policies.orders import AGENT_KEY_ROTATION_PURPOSE, AGENT_KEY_SWITCH_PURPOSE, rotation_document, switch_document
from policies.signing import sign_document
from tests.proxy.api_harness import Harness, provision, signature_of, svm
from tests.proxy.rotation_requests import (
    CREATE_KEY,
    agent_key_path,
    chain_shows,
    multisig_wallet,
    rotation_body,
    session_key,
    switch_body,
)
from tests.support.owner_rotation_rpc import make_nonce
from tests.support.policies import MERCHANT
from tests.support.squads_rotation import (
    multisig_address,
    put_spending_limit,
    rotation_instructions,
    rotation_transaction,
    unsigned,
)


def _receipt(h: Harness, view: dict[str, Any]) -> Any:
    receipt = base64.b64decode(view["receipt"]["receipt"])
    signature = bytes(Signature.from_string(view["receipt"]["signature"]))
    return verify_agent_key_receipt(receipt, signature, session_key(h))


def test_rotation_through_the_api(h: Harness) -> None:
    multisig = multisig_wallet(h)
    old = h.agent
    assert h.owner_call("GET", agent_key_path(h)).json() == {
        "wallet_id": h.wallet_id, "agent_public_key": str(old), "candidate_public_key": None, "retired": []
    }  # fmt: skip
    # 1. Candidate.
    made = h.owner_call("POST", agent_key_path(h, "/candidate"))
    assert made.status_code == 201, made.text
    new = Pubkey.from_string(made.json()["candidate_public_key"])
    receipt = _receipt(h, made.json())
    assert (receipt.purpose, receipt.agent_public_key, receipt.new_agent_public_key) == (
        "agent_key_candidate", bytes(old), bytes(new)
    )  # fmt: skip
    again = h.owner_call("POST", agent_key_path(h, "/candidate"))
    assert again.status_code == 409 and str(new) in again.json()["error"]["message"]
    assert h.owner_call("GET", agent_key_path(h)).json()["candidate_public_key"] == str(new)
    # 2. Co-signature of the membership change.
    raw = rotation_transaction(multisig, owner=h.owner_pub, agent=old, new_agent=new)
    signed = h.owner_call("POST", agent_key_path(h, "/rotation"), rotation_body(h, raw, new))
    assert signed.status_code == 200, signed.text
    tx = VersionedTransaction.from_bytes(base64.b64decode(signed.json()["signed_transaction"]))
    assert signature_of(signed).verify(old, to_bytes_versioned(tx.message))
    assert _receipt(h, signed.json()).purpose == "agent_key_rotation"
    # 3. Switch: refused until the chain shows the change, then made.
    early = h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new))
    assert early.status_code == 409 and "does not show the membership change" in early.json()["error"]["message"]
    chain_shows(h, [h.owner_pub, new])
    switched = h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new))
    assert switched.status_code == 200, switched.text
    assert (
        switched.json()["agent_public_key"] == str(new) and _receipt(h, switched.json()).purpose == "agent_key_switch"
    )
    status = h.owner_call("GET", agent_key_path(h)).json()
    assert status["agent_public_key"] == str(new) and status["candidate_public_key"] is None
    assert [r["agent_public_key"] for r in status["retired"]] == [str(old)]
    events = h.audit_events()
    for event in ("agent_key.candidate", "agent_key.rotation_signed", "agent_key.switched"):
        assert event in events
    # The agent's token still works; the wallet now signs with the new key, under the same policy.
    h.agent = new
    paid = h.sign(h.transfer(1000, MERCHANT))
    assert paid.status_code == 200, paid.text
    assert h.client.get(f"/v1/wallets/{h.wallet_id}", headers={"Authorization": f"Bearer {h.token}"}).status_code == 200


def test_rotation_refusals_sign_nothing(h: Harness) -> None:
    multisig = multisig_wallet(h)
    # No candidate yet.
    raw = rotation_transaction(multisig, owner=h.owner_pub, agent=h.agent, new_agent=Pubkey.new_unique())
    assert (
        h.owner_call("POST", agent_key_path(h, "/rotation"), rotation_body(h, raw, Pubkey.new_unique())).status_code
        == 409
    )
    new = Pubkey.from_string(h.owner_call("POST", agent_key_path(h, "/candidate")).json()["candidate_public_key"])
    raw = rotation_transaction(multisig, owner=h.owner_pub, agent=h.agent, new_agent=new)
    stranger = Ed25519PrivateKey.generate()
    cases = [
        (rotation_body(h, raw, new, key=stranger), 401),  # the order is not the owner's
        (rotation_body(h, raw, Pubkey.new_unique()), 409),  # the owner's order names another candidate (401 before)
        (rotation_body(h, raw, new, agent=Pubkey.new_unique()), 409),  # ... replaces another key
        ({**rotation_body(h, raw, new), "transaction": base64.b64encode(b"\x01" * 80).decode()}, 422),
    ]
    for body, status in cases:
        answer = h.owner_call("POST", agent_key_path(h, "/rotation"), body)
        assert answer.status_code == status, answer.text
    other = rotation_transaction(Pubkey.new_unique(), owner=h.owner_pub, agent=h.agent, new_agent=new)
    refused = h.owner_call("POST", agent_key_path(h, "/rotation"), rotation_body(h, other, new))  # another multisig
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "enclave_refused"
    assert "agent_key.rotation_signed" not in h.audit_events()
    # The switch: a stranger's order, then the right order for a change not on chain.
    assert h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new, key=stranger)).status_code == 401
    assert h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new)).status_code == 409
    assert h.owner_call("GET", agent_key_path(h)).json()["agent_public_key"] == str(h.agent)


def test_signed_rotation_and_switch_orders_with_a_refused_field_are_422(h: Harness) -> None:
    """The owner's signature holds but a field is refused (expired, another wallet, another message): 422
    ``invalid_request`` naming the field, as for a policy or a freeze order (docs/api.md: one rule,
    `api_errors.owner_document_refused`; 401 before); nothing signed, nothing switched, nothing recorded."""
    multisig_wallet(h)
    new = Pubkey.from_string(h.owner_call("POST", agent_key_path(h, "/candidate")).json()["candidate_public_key"])
    raw = rotation_transaction(multisig_address(CREATE_KEY)[0], owner=h.owner_pub, agent=h.agent, new_agent=new)
    digest = hashlib.sha256(to_bytes_versioned(VersionedTransaction.from_bytes(raw).message)).digest()
    past, later = int(time.time()) - 60, int(time.time()) + 600
    rotations = [
        (rotation_document(h.wallet_id, h.agent, new, digest, past), "expires_at"),
        (rotation_document("w-other", h.agent, new, digest, later), "wallet_id"),
        (rotation_document(h.wallet_id, h.agent, new, b"\x01" * 32, later), "message_hash"),
    ]
    chain_shows(h, [h.owner_pub, new])  # the switch would otherwise go through
    switches = [
        (switch_document(h.wallet_id, h.agent, new, past), "expires_at"),
        (switch_document("w-other", h.agent, new, later), "wallet_id"),
    ]
    events = h.audit_events()
    cases = [("/rotation", {"transaction": base64.b64encode(raw).decode(),
                            "envelope": sign_document(AGENT_KEY_ROTATION_PURPOSE, doc, h.owner)}, field)
             for doc, field in rotations]  # fmt: skip
    cases += [("/switch", {"envelope": sign_document(AGENT_KEY_SWITCH_PURPOSE, doc, h.owner)}, field)
              for doc, field in switches]  # fmt: skip
    for tail, body, field in cases:
        answer = h.owner_call("POST", agent_key_path(h, tail), body)
        assert answer.status_code == 422, (tail, field, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "invalid_request" and field in error["message"], (tail, field, error)
    assert h.audit_events() == events
    assert h.owner_call("GET", agent_key_path(h)).json()["agent_public_key"] == str(h.agent)


def test_wallet_without_a_multisig_cannot_rotate(h: Harness) -> None:
    provision(h)
    answer = h.owner_call("POST", agent_key_path(h, "/candidate"))
    assert answer.status_code == 409 and "no Squads multisig" in answer.json()["error"]["message"]
    assert h.owner_call("GET", agent_key_path(h)).json()["candidate_public_key"] is None


def test_a_switch_the_store_could_not_record_is_repeated(h: Harness) -> None:
    """The enclave switched, the store failed: the owner repeats the switch and the store catches up."""
    multisig_wallet(h)
    old = h.agent
    new = Pubkey.from_string(h.owner_call("POST", agent_key_path(h, "/candidate")).json()["candidate_public_key"])
    chain_shows(h, [h.owner_pub, new])
    h.store.failing.add("apply_audited")
    failed = h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new))
    assert failed.status_code == 503
    h.store.failing.clear()
    assert h.owner_call("GET", agent_key_path(h)).json()["agent_public_key"] == str(old)
    repeated = h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new))
    assert repeated.status_code == 200, repeated.text
    assert h.owner_call("GET", agent_key_path(h)).json()["agent_public_key"] == str(new)


@contextmanager
def another_proxy(h: Harness) -> Iterator[Harness]:
    """A second proxy process on the same store, chain and running enclave (the one that sent a switch restarted,
    say): its own app, relay (nothing loaded), enclave sessions and nonce registry."""
    enclave = PooledEnclaveClient(
        UnixAddress(str(h.socket)), timeout=5.0, wallet_timeout=WALLET_REQUEST_TIMEOUT_SECONDS
    )
    relay = EnclaveRelay(enclave)
    services = Services(
        store=h.store, clock=h.clock, relay=relay, chain=h.services.chain, rate_limiter=RateLimiter(1000.0, 1000),
        attestation_limiter=attestation_limiter(1000.0, 1000), nonces=StoreNonceRegistry(h.store),
        owner_keys=h.services.owner_keys, public_origins=h.services.public_origins, owner_max_skew_seconds=300,
        max_body_bytes=16 * 1024, require_multisig=False,
    )  # fmt: skip
    with TestClient(create_app(services), base_url=h.origin, raise_server_exceptions=False) as client:
        yield dataclasses.replace(h, client=client, services=services)


def _switch_not_recorded(h: Harness) -> tuple[Pubkey, dict[str, Any]]:
    """A rotation whose switch the enclave made and the store did not record (503): the candidate and the order."""
    multisig_wallet(h)
    new = Pubkey.from_string(h.owner_call("POST", agent_key_path(h, "/candidate")).json()["candidate_public_key"])
    chain_shows(h, [h.owner_pub, new])
    body = switch_body(h, new)
    h.store.failing.add("apply_audited")
    try:
        assert h.owner_call("POST", agent_key_path(h, "/switch"), body).status_code == 503
    finally:
        h.store.failing.clear()
    return new, body


def test_a_switch_the_store_could_not_record_is_repeated_on_another_proxy(h: Harness) -> None:
    """The same switch sent again to a proxy that did not send it (restarted since, or another process): loading the
    stored wallet (old key) answers ``wallet_exists``, as the enclave holds it with the candidate already. The order
    goes to the enclave all the same, which answers the same; the store catches up, and the wallet signs with the new
    key. Before, 503 ("the enclave holds this wallet with other keys") until the enclave restarted."""
    new, body = _switch_not_recorded(h)
    old = h.agent
    with another_proxy(h) as p:
        repeated = p.owner_call("POST", agent_key_path(p, "/switch"), body)
        assert repeated.status_code == 200, repeated.text
        view = repeated.json()
        assert (view["agent_public_key"], view["previous_agent_public_key"]) == (str(new), str(old))
        receipt = _receipt(p, view)
        assert (receipt.purpose, receipt.agent_public_key, receipt.new_agent_public_key) == (
            "agent_key_switch", bytes(old), bytes(new)
        )  # fmt: skip
        status = p.owner_call("GET", agent_key_path(p)).json()
        assert (status["agent_public_key"], status["candidate_public_key"]) == (str(new), None)
        assert [r["agent_public_key"] for r in status["retired"]] == [str(old)]
        assert p.audit_events().count("agent_key.switched") == 1
        assert "agent_key.failed" not in p.audit_events()
        p.agent = new
        tx = p.transfer(1000, MERCHANT)
        paid = p.sign(tx)
        assert paid.status_code == 200, paid.text
        assert signature_of(paid).verify(new, to_bytes_versioned(VersionedTransaction.from_bytes(tx).message))


def test_a_wallet_held_with_keys_the_order_does_not_name_stays_refused(h: Harness) -> None:
    """The enclave holds the wallet with candidate C1 (a switch the store did not record), but the store shows
    another candidate C2 (tampered with, say) and the order names C2: the order goes to the enclave, which refuses it
    (the wallet's key is not the one the order replaces). The answer stays 503, nothing is stored, and no payment is
    signed: the relay never counts the wallet as loaded."""
    _switch_not_recorded(h)
    old = h.agent
    other = Pubkey.new_unique()
    h.store.inner._conn().execute("UPDATE agent_key_candidates SET candidate_pubkey = ? WHERE wallet_id = ?",
                                  (bytes(other), h.wallet_id))  # fmt: skip
    chain_shows(h, [h.owner_pub, other])
    events = h.audit_events()
    with another_proxy(h) as p:
        refused = p.owner_call("POST", agent_key_path(p, "/switch"), switch_body(p, other))
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["message"] == "the enclave holds this wallet with other keys"
        status = p.owner_call("GET", agent_key_path(p)).json()
        assert (status["agent_public_key"], status["candidate_public_key"], status["retired"]) == (
            str(old), str(other), []
        )  # fmt: skip
        assert p.audit_events() == events
        assert p.sign(p.transfer(1000, MERCHANT)).status_code == 503


def test_a_switch_to_a_multisig_that_does_not_exist_is_refused_as_at_install(h: Harness) -> None:
    """The multisig the policy declares is gone from the chain (closed, or the wrong cluster): 409
    ``multisig_nonconforming`` with the failed ``multisig.exists`` check, as a policy install answers; nothing is
    switched, the enclave is not asked. Before, 503 ``chain_unavailable``, as if a retry could help."""
    multisig = multisig_wallet(h)
    old = h.agent
    new = Pubkey.from_string(h.owner_call("POST", agent_key_path(h, "/candidate")).json()["candidate_public_key"])
    svm(h).set_account(multisig, Account(0, b"", Pubkey.default(), False, 0))
    refused = h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new))
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "multisig_nonconforming" and f"the multisig {multisig}" in error["message"]
    assert "does not exist on chain" in error["message"] and "failed checks: multisig.exists" in error["message"]
    assert error["reasons"] == [
        {
            "id": "multisig.exists",
            "subject": str(multisig),
            "seen": "no account at this address",
            "expected": "the Squads v4 multisig the policy declares, set up on chain",
        }
    ]
    status = h.owner_call("GET", agent_key_path(h)).json()
    assert (status["agent_public_key"], status["candidate_public_key"]) == (str(old), str(new))
    assert "agent_key.switched" not in h.audit_events() and "agent_key.failed" not in h.audit_events()
    assert h.sign(h.transfer(1000, MERCHANT)).status_code == 200  # the enclave still signs with the old key


def test_only_the_owner_reaches_the_rotation_routes(h: Harness) -> None:
    multisig_wallet(h)
    stranger = Ed25519PrivateKey.generate()
    for method, tail in (("GET", ""), ("POST", "/candidate"), ("POST", "/switch"), ("POST", "/rotation")):
        assert (
            h.owner_call(method, agent_key_path(h, tail), {} if method == "POST" else None, key=stranger).status_code
            == 401
        )
    assert h.owner_call("GET", agent_key_path(h)).json()["candidate_public_key"] is None


def test_the_switch_waits_until_no_spending_limit_names_the_old_key(h: Harness) -> None:
    """A spending limit still naming the old agent key (left out of the rotation transaction) blocks the switch:
    the new key could not use it, and on some Squads versions the old key could go on spending through it."""
    multisig = multisig_wallet(h)
    old = h.agent
    new = Pubkey.from_string(h.owner_call("POST", agent_key_path(h, "/candidate")).json()["candidate_public_key"])
    chain_shows(h, [h.owner_pub, new])
    chain = svm(h)
    left = put_spending_limit(chain, multisig, Pubkey.new_unique(), members=[old])
    put_spending_limit(chain, multisig, Pubkey.new_unique(), members=[h.owner_pub])  # names another key: no matter
    blocked = h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new))
    assert blocked.status_code == 409 and str(left) in blocked.json()["error"]["message"], blocked.text
    assert h.owner_call("GET", agent_key_path(h)).json()["agent_public_key"] == str(old)
    # The rotation replaced it: the old limit is gone, one naming the new key is there.
    chain.set_account(left, Account(0, b"", Pubkey.default(), False, 0))
    put_spending_limit(chain, multisig, Pubkey.new_unique(), members=[new])
    switched = h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new))
    assert switched.status_code == 200, switched.text


def test_a_durable_nonce_rotation_through_the_api(h: Harness) -> None:
    """Built by the proxy package's own builder on a nonce account the System program made on the embedded chain;
    the agent co-signs it, and refuses one whose nonce authority is the agent key."""
    multisig = multisig_wallet(h)
    chain = h.services.chain
    assert isinstance(chain, LiteSvmChain)
    new = Pubkey.from_string(h.owner_call("POST", agent_key_path(h, "/candidate")).json()["candidate_public_key"])

    def durable(authority: Pubkey) -> bytes:
        address = make_nonce(chain.svm, authority)
        nonce = asyncio.run(chain.nonce_account(address))
        return build_rotation_transaction(multisig=multisig, transaction_index=1, owner=h.owner_pub, agent=h.agent,
                                          new_agent=new, nonce=nonce)  # fmt: skip

    with pytest.raises(RotationBuildError, match="not the owner key"):
        durable(h.agent)  # the builder refuses it; the enclave too, below
    raw = durable(h.owner_pub)
    signed = h.owner_call("POST", agent_key_path(h, "/rotation"), rotation_body(h, raw, new))
    assert signed.status_code == 200, signed.text
    tx = VersionedTransaction.from_bytes(base64.b64decode(signed.json()["signed_transaction"]))
    assert tx.message == VersionedTransaction.from_bytes(raw).message
    assert signature_of(signed).verify(h.agent, to_bytes_versioned(tx.message))

    address = make_nonce(chain.svm, h.agent)
    advance = advance_nonce_instruction(address, h.agent)
    hostile = unsigned([advance, *rotation_instructions(multisig, owner=h.owner_pub, agent=h.agent, new_agent=new)],
                       h.owner_pub, Hash.new_unique())  # fmt: skip
    refused = h.owner_call("POST", agent_key_path(h, "/rotation"), rotation_body(h, hostile, new))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "enclave_refused"
    assert h.audit_events().count("agent_key.rotation_signed") == 1
