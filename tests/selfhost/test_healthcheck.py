"""selfhost.healthcheck against a real local HTTP server: 200 is healthy, anything else (or nothing) is not."""

from __future__ import annotations

import http.server
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from selfhost.healthcheck import check_url, main, probe_signer
from tests.support.http_server import serving


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = {"/ok": 200, "/down": 503, "/moved": 302}.get(self.path, 404)
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/ok")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    with serving(_Handler) as url:
        yield url


def test_200_is_healthy(server: str) -> None:
    assert main([f"{server}/ok"]) == 0


@pytest.mark.parametrize("path", ["/down", "/missing", "/moved"])
def test_other_statuses_are_unhealthy(server: str, path: str, capsys: pytest.CaptureFixture[str]) -> None:
    # A redirect is not followed: a probe that ends up somewhere else is not a healthy answer.
    assert main([f"{server}{path}"]) == 1
    assert "unhealthy: HTTP" in capsys.readouterr().err


def test_no_listener_is_unhealthy(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main([f"http://127.0.0.1:{port}/ok"]) == 1
    assert "unhealthy: " in capsys.readouterr().err


@pytest.mark.parametrize(
    "url",
    ["https://127.0.0.1:8080/ok", "http://example.com:8080/ok", "http://127.0.0.1/ok", "file:///etc/passwd"],
)
def test_only_loopback_http_with_a_port(url: str) -> None:
    with pytest.raises(ValueError, match="healthcheck URL must be"):
        check_url(url)
    assert main([url]) == 2


def test_usage() -> None:
    assert main([]) == 2


def test_signer_probe_without_a_listener_is_unhealthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([f"unix:{tmp_path}/signer.sock"]) == 1
    assert "unhealthy: TransportError" in capsys.readouterr().err


def test_signer_probe_on_a_stale_socket_file_is_unhealthy(tmp_path: Path) -> None:
    # The socket file outlives the signer on the shared volume: its presence must not count as health.
    path = tmp_path / "signer.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
    assert path.exists()
    assert main([f"unix:{path}"]) == 1


@pytest.mark.parametrize("address", ["unix:relative.sock", "tcp:127.0.0.1:5005"])
def test_signer_probe_needs_an_absolute_unix_path(address: str) -> None:
    with pytest.raises(ValueError, match="unix:/<absolute path>"):
        probe_signer(address)
