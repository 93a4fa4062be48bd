"""Edges of the HTTP layer (docs/api.md, Errors), through the real proxy, store and enclave.

- An owner envelope whose document holds a lone surrogate escape (``"\\ud800"``, which JSON parsing lets through
  and no UTF-8 encoding holds) is 422 ``invalid_request`` on every route that takes one, as any malformed owner
  document, with nothing stored or sent to the enclave. Before: 500 ``internal_error`` (the envelope's re-encoding
  raised UnicodeEncodeError before the document's checks saw it).
- A body over ``WAIAAS_MAX_BODY_BYTES`` sent without ``Content-Length`` (chunked) is 413 ``payload_too_large`` on
  every route that reads one. Before: 400 ``bad_request`` on the agent routes (FastAPI's body parsing turned the
  size limit's exception into "There was an error parsing the body").
- A trailing slash is 404 ``not_found``, not a 307 to a URL built from the caller's ``Host`` header; a method the
  path lacks is 405 ``method_not_allowed`` with ``Allow`` (before: code ``bad_request``, no ``Allow``).
- Wallet ids ``.`` and ``..`` (the URL dot segments clients remove) are refused at creation: 422, nothing made.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from parent_proxy.owner_auth import OwnerRequest, owner_request_headers
from parent_proxy.store.sqlite import SqliteStore
from policies.canonical import LONE_SURROGATE
from selfhost.local_stack import free_port
from tests.proxy.api_harness import Harness, pending_approval_ids, provision, spy_calls
from tests.proxy.conftest import make_wallet
from tests.proxy.harness_calls import escalate, queued, records
from tests.proxy.minimal_settings import OWNER
from tests.proxy.rotation_requests import agent_key_path, multisig_wallet

SIGNATURE = "1" * 64  # never checked: the envelope is refused before its signature is
LIMIT = 16 * 1024  # the harness's WAIAAS_MAX_BODY_BYTES (the default)
REPO = Path(__file__).resolve().parents[2]


def _state(h: Harness) -> tuple[Any, ...]:
    """What a refused owner document must leave as it was: the wallet, its candidate agent key, its pending
    approvals, the audit log and the webhook events queued."""
    wallet = h.store.get_wallet(h.wallet_id)
    return (wallet, h.store.get_agent_key_candidate(h.wallet_id), pending_approval_ids(h), len(records(h)),
            queued(h))  # fmt: skip


def _refused_unchanged(h: Harness, method: str, path: str, body: dict[str, Any], what: str) -> None:
    before = _state(h)
    sent = spy_calls(h.services.relay._client, "_call")  # every request to the enclave goes through it
    answer = h.owner_call(method, path, body)  # json.dumps writes a lone surrogate as its \ud800 escape
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == {
        "code": "invalid_request",
        "message": f"{what} refused: envelope: {LONE_SURROGATE}",
    }
    assert sent == [] and _state(h) == before


def _envelopes() -> list[dict[str, Any]]:
    """Lone surrogates in a value, deep in a list, and in a key."""
    return [{"document": document, "signature": SIGNATURE}
            for document in ({"purpose": "\ud800"}, {"rules": {"a": ["x", "\udfff"]}}, {"\udc80": 1})]  # fmt: skip


@pytest.mark.parametrize(("method", "tail", "what"), [("PUT", "policy", "policy"), ("POST", "freeze", "freeze order"),
                                                      ("POST", "unfreeze", "freeze order"),
                                                      ("POST", "approve", "approval")])  # fmt: skip
def test_a_lone_surrogate_in_an_owner_document_is_422_and_changes_nothing(
    h: Harness, method: str, tail: str, what: str
) -> None:
    provision(h)
    path = f"/v1/wallets/{h.wallet_id}/{tail}"
    if tail == "approve":
        path = escalate(h)[2]  # a pending approval the refused one must leave pending
    for envelope in _envelopes():
        _refused_unchanged(h, method, path, {"envelope": envelope}, what)


def test_a_lone_surrogate_in_an_agent_key_order_is_422_and_changes_nothing(h: Harness) -> None:
    multisig_wallet(h)  # the agent-key routes need a declared multisig before they read the order
    assert h.owner_call("POST", agent_key_path(h, "/candidate")).status_code == 201
    for envelope in _envelopes():
        body = {"transaction": "AAAA", "envelope": envelope}
        _refused_unchanged(h, "POST", agent_key_path(h, "/rotation"), body, "rotation order")
        _refused_unchanged(h, "POST", agent_key_path(h, "/switch"), {"envelope": envelope}, "switch order")


# -- bodies over the limit without Content-Length ------------------------------------------------------------------


def _chunks() -> Iterator[bytes]:
    for _ in range(LIMIT // 1024 + 8):
        yield b"x" * 1024


def _paths(h: Harness) -> list[tuple[str, str]]:
    """Every operation of the API but GETs (those read no body), its path filled in."""
    ids = {"{wallet_id}": h.wallet_id, "{approval_id}": "a1", "{token_id}": "t1"}
    found = []
    app = h.client.app
    assert isinstance(app, FastAPI)
    for template, operations in app.openapi()["paths"].items():
        path = template
        for placeholder, value in ids.items():
            path = path.replace(placeholder, value)
        found += [(method.upper(), path) for method in operations if method != "get"]
    return found


def test_a_chunked_body_over_the_limit_is_413_on_every_route(h: Harness) -> None:
    provision(h)
    paths = _paths(h)
    assert ("POST", f"/v1/wallets/{h.wallet_id}/transactions/sign") in paths and len(paths) > 10
    agent = {"Authorization": f"Bearer {h.token}"}
    for method, path in paths:
        if path.endswith(("/transactions/sign", "/messages/sign")):
            headers = agent
        else:  # the owner headers are read first: a request without them is 401 whatever its body
            headers = owner_request_headers(OwnerRequest(method, path, b"", int(time.time()), secrets.token_hex(16),
                                                         audience=h.origin), h.owner_pub, h.owner.sign)  # fmt: skip
        answer = h.client.request(
            method, path, content=_chunks(), headers={**headers, "Content-Type": "application/json"}
        )
        assert "content-length" not in answer.request.headers
        assert answer.status_code == 413, (method, path, answer.text)
        assert answer.json() == {"error": {"code": "payload_too_large", "message": f"request body over {LIMIT} bytes"}}
    counted = h.services.metrics.render()
    assert 'route="/v1/wallets/{wallet_id}/transactions/sign",status="413"' in counted


# -- paths and methods -----------------------------------------------------------------------------------------------


def test_a_trailing_slash_is_404_not_a_redirect(h: Harness) -> None:
    provision(h)
    agent = {"Authorization": f"Bearer {h.token}", "Host": "evil.example"}
    for answer in (
        h.client.get(f"/v1/wallets/{h.wallet_id}/", headers=agent, follow_redirects=False),
        h.client.get("/healthz/", headers={"Host": "evil.example"}, follow_redirects=False),
        h.owner_call("GET", f"/v1/wallets/{h.wallet_id}/approvals/"),
    ):
        assert answer.status_code == 404, answer.text
        assert "location" not in answer.headers
        assert answer.json() == {"error": {"code": "not_found", "message": "not found"}}


def test_a_method_the_path_lacks_is_405_method_not_allowed_with_allow(h: Harness) -> None:
    provision(h)
    answer = h.client.delete(f"/v1/wallets/{h.wallet_id}", headers={"Authorization": f"Bearer {h.token}"})
    assert answer.status_code == 405, answer.text
    assert answer.json()["error"]["code"] == "method_not_allowed"
    assert answer.headers["allow"] == "GET"
    assert h.client.post("/healthz").json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("wallet_id", [".", ".."])
def test_dot_segment_wallet_ids_are_refused_at_creation(h: Harness, wallet_id: str) -> None:
    before = records(h)
    sent = spy_calls(h.services.relay._client, "_call")
    answer = h.owner_call("POST", "/v1/wallets", {"wallet_id": wallet_id, "owner_public_key": str(h.owner_pub)})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_request" and "body.wallet_id" in answer.json()["error"]["message"]
    assert sent == [] and records(h) == before


def test_other_ids_with_dots_are_still_wallet_ids(h: Harness) -> None:
    for wallet_id in ("a.", "a..b", "a..."):  # not first: the first is a letter or digit (policies.identifiers)
        answer = h.owner_call("POST", "/v1/wallets", {"wallet_id": wallet_id, "owner_public_key": str(h.owner_pub)})
        assert answer.status_code == 201, answer.text


# -- the same under the real server ----------------------------------------------------------------------------------


def _raw(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` as it is to the proxy on ``port``; its answer's status line and body (it closes after)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


def _up(port: int, proxy: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proxy.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the proxy did not start")


def test_under_uvicorn_a_chunked_body_over_the_limit_is_413_and_a_trailing_slash_404(tmp_path: Path) -> None:
    """``python -m parent_proxy`` (uvicorn, its default HTTP parser) and requests written byte for byte: the chunked
    body, and a ``Host`` header a redirect would have been built from."""
    store = SqliteStore(tmp_path / "state.db")
    store.create_wallet(make_wallet("w1"))
    token = store.issue_token("w1", time.time()).token
    store.close()
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "WAIAAS_STATE": f"sqlite:{tmp_path / 'state.db'}",
           "WAIAAS_ENCLAVE": f"unix:{tmp_path / 'no-enclave.sock'}", "WAIAAS_OWNER_KEYS": OWNER,
           "WAIAAS_CHAIN": "litesvm", "WAIAAS_REQUIRE_MULTISIG": "false", "WAIAAS_PORT": str(port),
           "WAIAAS_PUBLIC_ORIGINS": f"http://127.0.0.1:{port}"}  # fmt: skip
    proxy = subprocess.Popen([sys.executable, "-m", "parent_proxy"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _up(port, proxy, 60.0)
        body = b"x" * (LIMIT + 1000)
        head = (b"POST /v1/wallets/w1/transactions/sign HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Authorization: Bearer %s\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                % token.encode())  # fmt: skip
        status, answer = _raw(port, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        assert status.startswith(b"HTTP/1.1 413 "), (status, answer)
        assert json.loads(answer)["error"]["code"] == "payload_too_large"
        status, answer = _raw(port, b"GET /v1/wallets/w1/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 404 "), (status, answer)
        assert json.loads(answer)["error"]["code"] == "not_found"
    finally:
        proxy.terminate()
        proxy.wait(10)
