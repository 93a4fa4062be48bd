"""Policy expiry through the API: an expired policy cannot be installed (409 ``stale_policy``), the wallet view
shows the expiry, and from ``expires_at`` on every request is denied by the proxy and, were it relayed, by the
enclave (`tests/enclave/test_policy_expiry.py`)."""

from __future__ import annotations

import time

from tests.proxy.api_harness import Harness, provision
from tests.support.policies import MERCHANT


def view(h: Harness) -> dict[str, object]:
    response = h.client.get(f"/v1/wallets/{h.wallet_id}", headers={"Authorization": f"Bearer {h.token}"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_an_expired_policy_is_refused_and_changes_nothing(h: Harness) -> None:
    provision(h)
    path = f"/v1/wallets/{h.wallet_id}/policy"
    refused = h.owner_call("PUT", path, {"envelope": h.policy(2, expires_at=int(time.time()) - 1)})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "stale_policy" and "expired" in refused.json()["error"]["message"]
    assert view(h)["policy_sequence"] == 1 and view(h)["policy_expires_at"] is None
    assert "policy.installed" in h.audit_events() and h.audit_events().count("policy.installed") == 1


def test_requests_are_denied_from_the_expiry_on(h: Harness) -> None:
    expires_at = int(time.time()) + 600
    provision(h, h.policy(1, expires_at=expires_at))
    assert view(h)["policy_expires_at"] == expires_at
    tx = h.transfer(1000, MERCHANT)
    assert h.sign(tx).status_code == 200
    h.clock.offset = expires_at - time.time()  # the proxy's clock reaches the expiry second
    denied = h.sign(h.transfer(1000, MERCHANT))
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "policy_denied"
    assert [r["rule"] for r in denied.json()["error"]["reasons"]] == ["policy_expired"]
    # the owner installs a fresh one: served again
    h.clock.offset = 0.0
    renewed = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": h.policy(2)})
    assert renewed.status_code == 200, renewed.text
    assert h.sign(h.transfer(1000, MERCHANT)).status_code == 200
