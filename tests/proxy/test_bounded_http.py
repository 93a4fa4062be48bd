"""The owner's and the agent's commands read a proxy's answer only within a byte cap and one deadline, uncompressed
(`parent_proxy.bounded_http`).

Before: both read whatever the proxy sent, whole and decompressed, with only httpx's per-read timeout: a taken-over
parent answering ``waiaas agent verify-receipt --url`` (or an owner command) with 32 MiB, a gzip bomb, or a byte a
second held the verifier's memory or time without bound (it still failed closed).
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from parent_proxy import agent_cli, owner_cli
from parent_proxy.bounded_http import ExchangeFailed, bounded_request
from parent_proxy.owner_signers import LocalOwnerSigner
from tests.support.http_server import serving

LIMIT = 64 * 1024


def client(respond: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(respond))


class Chunks:
    """A streamed body of ``count`` chunks of ``size`` bytes that counts how many were taken."""

    def __init__(self, count: int, size: int = 16 * 1024) -> None:
        self.count, self.size, self.taken = count, size, 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.count):
            self.taken += 1
            yield b" " * self.size


def test_an_answer_within_the_bounds_is_returned_whole_and_asked_uncompressed() -> None:
    seen: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"ok": True}, headers={"X-Seen": "1"})

    answer = bounded_request(
        client(respond), "POST", "http://proxy.invalid/x", content=b"body", limit=LIMIT, deadline=5
    )
    assert answer.status_code == 201 and answer.json() == {"ok": True} and answer.headers["X-Seen"] == "1"
    assert seen[0].headers["Accept-Encoding"] == "identity" and seen[0].content == b"body"


def test_a_streamed_answer_past_the_cap_is_refused_and_the_rest_never_read() -> None:
    body = Chunks(count=1000)  # 16 MiB announced by no length
    with pytest.raises(ExchangeFailed, match="larger than 65536 bytes"):
        bounded_request(client(lambda _: httpx.Response(200, content=body)), "GET", "http://p.invalid/", limit=LIMIT,
                        deadline=5)  # fmt: skip
    assert body.taken <= LIMIT // body.size + 1


def test_a_length_announcing_more_than_the_cap_is_refused_before_the_body() -> None:
    body = Chunks(count=10)
    headers = {"Content-Length": str(LIMIT + 1)}
    with pytest.raises(ExchangeFailed, match="larger than"):
        bounded_request(client(lambda _: httpx.Response(200, content=body, headers=headers)), "GET",
                        "http://p.invalid/", limit=LIMIT, deadline=5)  # fmt: skip
    assert body.taken == 0


def test_a_compressed_answer_is_refused_unread() -> None:
    bomb = gzip.compress(b" " * (8 * 1024 * 1024))  # 8 KiB on the wire, 8 MiB inflated
    headers = {"Content-Encoding": "gzip"}
    with pytest.raises(ExchangeFailed, match="compressed"):
        bounded_request(client(lambda _: httpx.Response(200, content=bomb, headers=headers)), "GET",
                        "http://p.invalid/", limit=LIMIT, deadline=5)  # fmt: skip


@pytest.fixture
def dripping() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that announces a small answer and sends it one byte every 50 ms."""

    class Drip(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "200")
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass  # the client gave up: what the test wants

        def log_message(self, *_: object) -> None:
            pass

    with serving(Drip) as url:
        yield url


def test_an_answer_dripped_past_the_deadline_is_cut(dripping: str) -> None:
    started = time.monotonic()
    with httpx.Client(timeout=5.0) as http, pytest.raises(ExchangeFailed, match=r"within 0\.5 s"):
        bounded_request(http, "GET", dripping, limit=LIMIT, deadline=0.5)
    assert time.monotonic() - started < 5.0  # the whole drip takes 10 s; each read alone is well within httpx's 5 s


# -- the two commands -------------------------------------------------------------------------------------------------


@pytest.fixture
def huge() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 whose every answer is 1 MiB of JSON whitespace, sent without a length."""

    class Huge(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # no length: the answer ends when the connection closes

        def _answer(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b" " * (16 * 1024))
                self.wfile.write(b"{}")
            except OSError:
                pass

        do_GET = do_POST = _answer

        def log_message(self, *_: object) -> None:
            pass

    with serving(Huge) as url:
        yield url


def test_verify_receipt_refuses_an_attestation_answer_past_its_cap(huge: str) -> None:
    with pytest.raises(agent_cli.AttestationUnavailable, match=f"larger than {agent_cli.MAX_ANSWER_BYTES} bytes"):
        agent_cli.fetch_attestation(huge, "11111111111111111111111111111111", b"\x01" * 32, tries=1)


def test_an_owner_command_refuses_an_answer_past_its_cap(huge: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(owner_cli, "MAX_OWNER_ANSWER_BYTES", LIMIT)  # 1 MiB would pass the real 4 MiB cap
    signer = LocalOwnerSigner(Ed25519PrivateKey.generate())
    with pytest.raises(owner_cli.ProxyUnreachable) as refused:
        owner_cli._send(signer, huge, "GET", "/v1/wallets/w1/approvals", b"")
    # the origin it was sent to, and no advice to check that a proxy runs there: something answered
    assert str(refused.value) == f"request to {huge.rstrip('/')} refused: the answer is larger than 65536 bytes"
