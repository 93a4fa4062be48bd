"""Off-chain messages count towards the denial burst in the proxy too (`parent_proxy.message_checks`).

Check 1 judges a message as the enclave does (`policies.message_decision.judge_message`): one that does not decode as an
off-chain message, or that does not name the agent key among its signers, is a DENY (rule ``decode``), recorded as
a denial in the same store transaction as its ``message.denied`` record, and the denial that completes a burst
freezes the wallet (``message.frozen``, webhook ``wallet.frozen``). An enclave refusal of a message check 1 allowed
is recorded too (``message.refused``), as a denial when the enclave's ledger counts one. A message refused because
the wallet is frozen or has no (valid) policy gets a ``message.refused`` record, as a transaction does.

Before (found in review): check 1 did not decode the message, the enclave's refusal was audited ``message.failed``
and counted nowhere, so eight garbage messages were eight 403 ``enclave_refused`` and no freeze, where five garbage
transactions froze the wallet; a frozen wallet's or a policy-less wallet's message refusal had no audit record.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from policies.signing import POLICY_PURPOSE, sign_document
from tests.proxy.api_harness import Harness, provision
from tests.proxy.harness_calls import configure_webhook, freeze_order, queued, records, sign_message
from tests.support.offchain_messages import offchain_message
from tests.support.policies import MERCHANT, example_policy

BURST = {"on_authority_change": True, "on_delegate_approval": True, "on_close_to_stranger": True,
         "denials": {"count": 3, "window_seconds": 600}}  # fmt: skip
"""Three denials within ten minutes freeze the wallet."""


def provision_burst(h: Harness, **rules: Any) -> None:
    provision(h, h.policy(1, offchain_messages={"allowed": True}, freeze=BURST, **rules))
    configure_webhook(h)


def send(h: Harness, message: bytes) -> Any:
    return h.client.post(f"/v1/wallets/{h.wallet_id}/messages/sign", headers={"Authorization": f"Bearer {h.token}"},
                         json={"message": base64.b64encode(message).decode()})  # fmt: skip


def counters(h: Harness) -> tuple[int, int]:
    """Requests and denials the store counts for the wallet."""
    return len(h.store.recent_requests(h.wallet_id, 0.0)), len(h.store.recent_denials(h.wallet_id, 0.0))


def last_payload(h: Harness) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(records(h)[-1].payload)
    return payload


def code(response: Any) -> str:
    return str(response.json()["error"]["code"])


def not_a_message(h: Harness) -> bytes:
    return b"garbage"


def a_transaction(h: Harness) -> bytes:
    return h.transfer(1000, MERCHANT)


def not_the_agents(h: Harness) -> bytes:
    return offchain_message(Pubkey.new_unique(), "login")


@pytest.mark.parametrize("refused", [not_a_message, a_transaction, not_the_agents])
def test_refused_messages_are_denials_and_a_burst_freezes_the_wallet(h: Harness, refused: Any) -> None:
    provision_burst(h)
    answers = [send(h, refused(h)) for _ in range(3)]
    assert [a.status_code for a in answers] == [403, 403, 403]
    assert [code(a) for a in answers] == ["policy_denied", "policy_denied", "wallet_frozen"]
    assert [r["rule"] for r in answers[0].json()["error"]["reasons"]] == ["decode"]
    assert [r["rule"] for r in answers[2].json()["error"]["reasons"]] == ["decode", "freeze.denials"]
    wallet = h.store.get_wallet(h.wallet_id)
    assert wallet.frozen and wallet.frozen_reason == "policy freeze trigger: freeze.denials"
    assert counters(h) == (3, 3)
    assert h.audit_events()[-3:] == ["message.denied", "message.denied", "message.frozen"]
    assert queued(h) == ["message.denied", "message.denied", "wallet.frozen"]
    # The wallet refuses everything now, transactions too, until the owner unfreezes it.
    assert code(sign_message(h)) == "wallet_frozen"
    assert code(h.sign(h.transfer(1000, MERCHANT))) == "wallet_frozen"


def test_refused_messages_and_transactions_share_the_burst(h: Harness) -> None:
    provision_burst(h)
    assert code(h.sign(b"garbage one")) == "policy_denied"
    assert code(send(h, b"garbage two")) == "policy_denied"
    assert code(h.sign(b"garbage three")) == "wallet_frozen"
    assert h.store.get_wallet(h.wallet_id).frozen


def test_a_message_denial_is_written_with_its_record(h: Harness) -> None:
    """The denial and its ``message.denied`` record are one store transaction: no record, no denial (503)."""
    provision_burst(h)
    before = counters(h)
    conn = h.store.inner._conn()
    conn.execute("ALTER TABLE audit_log RENAME TO audit_log_away")
    try:
        failed = send(h, b"garbage")
    finally:
        conn.execute("ALTER TABLE audit_log_away RENAME TO audit_log")
    assert failed.status_code == 503 and code(failed) == "store_unavailable"
    assert counters(h) == before
    assert code(send(h, b"garbage")) == "policy_denied" and counters(h) == (before[0] + 1, before[1] + 1)


def test_an_enclave_refusal_is_a_denial(h: Harness) -> None:
    """The enclave refuses a message check 1 allowed (here: its own ledger has the request rate used up, the proxy's
    counters lost their requests): the proxy records the denial the enclave counted, with ``message.refused`` and a
    ``message.denied`` webhook item; the next denial in check 1 then completes the burst."""
    provision_burst(h, rate={"max_requests": 1, "window_seconds": 600})
    assert sign_message(h).status_code == 200
    h.store.inner._conn().execute("DELETE FROM wallet_events WHERE kind = 'request'")
    refused = sign_message(h, "second")
    assert refused.status_code == 403 and code(refused) == "enclave_refused"
    assert counters(h) == (1, 1)  # the request (check 1) and the enclave's denial
    assert h.audit_events()[-1] == "message.refused"
    assert last_payload(h)["error"] == "enclave_refused"
    assert queued(h) == ["message.denied"]
    assert code(send(h, b"garbage")) == "policy_denied"  # rate and decode: the second denial
    assert code(send(h, b"garbage")) == "wallet_frozen"  # the third
    assert h.store.get_wallet(h.wallet_id).frozen


def test_a_message_for_a_frozen_wallet_is_audited(h: Harness) -> None:
    provision_burst(h)
    assert h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/freeze", freeze_order(h, 1)).status_code == 200
    before = counters(h)
    refused = sign_message(h)
    assert refused.status_code == 403 and code(refused) == "wallet_frozen"
    assert h.audit_events()[-1] == "message.refused"
    payload = last_payload(h)
    assert payload["reason"] == "wallet frozen" and payload["error"] == "wallet_frozen"
    assert payload["message_sha256"] and counters(h) == before  # not a denial, as for a transaction


def test_the_enclaves_frozen_answer_is_audited_not_counted(h: Harness) -> None:
    """The enclave holds the wallet frozen and the proxy does not (an unfreeze the enclave never acknowledged):
    ``message.refused``, and neither a denial nor a freeze in the proxy's store."""
    provision_burst(h)
    assert h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/freeze", freeze_order(h, 1)).status_code == 200
    h.store.inner._conn().execute("UPDATE wallets SET frozen = 0, frozen_reason = NULL WHERE wallet_id = ?",
                                  (h.wallet_id,))  # fmt: skip
    refused = sign_message(h)
    assert refused.status_code == 403 and code(refused) == "wallet_frozen"
    assert h.audit_events()[-1] == "message.refused" and last_payload(h)["error"] == "wallet_frozen"
    assert counters(h) == (1, 0)  # check 1 recorded the request
    assert not h.store.get_wallet(h.wallet_id).frozen


def test_a_message_for_a_wallet_without_policy_is_audited(h: Harness) -> None:
    created = h.owner_call("POST", "/v1/wallets", {"wallet_id": h.wallet_id, "owner_public_key": str(h.owner_pub)})
    assert created.status_code == 201, created.text
    h.agent = Pubkey.from_string(created.json()["agent_public_key"])
    h.token = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/tokens").json()["token"]
    refused = sign_message(h)
    assert refused.status_code == 403 and code(refused) == "no_policy"
    assert h.audit_events()[-1] == "message.refused"
    assert last_payload(h)["reason"] == "no policy" and counters(h) == (0, 0)


def test_a_message_under_a_policy_that_no_longer_verifies_is_audited(h: Harness) -> None:
    provision_burst(h)
    document = example_policy()
    document["wallet_id"], document["sequence"] = h.wallet_id, 1
    forged = sign_document(POLICY_PURPOSE, document, Ed25519PrivateKey.generate())
    stored = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode()
    h.store.inner._conn().execute("UPDATE wallets SET policy_document = ? WHERE wallet_id = ?", (stored, h.wallet_id))
    refused = sign_message(h)
    assert refused.status_code == 403 and code(refused) == "no_policy"
    assert h.audit_events()[-1] == "message.refused"
    assert last_payload(h)["reason"] == "stored policy does not verify" and counters(h) == (0, 0)
