"""The owner's changes are written in one store transaction with their audit record: wallet creation, an agent token
issued or revoked, a policy installed, the webhook configured. When the record cannot be written the request
answers 503 and the change is not there; the retry writes both. The failure is a real one of the SQLite store: its
audit table is renamed away.

Before: each route wrote its change, then the record in a second write: with the audit table unwritable the policy
was in force, the token revoked, the webhook moved to another receiver and the wallet created, each answered 503
and none recorded (a retry of the policy then answered 409 ``stale_policy``, of the wallet 409 ``conflict``)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from enclave_app.errors import EnclaveTimeoutError
from parent_proxy.errors import NotFound
from tests.proxy.api_harness import Harness, unwritable
from tests.support.policies import owner_public_key


def assert_503(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "store_unavailable"


def token_rows(h: Harness) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = (
        h.store.inner._conn().execute("SELECT token_id, revoked_at FROM tokens ORDER BY created_at").fetchall()
    )
    return rows


def test_a_policy_that_cannot_be_recorded_is_not_installed(provisioned: Harness) -> None:
    path = f"/v1/wallets/{provisioned.wallet_id}/policy"
    with unwritable(provisioned, "audit_log"):
        assert_503(provisioned.owner_call("PUT", path, {"envelope": provisioned.policy(2)}))
    assert provisioned.store.get_wallet(provisioned.wallet_id).policy_sequence == 1
    # the retry is not a stale sequence
    installed = provisioned.owner_call("PUT", path, {"envelope": provisioned.policy(2)})
    assert installed.status_code == 200, installed.text
    assert provisioned.store.get_wallet(provisioned.wallet_id).policy_sequence == 2
    # and the enclave's receipt
    assert provisioned.audit_events()[-2:] == ["policy.installed", "policy.enclave_installed"]


def test_a_token_that_cannot_be_recorded_is_not_issued(provisioned: Harness) -> None:
    before = token_rows(provisioned)
    with unwritable(provisioned, "audit_log"):
        assert_503(provisioned.owner_call("POST", f"/v1/wallets/{provisioned.wallet_id}/tokens"))
    assert token_rows(provisioned) == before  # no token whose secret nobody got
    issued = provisioned.owner_call("POST", f"/v1/wallets/{provisioned.wallet_id}/tokens")
    assert issued.status_code == 201 and provisioned.audit_events()[-1] == "token.issued"
    assert provisioned.store.authenticate_token(issued.json()["token"]) == provisioned.wallet_id


def test_a_revocation_that_cannot_be_recorded_does_not_revoke(provisioned: Harness) -> None:
    path = f"/v1/wallets/{provisioned.wallet_id}/tokens/{provisioned.token_id}"
    with unwritable(provisioned, "audit_log"):
        assert_503(provisioned.owner_call("DELETE", path))
    # still valid: the owner was told it failed
    assert provisioned.store.authenticate_token(provisioned.token) == provisioned.wallet_id
    assert provisioned.owner_call("DELETE", path).status_code == 204
    assert provisioned.audit_events()[-1] == "token.revoked"
    with pytest.raises(NotFound, match="unknown or revoked token"):
        provisioned.store.authenticate_token(provisioned.token)


def test_revoking_a_revoked_token_answers_204_and_writes_nothing(provisioned: Harness) -> None:
    """Revocation is idempotent in what it writes too. Before: each repeat wrote another ``token.revoked``."""
    path = f"/v1/wallets/{provisioned.wallet_id}/tokens/{provisioned.token_id}"
    assert provisioned.owner_call("DELETE", path).status_code == 204
    first = token_rows(provisioned)
    head = provisioned.store.audit_head()
    provisioned.clock.offset += 60.0
    for _ in range(2):
        again = provisioned.owner_call("DELETE", path)
        assert again.status_code == 204 and again.content == b"", again.text
    assert provisioned.store.audit_head() == head and provisioned.audit_events().count("token.revoked") == 1
    assert token_rows(provisioned) == first  # the first revocation time stands
    with pytest.raises(NotFound, match="unknown or revoked token"):
        provisioned.store.authenticate_token(provisioned.token)


def test_another_wallets_token_is_not_revoked(provisioned: Harness) -> None:
    other = Ed25519PrivateKey.generate()
    provisioned.services.owner_keys = provisioned.services.owner_keys | {owner_public_key(other)}
    created = provisioned.owner_call("POST", "/v1/wallets", {"wallet_id": "w-other", "owner_public_key":
                                                    str(owner_public_key(other))}, key=other)  # fmt: skip
    assert created.status_code == 201, created.text
    refused = provisioned.owner_call("DELETE", f"/v1/wallets/w-other/tokens/{provisioned.token_id}", key=other)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    assert (
        provisioned.store.authenticate_token(provisioned.token) == provisioned.wallet_id
        and "token.revoked" not in provisioned.audit_events()
    )


def test_a_webhook_that_cannot_be_recorded_is_not_configured(provisioned: Harness) -> None:
    path = f"/v1/wallets/{provisioned.wallet_id}/webhook"
    body = {"url": "https://elsewhere.example/hook", "secret": base64.b64encode(b"s" * 32).decode()}
    with unwritable(provisioned, "audit_log"):
        assert_503(provisioned.owner_call("PUT", path, body))
    assert provisioned.store.get_webhook(provisioned.wallet_id) is None
    assert provisioned.owner_call("PUT", path, body).status_code == 204
    configured = provisioned.store.get_webhook(provisioned.wallet_id)
    assert (
        configured is not None
        and configured.url == body["url"]
        and provisioned.audit_events()[-1] == "webhook.configured"
    )


def test_a_wallet_that_cannot_be_recorded_is_not_created(provisioned: Harness) -> None:
    body = {"wallet_id": "w-new", "owner_public_key": str(provisioned.owner_pub)}
    before = provisioned.audit_events()
    # the signer's check passes first (it reads the audit log)
    assert provisioned.client.get("/readyz").status_code == 200
    with unwritable(provisioned, "audit_log"):
        assert_503(provisioned.owner_call("POST", "/v1/wallets", body))
    with pytest.raises(NotFound, match="wallet w-new not found"):
        provisioned.store.get_wallet("w-new")
    assert provisioned.audit_events() == before
    # The enclave dropped the key it made (it kept it until a restart before: an orphan refusing its id), so the
    # same creation works now, with a new agent key.
    again = provisioned.owner_call("POST", "/v1/wallets", body)
    assert again.status_code == 201, again.text
    assert provisioned.store.get_wallet("w-new").agent_pubkey == bytes(
        Pubkey.from_string(again.json()["agent_public_key"])
    )
    assert provisioned.audit_events()[-1] == "wallet.created"


def test_an_orphan_the_enclave_cannot_drop_keeps_its_id_refused(
    provisioned: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def unreachable(wallet_id: str, *, agent_public_key: bytes) -> None:
        raise EnclaveTimeoutError("no answer")

    monkeypatch.setattr(provisioned.services.relay._client, "discard_wallet", unreachable)
    body = {"wallet_id": "w-new", "owner_public_key": str(provisioned.owner_pub)}
    # the signer's check passes first (it reads the audit log)
    assert provisioned.client.get("/readyz").status_code == 200
    with unwritable(provisioned, "audit_log"):
        # the store's failure is the answer, not the drop's
        assert_503(provisioned.owner_call("POST", "/v1/wallets", body))
    assert "the enclave kept orphan wallet w-new: EnclaveTimeoutError" in caplog.text
    again = provisioned.owner_call("POST", "/v1/wallets", body)
    assert again.status_code == 409, again.text  # refused by the enclave until it restarts, as before
