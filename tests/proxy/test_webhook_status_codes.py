"""A delivery is a 2xx answer and nothing else: 200 and 299 are delivered, 300 (never followed: the client follows
no redirect) is a failed attempt retried later. The twenty-fourth session's mutation testing of `webhooks` found no
test at the edges (a worker that took 300 for a delivery passed every webhook test)."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from parent_proxy.store.model import OutboxStatus
from parent_proxy.store.sqlite import SqliteStore
from tests.proxy.webhook_receiver import deliver_once, local_client, serving


class _Answers(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        del format, args


class _FixedStatus(ThreadingHTTPServer):
    """Answers every POST with ``status``, an empty body."""

    def __init__(self, status: int) -> None:
        super().__init__(("127.0.0.1", 0), _Answers)
        self.status = status

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


@pytest.mark.parametrize(
    ("status", "outcome", "error"),
    [
        (200, OutboxStatus.DELIVERED, None),
        (299, OutboxStatus.DELIVERED, None),
        (300, OutboxStatus.PENDING, "HTTP 300"),
        (500, OutboxStatus.PENDING, "HTTP 500"),
    ],
)
def test_only_a_2xx_answer_is_a_delivery(
    sqlite_store: SqliteStore, status: int, outcome: OutboxStatus, error: str | None
) -> None:
    with serving(_FixedStatus(status)) as receiver, local_client() as client:
        assert deliver_once(sqlite_store, receiver.url, client) == (outcome, [error])
