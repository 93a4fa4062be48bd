"""The attestation limit and the owner routes that carry an attestation (``?nonce=``): each owner key draws on a
bucket of its own (`parent_proxy.auth.owner_attestation_bucket`), not on the process's one anonymous bucket of
``GET /v1/attestation``. Before: one bucket for all, so anonymous callers asking about ten times a second held the
owner's ``orders/receipts``, creation and candidate requests at 429. The real enclave answers; the limiter is the
production one with a rate so slow that nothing refills during a test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from parent_proxy.auth import attestation_limiter
from parent_proxy.errors import NotFound
from tests.proxy.api_harness import Harness, provision, running_harness, spy_calls
from tests.support.policies import owner_public_key

BURST = 3
SLOW = 0.001
"""Tokens per second: none comes back within a test."""


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    generator = running_harness(tmp_path)
    harness = next(generator)
    provision(harness)
    harness.services.attestation_limiter = attestation_limiter(SLOW, BURST)
    yield harness
    next(generator, None)


def _nonce() -> str:
    return secrets.token_hex(16)


def _anonymous(h: Harness) -> int:
    return int(h.client.get(f"/v1/attestation?nonce={_nonce()}").status_code)


def _receipts(h: Harness, **kwargs: Any) -> Any:
    return h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/orders/receipts?nonce={_nonce()}", **kwargs)


def _create(h: Harness, wallet_id: str, key: Ed25519PrivateKey | None = None) -> Any:
    owner = owner_public_key(key or h.owner)
    body = {"wallet_id": wallet_id, "owner_public_key": str(owner)}
    return h.owner_call("POST", f"/v1/wallets?nonce={_nonce()}", body, key=key)


def test_anonymous_callers_cannot_hold_the_owner_at_429(h: Harness) -> None:
    assert [_anonymous(h) for _ in range(BURST + 2)] == [200] * BURST + [429, 429]  # the anonymous bucket is empty
    answer = _receipts(h)
    assert answer.status_code == 200 and answer.json()["attestation"]["document"], answer.text
    created = _create(h, "w2")
    assert created.status_code == 201 and created.json()["attestation"]["document"], created.text
    assert _anonymous(h) == 429  # and the owner's attestations gave the anonymous bucket nothing either


def test_the_owner_key_has_a_bound_of_its_own(h: Harness) -> None:
    """A stolen owner key still asks the enclave at most at the configured rate: its own burst, then 429 before the
    enclave is asked, and a creation refused so makes no key. Another owner key's bucket is untouched, and so is the
    anonymous one."""
    asked = spy_calls(h.services.relay, "attestation")
    provisioned = spy_calls(h.services.relay, "provision_wallet")
    assert [_receipts(h).status_code for _ in range(BURST)] == [200] * BURST
    refused = _receipts(h)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited", refused.text
    assert _create(h, "w2").status_code == 429 and len(asked) == BURST
    assert provisioned == []  # the refused creation made no key, and stored nothing
    with pytest.raises(NotFound, match="w2"):
        h.services.store.get_wallet("w2")
    other = Ed25519PrivateKey.generate()
    h.services.owner_keys = h.services.owner_keys | {owner_public_key(other)}
    assert _create(h, "w3", other).status_code == 201
    assert _anonymous(h) == 200


def test_a_replayed_owner_request_does_not_spend_the_owner_bucket(h: Harness) -> None:
    """The owner's nonce is claimed before the bucket is drawn on: whoever captured a signed request (a taken-over
    parent) and sends it again gets 401 and takes nothing from the owner, whatever else it sends anonymously."""
    assert [_anonymous(h) for _ in range(BURST + 1)] == [200] * BURST + [429]
    path = f"/v1/wallets/{h.wallet_id}/orders/receipts?nonce={_nonce()}"
    assert h.owner_call("POST", path, nonce="captured-request-01").status_code == 200
    for _ in range(BURST + 2):
        replayed = h.owner_call("POST", path, nonce="captured-request-01")
        assert replayed.status_code == 401 and replayed.json()["error"]["code"] == "owner_request_replayed"
    assert [_receipts(h).status_code for _ in range(BURST - 1)] == [200] * (BURST - 1)
