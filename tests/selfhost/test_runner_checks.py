"""What `waiaas selfhost up` and `waiaas demo` check before they start anything (review s19): the state directory
(never chmodded; a foreign, loose or unusable one refused with exit 2 and a message, no traceback), the published
port (free, and the proxy that passed its healthcheck still running), and what the banner and the env file show
of an ``--rpc-url``."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from selfhost import cli, deployment
from selfhost.deployment import Deployment, StateDirError, prepare_root, run_local
from selfhost.local_stack import ProcessGroup, StackError, free_port
from tests.selfhost.compose_config import REPO


def _waiaas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "policies.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _owner() -> str:
    return str(Pubkey.from_bytes(Ed25519PrivateKey.generate().public_key().public_bytes_raw()))


# ----------------------------------------------------------------------------------------------- state directory


def _shared(tmp_path: Path) -> Path:
    """A stand-in for /tmp: mode 1777, another user's file in it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "another-users-file").write_text("x")
    shared.chmod(0o1777)
    return shared


def _ours_but_open(tmp_path: Path) -> Path:
    """A state directory of ours that someone opened to the group."""
    state = tmp_path / "state"
    (state / "state").mkdir(parents=True)
    (state / deployment.ENV_FILE_NAME).write_text("")
    state.chmod(0o750)
    return state


def _empty_world_readable(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    empty.chmod(0o755)
    return empty


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_shared, "is not empty and is not a waiaas state directory (it holds another-users-file)"),
        (_ours_but_open, "is open to group or others (mode 0750)"),
        (_empty_world_readable, "is open to group or others (mode 0755)"),
    ],
    ids=["shared", "ours but open", "empty but open"],
)
def test_an_existing_directory_that_is_not_ours_to_use_is_refused_and_left_as_it_was(
    tmp_path: Path, make: Any, message: str
) -> None:
    """Before: prepare_root chmodded any existing directory to 0700 (``--state-dir /tmp`` lost its sticky bit)."""
    directory: Path = make(tmp_path)
    before = sorted(p.name for p in directory.iterdir()), stat.S_IMODE(directory.stat().st_mode)
    with pytest.raises(StateDirError, match=re.escape(message)) as refused:
        prepare_root(directory)
    assert str(directory) in str(refused.value)
    assert (sorted(p.name for p in directory.iterdir()), stat.S_IMODE(directory.stat().st_mode)) == before
    result = _waiaas("selfhost", "up", "--state-dir", str(directory), "--port", str(free_port()))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"selfhost up: state directory {directory} ") and message in result.stderr
    assert "Traceback" not in result.stderr
    assert (sorted(p.name for p in directory.iterdir()), stat.S_IMODE(directory.stat().st_mode)) == before


def test_a_directory_of_ours_is_used_as_it_is_and_a_new_one_is_made_0700(tmp_path: Path) -> None:
    """An existing state directory keeps its mode (here 01700: owner-only, plus a sticky bit the old code
    stripped); a new one is made 0700 whatever the umask."""
    ours = tmp_path / "ours"
    for entry in ("state", "sealed", "secrets", "socket", "logs", "verify-order"):
        (ours / entry).mkdir(parents=True)
    (ours / "owner.json").write_text("[]")
    (ours / "selfhost.env").write_text("")
    ours.chmod(0o1700)
    assert prepare_root(ours) == ours.resolve()
    assert stat.S_IMODE(ours.stat().st_mode) == 0o1700
    old_umask = os.umask(0)
    try:
        new = prepare_root(tmp_path / "a" / "new")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o700 and list(new.iterdir()) == []


def test_a_state_directory_that_cannot_be_made_is_refused_without_a_traceback(tmp_path: Path) -> None:
    """Review s19 (unwritable): an OSError from the state or run directory gave a Python traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    up = _waiaas("selfhost", "up", "--state-dir", str(blocker / "state"), "--port", str(free_port()))
    assert up.returncode == 2, up.stdout + up.stderr
    assert up.stderr == f"selfhost up: cannot use state directory {blocker / 'state'}: Not a directory\n"
    demo = _waiaas("demo", "--run-dir", str(blocker / "run"))
    assert demo.returncode == 2, demo.stdout + demo.stderr
    assert demo.stderr == f"demo: cannot use run directory {blocker / 'run'}: Not a directory\n"
    up = _waiaas("selfhost", "up", "--state-dir", str(blocker), "--port", str(free_port()))
    assert up.returncode == 2 and "exists and is not a directory" in up.stderr, up.stdout + up.stderr


# ---------------------------------------------------------------------------------------------------------- port


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[int]:
    """Another HTTP server on a loopback port, answering 200 to anything (a first `selfhost up`, say)."""
    server = HTTPServer(("127.0.0.1", free_port()), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_selfhost_up_refuses_a_port_in_use_before_it_starts_anything(other_server: int, tmp_path: Path) -> None:
    """Before: the other server answered the proxy's healthcheck, the "is up" banner was printed, and then the
    proxy exited "address already in use"."""
    state = tmp_path / "state"
    result = _waiaas("selfhost", "up", "--state-dir", str(state), "--port", str(other_server))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "is up" not in result.stdout
    assert f"port {other_server} on 127.0.0.1 is already in use" in result.stderr
    assert "--port" in result.stderr and "WAIAAS_PUBLISH_PORT" in result.stderr
    assert not (state / "logs").exists()  # no service was started


def test_a_service_that_exits_while_its_healthcheck_passes_is_not_healthy(tmp_path: Path) -> None:
    """A healthcheck answered by someone else while this run's process dies (it lost the port): not healthy."""
    group = ProcessGroup(tmp_path)
    process = group.spawn("proxy", [sys.executable, "-c", "raise SystemExit(3)"], {"PATH": "/usr/bin:/bin"})
    try:
        with pytest.raises(StackError, match="proxy exited with 3"):
            group.wait_healthy("proxy", lambda: process.wait(timeout=30) is not None, timeout=10)
    finally:
        group.stop_all()


# ------------------------------------------------------------------------------------------------------ --rpc-url


RPC_URL = "https://USERPART:PASSPART@rpc.example.com:8443/v2/PATHKEY?api-key=QUERYKEY#frag"


@pytest.mark.parametrize("option", ["--rpc-url", "--rpc-url-file"])
def test_the_banner_shows_only_the_origin_of_the_rpc_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    """Providers put API keys in the URL: the banner shows ``scheme://host:port`` only. Given on the command line,
    where other local users can read it while the command runs, the URL gets a warning that names the parts that
    can hold a key without showing them; from a file (``--rpc-url-file``), none."""
    group = ProcessGroup(tmp_path)
    captured: list[str | None] = []
    group.spawn("proxy", [sys.executable, "-c", "raise SystemExit(3)"], {"PATH": "/usr/bin:/bin"}).wait(timeout=30)

    @contextlib.contextmanager
    def stand_in(root: Path, **kwargs: Any) -> Iterator[Deployment]:
        captured.append(kwargs["rpc_url"])
        yield Deployment(
            root=root, api_url="http://127.0.0.1:1", chain_url=kwargs["rpc_url"], database=root / deployment.DATABASE,
            logs=group.logs, group=ProcessGroup(root), services=group, multisig_required=True,
        )  # fmt: skip

    monkeypatch.setattr(cli, "run_local", stand_in)
    from policies.cli import main

    url_file = tmp_path / "rpc-url"
    url_file.write_text(f"  {RPC_URL}  \nthe first line only\n")
    url_file.chmod(0o600)
    given = RPC_URL if option == "--rpc-url" else str(url_file)
    args = ["selfhost", "up", "--state-dir", str(tmp_path / "state"), option, given, "--owner-key", _owner()]
    assert main(args) == 1  # the stand-in's proxy has exited
    group.stop_all()
    output = capsys.readouterr()
    assert captured == [RPC_URL]  # the whole URL reaches the services (selfhost.env, mode 0600)
    assert "  chain        https://rpc.example.com:8443  (RPC endpoint; its path and query not shown)" in output.out
    for secret in ("USERPART", "PASSPART", "PATHKEY", "QUERYKEY"):
        assert secret not in output.out + output.err
    warning = (
        "selfhost up: warning: --rpc-url has a user info and a path and a query, where providers put API keys: "
        "other local users can read a command line (/proc/PID/cmdline) while the command runs, and shell history "
        "keeps it; put the URL in a file only you can read and give --rpc-url-file FILE instead\n"
    )
    assert (warning in output.err) == (option == "--rpc-url")


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://[::1]:8899/?k=v", "http://[::1]:8899"),
        ("https://RPC.example.com/abc", "https://rpc.example.com"),
        ("https://rpc.example.com?api-key=x", "https://rpc.example.com"),
    ],
)
def test_url_origin_only(url: str, origin: str) -> None:
    assert cli.url_origin_only(url) == origin


def test_the_env_file_holding_the_rpc_url_is_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Captured(Exception):
        pass

    def capture(*args: Any, **kwargs: Any) -> Any:
        raise Captured

    monkeypatch.setattr(deployment, "run_stack", capture)
    with (
        pytest.raises(Captured),
        run_local(tmp_path / "state", owner_keys=[_owner()], port=free_port(), rpc_url=RPC_URL),
    ):
        pass
    env_file = tmp_path / "state" / deployment.ENV_FILE_NAME
    assert "QUERYKEY" in env_file.read_text() and stat.S_IMODE(env_file.stat().st_mode) == 0o600
