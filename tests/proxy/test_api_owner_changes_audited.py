"""The owner's changes are written in one store transaction with their audit record: wallet creation, an agent token
issued or revoked, a policy installed, the webhook configured. When the record cannot be written the request
answers 503 and the change is not there; the retry writes both. The failure is a real one of the SQLite store: its
audit table is renamed away.

Before: each route wrote its change, then the record in a second write: with the audit table unwritable the policy
was in force, the token revoked, the webhook moved to another receiver and the wallet created, each answered 503
and none recorded (a retry of the policy then answered 409 ``stale_policy``, of the wallet 409 ``conflict``)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from enclave_app.errors import EnclaveTimeoutError
from parent_proxy.errors import NotFound
from tests.proxy.api_harness import Harness, provision, running_harness, unwritable
from tests.support.policies import owner_public_key


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    for harness in running_harness(tmp_path):
        provision(harness)
        yield harness


def assert_503(response: object) -> None:
    assert response.status_code == 503, response.text  # type: ignore[attr-defined]
    assert response.json()["error"]["code"] == "store_unavailable"  # type: ignore[attr-defined]


def token_rows(h: Harness) -> list[tuple[str, object]]:
    return h.store.inner._conn().execute("SELECT token_id, revoked_at FROM tokens ORDER BY created_at").fetchall()


def test_a_policy_that_cannot_be_recorded_is_not_installed(h: Harness) -> None:
    path = f"/v1/wallets/{h.wallet_id}/policy"
    with unwritable(h, "audit_log"):
        assert_503(h.owner_call("PUT", path, {"envelope": h.policy(2)}))
    assert h.store.get_wallet(h.wallet_id).policy_sequence == 1
    installed = h.owner_call("PUT", path, {"envelope": h.policy(2)})  # the retry is not a stale sequence
    assert installed.status_code == 200, installed.text
    assert h.store.get_wallet(h.wallet_id).policy_sequence == 2
    assert h.audit_events()[-2:] == ["policy.installed", "policy.enclave_installed"]  # and the enclave's receipt


def test_a_token_that_cannot_be_recorded_is_not_issued(h: Harness) -> None:
    before = token_rows(h)
    with unwritable(h, "audit_log"):
        assert_503(h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/tokens"))
    assert token_rows(h) == before  # no token whose secret nobody got
    issued = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/tokens")
    assert issued.status_code == 201 and h.audit_events()[-1] == "token.issued"
    assert h.store.authenticate_token(issued.json()["token"]) == h.wallet_id


def test_a_revocation_that_cannot_be_recorded_does_not_revoke(h: Harness) -> None:
    path = f"/v1/wallets/{h.wallet_id}/tokens/{h.token_id}"
    with unwritable(h, "audit_log"):
        assert_503(h.owner_call("DELETE", path))
    assert h.store.authenticate_token(h.token) == h.wallet_id  # still valid: the owner was told it failed
    assert h.owner_call("DELETE", path).status_code == 204
    assert h.audit_events()[-1] == "token.revoked"
    with pytest.raises(NotFound, match="unknown or revoked token"):
        h.store.authenticate_token(h.token)


def test_revoking_a_revoked_token_answers_204_and_writes_nothing(h: Harness) -> None:
    """Revocation is idempotent in what it writes too. Before: each repeat wrote another ``token.revoked``."""
    path = f"/v1/wallets/{h.wallet_id}/tokens/{h.token_id}"
    assert h.owner_call("DELETE", path).status_code == 204
    first = token_rows(h)
    head = h.store.audit_head()
    h.clock.offset += 60.0
    for _ in range(2):
        again = h.owner_call("DELETE", path)
        assert again.status_code == 204 and again.content == b"", again.text
    assert h.store.audit_head() == head and h.audit_events().count("token.revoked") == 1
    assert token_rows(h) == first  # the first revocation time stands
    with pytest.raises(NotFound, match="unknown or revoked token"):
        h.store.authenticate_token(h.token)


def test_another_wallets_token_is_not_revoked(h: Harness) -> None:
    other = Ed25519PrivateKey.generate()
    h.services.owner_keys = h.services.owner_keys | {owner_public_key(other)}
    created = h.owner_call("POST", "/v1/wallets", {"wallet_id": "w-other", "owner_public_key":
                                                    str(owner_public_key(other))}, key=other)  # fmt: skip
    assert created.status_code == 201, created.text
    refused = h.owner_call("DELETE", f"/v1/wallets/w-other/tokens/{h.token_id}", key=other)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    assert h.store.authenticate_token(h.token) == h.wallet_id and "token.revoked" not in h.audit_events()


def test_a_webhook_that_cannot_be_recorded_is_not_configured(h: Harness) -> None:
    path = f"/v1/wallets/{h.wallet_id}/webhook"
    body = {"url": "https://elsewhere.example/hook", "secret": base64.b64encode(b"s" * 32).decode()}
    with unwritable(h, "audit_log"):
        assert_503(h.owner_call("PUT", path, body))
    assert h.store.get_webhook(h.wallet_id) is None
    assert h.owner_call("PUT", path, body).status_code == 204
    configured = h.store.get_webhook(h.wallet_id)
    assert configured is not None and configured.url == body["url"] and h.audit_events()[-1] == "webhook.configured"


def test_a_wallet_that_cannot_be_recorded_is_not_created(h: Harness) -> None:
    body = {"wallet_id": "w-new", "owner_public_key": str(h.owner_pub)}
    before = h.audit_events()
    assert h.client.get("/readyz").status_code == 200  # the signer's check passes first (it reads the audit log)
    with unwritable(h, "audit_log"):
        assert_503(h.owner_call("POST", "/v1/wallets", body))
    with pytest.raises(NotFound, match="wallet w-new not found"):
        h.store.get_wallet("w-new")
    assert h.audit_events() == before
    # The enclave dropped the key it made (it kept it until a restart before: an orphan refusing its id), so the
    # same creation works now, with a new agent key.
    again = h.owner_call("POST", "/v1/wallets", body)
    assert again.status_code == 201, again.text
    assert h.store.get_wallet("w-new").agent_pubkey == bytes(Pubkey.from_string(again.json()["agent_public_key"]))
    assert h.audit_events()[-1] == "wallet.created"


def test_an_orphan_the_enclave_cannot_drop_keeps_its_id_refused(
    h: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def unreachable(wallet_id: str, *, agent_public_key: bytes) -> None:
        raise EnclaveTimeoutError("no answer")

    monkeypatch.setattr(h.services.relay._client, "discard_wallet", unreachable)
    body = {"wallet_id": "w-new", "owner_public_key": str(h.owner_pub)}
    assert h.client.get("/readyz").status_code == 200  # the signer's check passes first (it reads the audit log)
    with unwritable(h, "audit_log"):
        assert_503(h.owner_call("POST", "/v1/wallets", body))  # the store's failure is the answer, not the drop's
    assert "the enclave kept orphan wallet w-new: EnclaveTimeoutError" in caplog.text
    again = h.owner_call("POST", "/v1/wallets", body)
    assert again.status_code == 409, again.text  # refused by the enclave until it restarts, as before
