"""Review of session 4's changes (approval reopen, idempotency expiry, policy expiry, owner 401s, outbox due key):
each test failed on the code as reviewed."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from parent_proxy.api_errors import ApiError
from parent_proxy.errors import StoreUnavailable
from parent_proxy.owner_auth import OwnerRequest, StoreNonceRegistry, owner_request_headers, verify_owner_request
from parent_proxy.settings import SettingsError, load_settings
from parent_proxy.store.protocol import Store
from tests.proxy.api_harness import HARNESS_ORIGIN, Harness, provision
from tests.proxy.minimal_settings import BASE
from tests.support.offchain_messages import offchain_message
from tests.support.policies import owner_public_key


def sign_message(h: Harness) -> Any:  # the test client's response, as `Harness.sign` answers it
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
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "policy_denied" and [r["rule"] for r in error["reasons"]] == ["policy_expired"]
    assert h.audit_events().count("message.signed") == 1


class CompleteFails:
    """A store whose ``complete_idempotent`` is unreachable (the cloud seam), everything else real."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def begin_idempotent(self, *args: object) -> object:
        return self.inner.begin_idempotent(*args)  # type: ignore[arg-type]

    def complete_idempotent(self, *_: object) -> None:
        raise StoreUnavailable("injected: store unreachable")


@pytest.mark.parametrize("skew", [300, 450, 451, 900, 3600])
def test_an_owner_nonce_left_in_progress_is_never_replayable_in_the_accepted_skew(
    wallet_store: Store, skew: int
) -> None:
    """Owner nonces are idempotency records, and an in-progress one frees its key after
    ``IDEMPOTENCY_STALE_SECONDS`` (900 s). A nonce whose claim was taken but not completed (store failure or crash
    between the two writes: the request itself was refused with a 503) must stay used for as long as its timestamp
    is accepted, up to 2 x the skew after the claim. Before: ``WAIAAS_OWNER_MAX_SKEW_SECONDS`` up to 3600 was
    accepted, and the captured request replayed 901 s to 7200 s after its claim was accepted (an issued token,
    say, handed to whoever replayed it)."""
    try:
        load_settings({**BASE, "WAIAAS_OWNER_MAX_SKEW_SECONDS": str(skew)})
    except SettingsError:
        return  # not a skew the proxy can be configured with
    owner = Ed25519PrivateKey.generate()
    timestamp = 1_700_000_000
    request = OwnerRequest("POST", "/v1/wallets/w1/tokens", b"", timestamp, "n" * 32, audience=HARNESS_ORIGIN)
    headers = owner_request_headers(request, owner_public_key(owner), owner.sign)

    def verify(registry: object, now: float) -> None:
        verify_owner_request(
            headers, method="POST", path="/v1/wallets/w1/tokens", body=b"",
            allowed_keys=frozenset({owner_public_key(owner)}), audiences=frozenset({HARNESS_ORIGIN}), now=now,
            max_skew=skew,
            nonces=registry, scope="w1",  # type: ignore[arg-type]
        )  # fmt: skip

    with pytest.raises(StoreUnavailable, match="injected"):  # claimed at the earliest accepted time, not completed
        verify(StoreNonceRegistry(CompleteFails(wallet_store)), timestamp - skew)  # type: ignore[arg-type]
    with pytest.raises(ApiError, match="nonce already used"):  # replayed at the latest accepted time
        verify(StoreNonceRegistry(wallet_store), timestamp + skew)
