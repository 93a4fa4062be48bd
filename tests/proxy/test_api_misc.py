"""Authentication, validation, limits, owner request signatures, public endpoints and the checked-in OpenAPI."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from tests.proxy.api_harness import Harness, provision, running_harness
from tests.support.policies import MERCHANT

OPENAPI_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    # Three requests per token, refilled at one per 1000 s: the fourth is 429 however slowly the machine runs.
    for harness in running_harness(tmp_path, rate=0.001, burst=3):
        provision(harness)
        yield harness


def code(response: object) -> str:
    return str(response.json()["error"]["code"])  # type: ignore[attr-defined]


# -- agent authentication ---------------------------------------------------------------------------------------


def test_missing_malformed_and_unknown_tokens_are_401(h: Harness) -> None:
    path = f"/v1/wallets/{h.wallet_id}"
    assert h.client.get(path).status_code == 401
    assert code(h.client.get(path, headers={"Authorization": "Basic abc"})) == "unauthorized"
    forged = h.token[:-4] + ("AAAA" if not h.token.endswith("AAAA") else "BBBB")
    assert code(h.client.get(path, headers={"Authorization": f"Bearer {forged}"})) == "unauthorized"


def test_token_of_another_wallet_is_404(h: Harness) -> None:
    response = h.client.get("/v1/wallets/other", headers={"Authorization": f"Bearer {h.token}"})
    assert response.status_code == 404 and code(response) == "not_found"


def test_revoked_token_is_401(h: Harness) -> None:
    revoked = h.owner_call("DELETE", f"/v1/wallets/{h.wallet_id}/tokens/{h.token_id}")
    assert revoked.status_code == 204
    response = h.sign(h.transfer(1000, MERCHANT))
    assert response.status_code == 401 and code(response) == "unauthorized"


def test_revoking_a_token_of_another_wallet_is_404_and_changes_nothing(h: Harness) -> None:
    created = h.owner_call("POST", "/v1/wallets", {"wallet_id": "w2", "owner_public_key": str(h.owner_pub)})
    assert created.status_code == 201, created.text
    other = h.owner_call("POST", "/v1/wallets/w2/tokens").json()
    refused = h.owner_call("DELETE", f"/v1/wallets/{h.wallet_id}/tokens/{other['token_id']}")
    assert refused.status_code == 404 and code(refused) == "not_found"
    still = h.client.get("/v1/wallets/w2", headers={"Authorization": f"Bearer {other['token']}"})
    assert still.status_code == 200, still.text
    assert h.owner_call("DELETE", f"/v1/wallets/w2/tokens/{other['token_id']}").status_code == 204
    gone = h.client.get("/v1/wallets/w2", headers={"Authorization": f"Bearer {other['token']}"})
    assert gone.status_code == 401


def test_rate_limit_per_token_is_429(h: Harness) -> None:
    statuses = [h.client.get(f"/v1/wallets/{h.wallet_id}", headers={"Authorization": f"Bearer {h.token}"}).status_code
                for _ in range(6)]  # fmt: skip
    assert statuses[:3] == [200, 200, 200] and 429 in statuses


def test_tokens_never_reach_the_logs(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    issued = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/tokens")
    token = issued.json()["token"]
    assert issued.headers["Cache-Control"] == "no-store"
    h.sign(h.transfer(1000, MERCHANT), token=token)
    h.client.get(f"/v1/wallets/{h.wallet_id}", headers={"Authorization": f"Bearer {token}x"})
    secret = token.split("_", 2)[2]  # the secret may itself contain "_"
    assert secret not in caplog.text and h.token.split("_", 2)[2] not in caplog.text
    assert not any(secret in json.dumps(r.payload.decode()) for r in h.store.audit_records(0, 1000))


# -- request validation and size ----------------------------------------------------------------------------------


def test_body_over_limit_is_413(h: Harness) -> None:
    response = h.client.post(
        f"/v1/wallets/{h.wallet_id}/transactions/sign",
        content=b"{" + b" " * 20_000 + b"}",
        headers={"Authorization": f"Bearer {h.token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413 and code(response) == "payload_too_large"


def test_not_json_is_400_and_bad_fields_are_422(h: Harness) -> None:
    auth = {"Authorization": f"Bearer {h.token}", "Content-Type": "application/json"}
    path = f"/v1/wallets/{h.wallet_id}/transactions/sign"
    assert code(h.client.post(path, content=b"{not json", headers=auth)) == "bad_request"
    extra = h.client.post(path, json={"transaction": "AAAA", "idempotency_key": "k", "admin": True}, headers=auth)
    assert extra.status_code == 422 and code(extra) == "invalid_request"
    typed = h.client.post(path, json={"transaction": "AAAA", "idempotency_key": "k", "submit": "yes"}, headers=auth)
    assert typed.status_code == 422
    # Authentication (and the per-token rate limit, 3 here) comes before validation: malformed bodies count too.
    limited = h.client.post(path, content=b"{not json", headers=auth)
    assert limited.status_code == 429 and code(limited) == "rate_limited"


def test_bad_base64_is_422(h: Harness) -> None:
    auth = {"Authorization": f"Bearer {h.token}", "Content-Type": "application/json"}
    path = f"/v1/wallets/{h.wallet_id}/transactions/sign"
    padding = h.client.post(path, json={"transaction": "AAAAA", "idempotency_key": "k"}, headers=auth)
    assert padding.status_code == 422 and "base64" in padding.json()["error"]["message"]


def test_undecodable_transaction_is_denied(h: Harness) -> None:
    response = h.sign(b"\x01" + bytes(100))
    assert response.status_code == 403 and code(response) == "policy_denied"
    assert response.json()["error"]["reasons"][0]["rule"] == "decode"


def test_unknown_lookup_table_is_503_chain_unavailable(h: Harness) -> None:
    """A table the policy pins is read from the chain; none there is 503. (One it does not pin is denied without a
    read: tests/proxy/test_api_lookup_tables_unread.py.)"""
    missing = Pubkey.new_unique()
    pins = [{"address": str(missing), "addresses": [str(MERCHANT)]}]
    installed = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": h.policy(2, lookup_tables=pins)})
    assert installed.status_code == 200, installed.text
    response = h.sign(h.transfer(1000, MERCHANT), lookup_tables=[str(missing)])
    assert response.status_code == 503 and code(response) == "chain_unavailable"


# -- owner request signatures -------------------------------------------------------------------------------------


def test_owner_request_by_another_key_is_401(h: Harness) -> None:
    response = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/tokens", key=Ed25519PrivateKey.generate())
    assert response.status_code == 401 and code(response) == "owner_signature_invalid"


def test_owner_request_replay_and_stale_timestamp_are_refused(h: Harness) -> None:
    path = f"/v1/wallets/{h.wallet_id}/tokens"
    first = h.owner_call("POST", path, nonce="n" * 20)
    assert first.status_code == 201
    replay = h.owner_call("POST", path, nonce="n" * 20)
    assert replay.status_code == 401 and code(replay) == "owner_request_replayed"
    stale = h.owner_call("POST", path, timestamp=int(time.time()) - 3600)
    assert stale.status_code == 401 and code(stale) == "owner_request_replayed"


def test_owner_signature_covers_the_body(h: Harness) -> None:
    from parent_proxy.owner_auth import OwnerRequest, owner_request_headers

    path = f"/v1/wallets/{h.wallet_id}/policy"
    signed_body = json.dumps({"envelope": h.policy(sequence=2)}).encode()
    other_body = json.dumps({"envelope": h.policy(sequence=3)}).encode()
    request = OwnerRequest("PUT", path, signed_body, int(time.time()), "x" * 24, audience=h.origin)
    headers = owner_request_headers(request, h.owner_pub, h.owner.sign)
    response = h.client.put(path, content=other_body, headers={**headers, "Content-Type": "application/json"})
    assert response.status_code == 401 and code(response) == "owner_signature_invalid"


def test_wallet_creation_needs_a_configured_owner_key(h: Harness) -> None:
    stranger = Ed25519PrivateKey.generate()
    from tests.support.policies import owner_public_key

    body = {"wallet_id": "w9", "owner_public_key": str(owner_public_key(stranger))}
    response = h.owner_call("POST", "/v1/wallets", body, key=stranger)
    assert response.status_code == 401 and code(response) == "owner_signature_invalid"


def test_stale_policy_sequence_is_409(h: Harness) -> None:
    response = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": h.policy(sequence=1)})
    assert response.status_code == 409 and code(response) == "stale_policy"
    newer = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": h.policy(sequence=2)})
    assert newer.status_code == 200 and newer.json()["enclave_installed"] is True


def test_policy_signed_by_another_key_is_refused(h: Harness) -> None:
    """docs/api.md: an owner document whose signature does not verify is 401 (it was 422, as a malformed one)."""
    from policies.signing import POLICY_PURPOSE, sign_document
    from tests.support.policies import example_policy

    doc = example_policy()
    doc["wallet_id"], doc["sequence"] = h.wallet_id, 5
    envelope = sign_document(POLICY_PURPOSE, doc, Ed25519PrivateKey.generate())
    response = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": envelope})
    assert response.status_code == 401 and code(response) == "owner_signature_invalid"
    assert h.store.get_wallet(h.wallet_id).policy_sequence == 1


# -- public endpoints ---------------------------------------------------------------------------------------------


def test_health_ready_metrics_attestation(h: Harness) -> None:
    assert h.client.get("/healthz").json() == {"status": "ok"}
    ready = h.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["store"] == "ok"
    nonce = "ab" * 32
    attestation = h.client.get(f"/v1/attestation?nonce={nonce}")
    assert attestation.status_code == 200, attestation.text
    assert base64.b64decode(attestation.json()["document"])
    assert (attestation.json()["mode"], attestation.json()["reason"]) == ("nitro", None)
    assert code(h.client.get("/v1/attestation?nonce=zz")) == "invalid_request"
    metrics = h.client.get("/metrics").text
    assert "waiaas_http_requests_total" in metrics and "waiaas_http_request_duration_seconds_bucket" in metrics


def test_unknown_route_has_the_uniform_body(h: Harness) -> None:
    response = h.client.get("/nope")
    assert response.status_code == 404 and code(response) == "not_found"


def test_openapi_document_is_in_sync() -> None:
    from parent_proxy.openapi import render

    if not OPENAPI_PATH.exists() or OPENAPI_PATH.read_text() != render():
        pytest.fail(f"{OPENAPI_PATH} is out of date: run python -m parent_proxy.openapi > docs/openapi.json")


def test_attestation_mode_none_says_so(tmp_path: Path) -> None:
    for harness in running_harness(tmp_path, attestation="none"):
        answer = harness.client.get(f"/v1/attestation?nonce={'cd' * 32}")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["mode"] == "none" and body["document"] is None
        assert "no Nitro Enclave" in body["reason"]
        assert len(bytes(Pubkey.from_string(body["session_public_key"]))) == 32


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("https://hooks.example.com/waiaas", 204),
        ("http://127.0.0.1:9000/hook", 204),
        ("https://hooks.example.com/a b", 422),
        ("https://hooks.example.com/\x06", 422),  # a control character (the fuzzer's case)
        ("ftp://hooks.example.com/", 422),
    ],
)
def test_owner_sets_a_webhook_with_a_printable_url(h: Harness, url: str, status: int) -> None:
    secret = base64.b64encode(b"s" * 32).decode()
    response = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/webhook", {"url": url, "secret": secret})
    assert response.status_code == status, response.text
    assert secret not in response.text


def test_the_audit_record_of_a_webhook_names_its_host_only(h: Harness) -> None:
    """Receivers such as Slack put their token in the path or query; the audit log (exported, verified by others)
    records where notifications go, not the credential. Before, it held the URL as given."""
    url = "https://hooks.example.com:8443/services/T000/B000/PATH-TOKEN?token=QUERY-TOKEN"
    secret = base64.b64encode(b"s" * 32).decode()
    response = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/webhook", {"url": url, "secret": secret})
    assert response.status_code == 204, response.text
    (record,) = [r for r in h.store.audit_records(0, 10_000) if r.event_type == "webhook.configured"]
    assert json.loads(record.payload)["url"] == "https://hooks.example.com:8443"
    assert b"TOKEN" not in record.payload


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", "0x10", "", "12, 12", "+2"],
                         ids=["word", "negative", "exponent", "hex", "empty", "list", "plus"])  # fmt: skip
def test_a_malformed_content_length_is_400_and_changes_nothing(h: Harness, length: str) -> None:
    """Before: any Content-Length that was not ASCII digits was answered 413 ``payload_too_large``."""
    before = h.audit_events()
    response = h.client.post(
        f"/v1/wallets/{h.wallet_id}/transactions/sign",
        content=b"{}",
        headers={"Authorization": f"Bearer {h.token}", "Content-Type": "application/json", "Content-Length": length},
    )
    assert response.status_code == 400 and code(response) == "bad_request", response.text
    assert "Content-Length" in response.json()["error"]["message"]
    assert h.audit_events() == before


def test_content_length_padded_as_httptools_leaves_it_is_read(h: Harness) -> None:
    """uvicorn's httptools parser keeps trailing whitespace in a header value: the length is still a number."""
    content = json.dumps({"transaction": "AAAA", "idempotency_key": "k", "admin": True}).encode()
    response = h.client.post(
        f"/v1/wallets/{h.wallet_id}/transactions/sign",
        content=content,
        headers={"Authorization": f"Bearer {h.token}", "Content-Type": "application/json",
                 "Content-Length": f"{len(content)} \t"},
    )  # fmt: skip
    assert response.status_code == 422 and code(response) == "invalid_request", response.text  # read, then validated
    too_large = h.client.post(
        f"/v1/wallets/{h.wallet_id}/transactions/sign",
        content=content,
        headers={"Authorization": f"Bearer {h.token}", "Content-Type": "application/json", "Content-Length": "20000 "},
    )
    assert too_large.status_code == 413 and code(too_large) == "payload_too_large"
    for declared in ("0" * 30 + str(len(content)), "9" * 5000):  # leading zeros; beyond what int() will parse
        answer = h.client.post(
            f"/v1/wallets/{h.wallet_id}/transactions/sign",
            content=content,
            headers={"Authorization": f"Bearer {h.token}", "Content-Type": "application/json",
                     "Content-Length": declared},
        )  # fmt: skip
        assert answer.status_code == (422 if declared.startswith("0") else 413), answer.text
