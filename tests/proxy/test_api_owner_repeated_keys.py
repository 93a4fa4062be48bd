"""An owner request body that repeats a key within one JSON object is 400 ``bad_request``, and nothing changes.

Policy-schema review (twenty-first session): FastAPI's JSON reading kept the last value of a repeated key and
`parent_proxy.owner_route.envelope_bytes` re-serialized what it kept, so a policy envelope whose document repeated
``sequence`` was installed (200) although the strict parser of signed documents refuses repeated keys, as
docs/policies.md says. The signature decided over the kept values; the prose was not true of the API.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest

from parent_proxy.owner_auth import OwnerRequest, owner_request_headers
from parent_proxy.owner_route import REPEATED_KEY
from tests.proxy.api_harness import Harness, pending_approval_ids, provision, spy_calls
from tests.proxy.harness_calls import escalate, freeze_order, queued, records
from tests.support.policies import owner_public_key


def _owner_send(h: Harness, method: str, path: str, text: str) -> Any:
    """An owner request whose body is ``text`` exactly, signed as it is."""
    content = text.encode()
    request = OwnerRequest(method, path, content, int(time.time()), secrets.token_hex(16), audience=h.origin)
    headers = owner_request_headers(request, owner_public_key(h.owner), h.owner.sign)
    headers["Content-Type"] = "application/json"
    return h.client.request(method, path, content=content, headers=headers)


def _state(h: Harness) -> tuple[Any, ...]:
    return h.store.get_wallet(h.wallet_id), pending_approval_ids(h), len(records(h)), queued(h)


def _repeat_in_document(body: dict[str, Any]) -> str:
    """``body`` as JSON text whose envelope's document names another wallet first, then its own: a reader that
    keeps the last value sees the signed document unchanged."""
    text = json.dumps(body)
    assert text.count('"document": {') == 1
    return text.replace('"document": {', '"document": {"wallet_id": "another", ', 1)


def _refused_unchanged(h: Harness, method: str, path: str, text: str) -> None:
    before = _state(h)
    sent = spy_calls(h.services.relay._client, "_call")  # every request to the enclave goes through it
    answer = _owner_send(h, method, path, text)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == {"code": "bad_request", "message": REPEATED_KEY}
    assert sent == [] and _state(h) == before


@pytest.mark.parametrize("tail", ["policy", "freeze", "approve"])
def test_a_signed_document_with_a_repeated_key_is_400_and_changes_nothing(h: Harness, tail: str) -> None:
    provision(h)
    method, path, body = "PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": h.policy(2)}
    if tail == "freeze":
        method, path, body = "POST", f"/v1/wallets/{h.wallet_id}/freeze", freeze_order(h, 1)
    elif tail == "approve":
        _, body, path = escalate(h)  # a pending approval the refused one must leave pending
        method = "POST"
    _refused_unchanged(h, method, path, _repeat_in_document(body))
    assert _owner_send(h, method, path, json.dumps(body)).status_code == 200  # the same, each key once


def test_a_repeated_key_anywhere_in_an_owner_body_is_400(h: Harness) -> None:
    provision(h)
    envelope = json.dumps(h.policy(2))
    decoy = json.dumps(h.policy(3, rate={"max_requests": 1_000_000, "window_seconds": 1}))
    _refused_unchanged(
        h, "PUT", f"/v1/wallets/{h.wallet_id}/policy", f'{{"envelope": {decoy}, "envelope": {envelope}}}'
    )
    key = str(h.owner_pub)
    sent = spy_calls(h.services.relay._client, "_call")
    created = _owner_send(
        h, "POST", "/v1/wallets", f'{{"wallet_id": "w1", "wallet_id": "w2", "owner_public_key": "{key}"}}'
    )
    assert created.status_code == 400 and created.json()["error"]["message"] == REPEATED_KEY
    assert sent == [] and h.owner_call("POST", "/v1/wallets/w2/tokens").status_code == 401  # no such wallet
