"""Review of session 4's changes (approval reopen, idempotency expiry, policy expiry, owner 401s, outbox due key):
each test failed on the code as reviewed."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxy.api_harness import Harness, provision, running_harness
from tests.proxy.test_api_misc import offchain_message


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from running_harness(tmp_path)


def sign_message(h: Harness) -> object:
    return h.client.post(
        f"/v1/wallets/{h.wallet_id}/messages/sign",
        json={"message": base64.b64encode(offchain_message(h.agent, "hello")).decode()},
        headers={"Authorization": f"Bearer {h.token}"},
    )


def test_an_expired_policy_signs_no_off_chain_message(h: Harness) -> None:
    """An expired policy "denies everything" (docs/policies.md, Expiry): off-chain messages too, not only
    transactions. Before: check 1 looked only at ``offchain_messages.allowed`` and the message was signed (200)."""
    expires_at = int(time.time()) + 600
    provision(h, h.policy(1, expires_at=expires_at))
    assert sign_message(h).status_code == 200  # allowed by the example policy while it is in force
    h.clock.offset = expires_at - time.time()  # the proxy's clock reaches the expiry second
    refused = sign_message(h)
    assert refused.status_code == 403, refused.text  # type: ignore[attr-defined]
    error = refused.json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == "policy_denied" and [r["rule"] for r in error["reasons"]] == ["policy_expired"]
    assert h.audit_events().count("message.signed") == 1
