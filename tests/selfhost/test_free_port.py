"""`selfhost.local_stack.free_port`: a port chosen for a server that a subprocess binds a moment later lies outside
the kernel's ephemeral range (the kernel never hands such a port to an outgoing connection or a bind to port 0 by
itself, so nothing takes it by chance in between), binds now as the server will bind it, and a taken one is passed
over. Before, the port came from a bind to port 0: from the very range the kernel hands out to everything."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.cli import main
from selfhost import demo, local_stack
from selfhost.local_stack import (
    DEFAULT_EPHEMERAL_RANGE,
    FIRST_UNPRIVILEGED_PORT,
    MAX_PORT,
    StackError,
    ephemeral_port_range,
    free_port,
)

CALLS = 100
ONLY_TWO = (FIRST_UNPRIVILEGED_PORT + 2, MAX_PORT)
"""A pretended ephemeral range that leaves two ports outside it: 1024 and 1025."""


@contextlib.contextmanager
def taken(port: int, host: str) -> Iterator[None]:
    """``port`` has a listener on ``host`` for the block (one of another program's, if it had one already)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
        yield


def can_bind(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_ports_lie_outside_the_kernels_ephemeral_range() -> None:
    low, high = ephemeral_port_range()
    ports = [free_port() for _ in range(CALLS)]
    assert [p for p in ports if low <= p <= high or p < FIRST_UNPRIVILEGED_PORT] == []
    assert len(set(ports)) > CALLS // 2  # chosen at random, not one fixed port
    with socket.socket() as server:  # as uvicorn and http.server bind
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", ports[-1]))
        server.listen()


@pytest.mark.parametrize(
    ("port_range", "lowest", "highest"), [((2000, MAX_PORT), 1024, 1999), ((1024, 60000), 60001, MAX_PORT)]
)
def test_a_given_range_is_kept_out(port_range: tuple[int, int], lowest: int, highest: int) -> None:
    ports = [free_port(port_range) for _ in range(CALLS)]
    assert all(lowest <= p <= highest for p in ports), ports


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])  # noqa: S104 (a listener on every address takes it too)
def test_a_taken_port_is_passed_over(host: str) -> None:
    if not can_bind(FIRST_UNPRIVILEGED_PORT + 1):
        pytest.skip("another program holds port 1025 on this machine")
    with taken(FIRST_UNPRIVILEGED_PORT, host):
        assert {free_port(ONLY_TWO) for _ in range(20)} == {FIRST_UNPRIVILEGED_PORT + 1}


def test_no_free_port_is_a_clear_error() -> None:
    none_free = r"^no free port on 127\.0\.0\.1 outside the ephemeral port range 1026-65535 in 7 tries$"
    with (
        taken(FIRST_UNPRIVILEGED_PORT, "127.0.0.1"),
        taken(FIRST_UNPRIVILEGED_PORT + 1, "127.0.0.1"),
        pytest.raises(StackError, match=none_free),
    ):
        free_port(ONLY_TWO, tries=7)
    for everything in [(FIRST_UNPRIVILEGED_PORT, MAX_PORT), (1, MAX_PORT)]:
        with pytest.raises(
            StackError, match=r"^the ephemeral port range \d+-65535 leaves no unprivileged port outside it$"
        ):
            free_port(everything)


def test_the_range_is_the_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ip_local_port_range"
    monkeypatch.setattr(local_stack, "PORT_RANGE_FILE", path)
    assert ephemeral_port_range() == DEFAULT_EPHEMERAL_RANGE  # no such file: not Linux
    path.write_text("2000\t65535\n")  # as Linux writes it
    assert ephemeral_port_range() == (2000, 65535)
    assert all(FIRST_UNPRIVILEGED_PORT <= free_port() < 2000 for _ in range(20))


@pytest.mark.parametrize(
    "text",
    ["", "32768", "32768 60999 1", "a b", "32768 \uff16\uff10\uff19\uff19\uff19", "60999 32768", "0 100", "1024 65536"],
)
def test_a_range_file_that_is_not_a_range_is_refused(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ip_local_port_range"
    path.write_text(text)
    monkeypatch.setattr(local_stack, "PORT_RANGE_FILE", path)
    with pytest.raises(
        StackError, match=r"ip_local_port_range does not hold a port range \(two numbers, low then high\)$"
    ):
        ephemeral_port_range()


def test_the_demo_without_a_free_port_says_so_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ip_local_port_range"
    path.write_text("1024 65535\n")
    monkeypatch.setattr(local_stack, "PORT_RANGE_FILE", path)
    assert main(["demo", "--run-dir", str(tmp_path / "run")]) == demo.EXIT_NOT_STARTED
    assert capsys.readouterr().err == (
        "demo: the ephemeral port range 1024-65535 leaves no unprivileged port outside it: choose a port with --port\n"
    )
    assert not (tmp_path / "run").exists()
