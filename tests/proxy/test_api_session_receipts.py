"""Every enclave receipt is checked against the attested session key as it arrives (`parent_proxy.enclave_sessions`).

With the real enclave app (modes nitro and none): the first receipt (since order receipts, the one of the policy
install at provisioning) makes the proxy attest the enclave and write an ``enclave.session`` record before the
receipt's own record; later receipts verify under that key with no further attestation; an enclave restart makes a
second session record, before the receipt of the policy the relay installs again. A proxy that restarts while the
enclave runs on (`after_a_proxy_restart`) attests on its first decision receipt. With a stand-in enclave on the
socket (the transport seam) whose receipts another key signed, or that contradict the answer: 503
``enclave_unavailable``, nothing signed, the reservation released, the idempotency key free, an owner approval back
to pending. The stand-in signs the requested transaction or message with the wallet's real agent key, so that the
receipt is the only thing wrong with its answer (the agent-signature check:
tests/proxy/test_api_agent_signature_check.py). A store failure while writing the session record: 503, nothing
signed, no key adopted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey

from enclave_app.order_receipts import verify_order_receipt
from enclave_app.protocol import MessageSignatureResponse, TransactionDecisionResponse
from enclave_app.receipts import SessionKey, verify_receipt
from parent_proxy.attestation import document_public_key_unverified
from parent_proxy.enclave_sessions import ENCLAVE_SESSION_EVENT, document_nonce_unverified
from parent_proxy.receipt_checks import split_receipt
from parent_proxy.shared_exclusive_lock import SharedExclusiveLock
from parent_proxy.sign_parts import message_hash
from parent_proxy.store.model import AuditRecord
from tests.proxy.api_harness import (
    LAMPORTS_PER_SOL,
    Harness,
    agent_private_key,
    approve_escalated,
    new_session_key,
    pending_approval_ids,
    provision,
    provisioned_harness,
    running_harness,
    sign_in_slot,
    signed_receipt,
    spy_calls,
    stand_in_decision,
    stand_in_harness,
    start_enclave,
    start_stand_in_enclave,
    stop_enclave,
)
from tests.proxy.harness_calls import pending_reservations, records, sign_message
from tests.support.offchain_messages import offchain_message
from tests.support.policies import MERCHANT

NONCE = "cd" * 32


def sessions(h: Harness) -> list[AuditRecord]:
    return [r for r in records(h) if r.event_type == ENCLAVE_SESSION_EVENT]


def session_key(record: AuditRecord) -> bytes:
    return bytes(Pubkey.from_string(json.loads(record.payload)["session_public_key"]))


def count_attestations(h: Harness) -> list[bytes]:
    """Wrap the relay's attestation call; the list grows by the nonce of each call."""
    return spy_calls(h.services.relay, "attestation")


def after_a_proxy_restart(h: Harness) -> None:
    """As when the proxy process restarts while the enclave runs on: no session key in force, and no policy to
    install (the enclave holds it: a new relay's install would be answered ``policy_stale``, with no receipt), so
    the next decision receipt is the first this process sees."""
    h.services.sessions.forget()


# -- the real enclave ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["nitro", "none"])
def test_receipts_verify_under_the_attested_session_key(tmp_path: Path, mode: str) -> None:
    for h in running_harness(tmp_path, attestation=mode):
        calls = count_attestations(h)
        provision(h, h.policy(1, offchain_messages={"allowed": True}), before_install=nothing_attested)
        for _ in range(3):
            signed = h.sign(h.transfer(1000, MERCHANT))
            assert signed.status_code == 200, signed.text
        assert sign_message(h).status_code == 200
        assert len(calls) == 1  # one attestation for the session, none per request
        # One session record, before every receipt, naming the key GET /v1/attestation names.
        (session,) = sessions(h)
        payload = json.loads(session.payload)
        view = h.client.get(f"/v1/attestation?nonce={NONCE}").json()
        assert payload["session_public_key"] == view["session_public_key"]
        assert payload["mode"] == mode and bytes.fromhex(payload["nonce"]) == calls[0]
        key = session_key(session)
        assert h.services.sessions.current == key
        if mode == "nitro":
            document = base64.b64decode(payload["document"])
            assert document_public_key_unverified(document) == key
            assert document_nonce_unverified(document) == calls[0]
        else:
            assert payload["document"] is None and payload["reason"]
        with_receipts = [r for r in records(h) if r.receipt is not None]
        assert [r.event_type for r in with_receipts] == (
            ["policy.enclave_installed"] + ["transaction.signed"] * 3 + ["message.signed"]
        )
        assert all(r.seq > session.seq for r in with_receipts)
        assert verify_order_receipt(*split_receipt(with_receipts[0].receipt or b""), key).counter == 1
        for record in with_receipts[1:]:
            assert record.receipt is not None
            stated = verify_receipt(*split_receipt(record.receipt), key)
            assert stated.wallet_id == h.wallet_id


def nothing_attested(h: Harness) -> None:
    """Before the first receipt (the wallet exists, its policy is not installed yet), no session is recorded."""
    assert sessions(h) == [] and h.services.sessions.current is None


def test_an_enclave_restart_records_a_second_session(tmp_path: Path) -> None:
    with provisioned_harness(tmp_path) as (h, loop, servers):
        assert h.sign(h.transfer(1000, MERCHANT)).status_code == 200
        first = sessions(h)
        assert len(first) == 1
        # The enclave restarts: a new boot, a new session key; the proxy still believes the wallet is loaded.
        stop_enclave(h, loop, servers[0])
        servers.append(start_enclave(loop, h.socket))
        lost = h.sign(h.transfer(1000, MERCHANT))  # unknown_wallet: never re-sent (docs/api.md)
        assert lost.status_code == 503, lost.text
        again = h.sign(h.transfer(1000, MERCHANT))  # the relay loads the wallet and installs its policy first
        assert again.status_code == 200, again.text
        second = sessions(h)
        assert len(second) == 2 and session_key(second[0]) != session_key(second[1])
        assert h.services.sessions.current == session_key(second[1])
        later = [r for r in records(h) if r.receipt is not None and r.seq > second[1].seq]
        assert [r.event_type for r in later] == ["policy.enclave_installed", "transaction.signed"]
        key = session_key(second[1])
        assert verify_order_receipt(*split_receipt(later[0].receipt or b""), key).counter == 1
        assert verify_receipt(*split_receipt(later[1].receipt or b""), key).counter == 2


def test_store_failure_at_the_session_record_hands_out_nothing(tmp_path: Path) -> None:
    for h in running_harness(tmp_path):
        provision(h)
        after_a_proxy_restart(h)
        (provisioned,) = sessions(h)
        h.store.failing = {"append_audit"}
        failed = h.sign(h.transfer(1000, MERCHANT), key="after-the-outage")
        h.store.failing = set()
        assert failed.status_code == 503 and failed.json()["error"]["code"] == "store_unavailable", failed.text
        assert "signed_transaction" not in failed.text
        assert sessions(h) == [provisioned] and h.services.sessions.current is None  # no record, no key
        assert pending_reservations(h) == [] and h.spent() == 0
        again = h.sign(h.transfer(1000, MERCHANT), key="after-the-outage")  # the key is free again
        assert again.status_code == 200, again.text
        session = sessions(h)[-1]
        assert session.seq > provisioned.seq and session_key(session) == session_key(provisioned)  # the same boot
        assert records(h)[-1].event_type == "transaction.signed" and records(h)[-1].seq > session.seq


# -- a stand-in enclave whose receipts do not hold --------------------------------------------------------------


SwapEnclave = tuple[Harness, Callable[[SessionKey, Callable[[], Any]], None]]


@pytest.fixture
def swap_enclave(tmp_path: Path) -> Iterator[SwapEnclave]:
    """A provisioned wallet (message signing allowed) and a function that puts a stand-in enclave with the given
    session key and answer on the socket in place of the real one."""
    with stand_in_harness(tmp_path) as (h, loop, servers):

        def replace(session: SessionKey, answer: Callable[[], Any]) -> None:
            servers.append(start_stand_in_enclave(loop, h.socket, session, answer))
            h.services.relay._loaded[h.wallet_id] = 1  # the stand-in answers the signing request itself

        yield h, replace


def allow_answer(
    h: Harness, receipt_signer: SessionKey, tx: bytes, **receipt: Any
) -> Callable[[], TransactionDecisionResponse]:
    """A signed decision for ``tx`` (signed by the wallet's real agent key, in its slot) whose receipt
    ``receipt_signer`` signed."""
    signed, agent_signature = sign_in_slot(agent_private_key(h), tx)

    def answer() -> TransactionDecisionResponse:
        fields: dict[str, Any] = {"verdict": "allow", "message_hash": message_hash(tx), **receipt}
        encoded, signature = signed_receipt(receipt_signer, fields.pop("wallet_id", h.wallet_id), **fields)
        return TransactionDecisionResponse(
            decision=stand_in_decision("allow"), signature=agent_signature,
            signed_transaction=signed, receipt=encoded, receipt_signature=signature,
        )  # fmt: skip

    return answer


def assert_nothing_signed(h: Harness, response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "enclave_unavailable"
    assert "signed_transaction" not in response.text and "signature" not in response.json()
    assert pending_reservations(h) == [] and h.spent() == 0
    assert "transaction.signed" not in [r.event_type for r in records(h)]


def test_a_receipt_signed_by_another_key_is_503_and_nothing_is_signed(swap_enclave: SwapEnclave) -> None:
    h, replace = swap_enclave
    attested, other = new_session_key(), new_session_key()
    tx = h.transfer(1000, MERCHANT)
    replace(attested, allow_answer(h, other, tx))  # receipts signed by a key the stand-in does not attest
    calls = count_attestations(h)
    first = h.sign(tx, key="retry-me")
    assert_nothing_signed(h, first)
    # The proxy attested the enclave once (the real enclave's key no longer verifies), recorded that session, and
    # the receipt did not verify under it either: a malformed answer.
    assert len(calls) == 1
    real, session = sessions(h)  # the real enclave's (from the policy install at provisioning), the stand-in's
    assert session_key(session) == attested.public_key != session_key(real)
    assert records(h)[-1].event_type == "transaction.failed"
    assert json.loads(records(h)[-1].payload)["error"] == "enclave_unavailable"
    # The key is free: the same request reaches the enclave again (and fails the same way, not 409).
    again = h.sign(tx, key="retry-me")
    assert_nothing_signed(h, again)
    assert len(calls) == 2 and len(sessions(h)) == 2  # attested again, same key: no further session record


@pytest.mark.parametrize(
    "receipt",
    [{"wallet_id": "another-wallet"}, {"verdict": "deny"}, {"kind": "message"}],
    ids=["another wallet", "states no signature", "a message receipt"],
)
def test_a_receipt_that_contradicts_its_answer_is_503(swap_enclave: SwapEnclave, receipt: dict[str, Any]) -> None:
    h, replace = swap_enclave
    session = new_session_key()
    tx = h.transfer(1000, MERCHANT)
    replace(session, allow_answer(h, session, tx, **receipt))  # the attested key signed it, but it says otherwise
    response = h.sign(tx)
    assert_nothing_signed(h, response)
    assert len(sessions(h)) == 2 and h.services.sessions.current == session.public_key  # the real one's, the stand-in's


def test_an_owner_approval_goes_back_to_pending(swap_enclave: SwapEnclave) -> None:
    h, replace = swap_enclave
    attested, other = new_session_key(), new_session_key()
    tx = h.transfer(2 * LAMPORTS_PER_SOL, MERCHANT)  # above the example's automatic 1 SOL: escalated
    replace(attested, allow_answer(h, other, tx, approved=True, verdict="escalate"))
    approval_id, failed = approve_escalated(h, tx)
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "enclave_unavailable", failed.text
    assert "signed_transaction" not in failed.text and h.spent() == 0 and pending_reservations(h) == []
    assert pending_approval_ids(h) == [approval_id]
    assert [r.event_type for r in records(h)][-2:] == ["transaction.failed", "approval.reopened"]


def test_a_message_receipt_signed_by_another_key_is_503(swap_enclave: SwapEnclave) -> None:
    h, replace = swap_enclave
    attested, other = new_session_key(), new_session_key()
    message = offchain_message(h.agent, "login")  # what `sign_message` sends
    agent_signature = agent_private_key(h).sign(message)

    def answer() -> MessageSignatureResponse:
        encoded, signature = signed_receipt(
            other, h.wallet_id, kind="message", verdict="allow", message_hash=hashlib.sha256(message).digest()
        )
        return MessageSignatureResponse(signature=agent_signature, receipt=encoded, receipt_signature=signature)

    replace(attested, answer)
    response = sign_message(h)
    assert response.status_code == 503 and response.json()["error"]["code"] == "enclave_unavailable", response.text
    assert "signature" not in response.json()
    events = [r.event_type for r in records(h)]
    assert "message.signed" not in events and events[-1] == "message.failed"
    assert len(sessions(h)) == 2  # the real enclave's, the stand-in's


def test_concurrent_first_receipts_make_one_session_record(tmp_path: Path) -> None:
    """Requests whose receipts all arrive before any key is adopted: one attestation wins, the others find the key
    adopted when they get the lock (the receipt verifies under it) and attest nothing."""
    for h in running_harness(tmp_path):
        provision(h)
        after_a_proxy_restart(h)
        calls = count_attestations(h)
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(h.sign, [h.transfer(1000, MERCHANT) for _ in range(6)]))
        assert [a.status_code for a in answers] == [200] * 6
        assert len(sessions(h)) == 2 and len(calls) == 1  # provisioning's, and one for the six
        key = session_key(sessions(h)[-1])
        signed = [r for r in records(h) if r.event_type == "transaction.signed"]
        assert len(signed) == 6
        for record in signed:
            assert record.seq > sessions(h)[-1].seq and record.receipt is not None
            verify_receipt(*split_receipt(record.receipt), key)


def test_the_session_lock_lets_readers_share_and_a_writer_exclude() -> None:
    lock = SharedExclusiveLock()
    order: list[str] = []
    with lock.shared(), lock.shared():  # two holders of the shared side at once
        writer = threading.Thread(target=lambda: _hold(lock, order))
        writer.start()
        time.sleep(0.05)
        order.append("readers done")  # the writer waits for both readers
    writer.join(timeout=5)
    assert order == ["readers done", "writer"]


def _hold(lock: SharedExclusiveLock, order: list[str]) -> None:
    with lock.exclusive():
        order.append("writer")
