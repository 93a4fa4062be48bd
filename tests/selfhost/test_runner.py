"""selfhost/local_stack.py and selfhost/deployment.py failure paths, and `waiaas selfhost up` as a real process:
a service that never becomes healthy or dies is reported with its log and everything started is stopped; a
process that ignores SIGTERM is killed; Ctrl-C/SIGTERM stops all services, none left behind."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from parent_proxy.owner_auth import normalize_origin, url_origin
from parent_proxy.owner_signers import write_keypair_file
from parent_proxy.store.model import Wallet
from parent_proxy.store.sqlite import SqliteStore
from selfhost import deployment, paths
from selfhost.deployment import ensure_unseal_secret, run_local
from selfhost.local_stack import ProcessGroup, StackError, free_port, run_stack, stop_process
from tests.selfhost.compose_config import REPO


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _model(compose_model: dict[str, Any], command: list[str], test: list[str]) -> dict[str, Any]:
    model: dict[str, Any] = json.loads(json.dumps(compose_model))
    model["services"]["signer"]["command"] = command
    model["services"]["signer"]["healthcheck"]["test"] = ["CMD", *test]
    return model


def test_a_service_that_never_becomes_healthy_is_reported_and_stopped(
    compose_model: dict[str, Any], tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    program = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
        "print('started', flush=True); time.sleep(60)"
    )
    model = _model(compose_model, ["python", "-c", program], ["python", "-c", "raise SystemExit(1)"])
    with (
        pytest.raises(StackError, match=r"signer not healthy after 1\.5 s:\nstarted"),
        run_stack(
            model,
            tmp_path,
            secret_values={paths.UNSEAL_SECRET_NAME: b"s" * 32},
            published={},
            only=["signer"],
            health_timeout=1.5,
        ),
    ):
        pass
    assert not _alive(int(pid_file.read_text()))


def test_a_secret_file_readable_by_others_is_refused(compose_model: dict[str, Any], tmp_path: Path) -> None:
    model: dict[str, Any] = json.loads(json.dumps(compose_model))
    secret = tmp_path / "secret"
    secret.write_text("x" * 32)
    secret.chmod(0o644)
    model["secrets"][paths.UNSEAL_SECRET_NAME]["file"] = str(secret)
    with (
        pytest.raises(StackError, match="readable by group or others"),
        run_stack(model, tmp_path, published={}, only=["signer"]),
    ):
        pass


def test_sigterm_then_sigkill(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    program = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    process = group.spawn("stubborn", [sys.executable, "-c", program], {"PATH": "/usr/bin:/bin"})
    group.wait_healthy("stubborn", lambda: "ready" in group.log("stubborn"), timeout=10)
    started = time.monotonic()
    stop_process(process, timeout=0.5)
    assert process.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5
    group.stop_all()


def test_deployment_stops_the_chain_when_a_service_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owner_pubkey: str
) -> None:
    text = (REPO / "selfhost" / "docker-compose.yml").read_text(encoding="utf-8")
    broken = text.replace(
        'command: ["python", "-m", "enclave_app"]', 'command: ["python", "-c", "raise SystemExit(3)"]', 1
    )
    assert broken != text
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(broken, encoding="utf-8")
    monkeypatch.setattr(deployment, "COMPOSE_FILE", compose)
    seen: list[ProcessGroup] = []
    original = deployment.start_local_chain

    def spy(group: ProcessGroup, root: Path, timeout: float = 60) -> str:
        seen.append(group)
        return original(group, root, timeout)

    monkeypatch.setattr(deployment, "start_local_chain", spy)
    with (
        pytest.raises(StackError, match="signer exited with 3"),
        run_local(tmp_path / "state", owner_keys=[owner_pubkey], port=free_port()),
    ):
        pass
    assert seen and all(p.poll() is not None for p in seen[0].processes.values())


def test_unseal_secret_is_made_once_with_mode_0400(tmp_path: Path) -> None:
    path = ensure_unseal_secret(tmp_path)
    first = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o400 and len(first) >= 32
    assert ensure_unseal_secret(tmp_path).read_bytes() == first
    path.chmod(0o440)
    with pytest.raises(StackError, match="readable by group or others"):
        ensure_unseal_secret(tmp_path)


def test_no_unseal_secret_is_made_beside_existing_state(tmp_path: Path) -> None:
    """Review s17: a secret made after the old one went missing opens none of the stored wallets, and the signer
    would seal new wallets under it; with a state database present the secret must come back from the backup."""
    database = tmp_path / deployment.DATABASE
    database.parent.mkdir()
    SqliteStore(database).close()
    with pytest.raises(StackError, match="Restore the secret from your backup") as refused:
        ensure_unseal_secret(tmp_path)
    assert str(database) in str(refused.value) and "docs/selfhost.md" in str(refused.value)
    assert not (tmp_path / "secrets" / paths.UNSEAL_SECRET_NAME).exists()


# ------------------------------------------------------------------------------------- waiaas selfhost up, live


def _waiaas(*args: str) -> list[str]:
    return [sys.executable, "-m", "policies.cli", *args]


@pytest.fixture
def selfhost_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, int]]:
    port = free_port()
    state = tmp_path / "state"
    process = subprocess.Popen(
        _waiaas("selfhost", "up", "--state-dir", str(state), "--port", str(port)),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process, state, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        if process.stdout:
            process.stdout.close()


def test_selfhost_up_serves_until_sigterm_then_stops_everything(
    selfhost_up: tuple[subprocess.Popen[str], Path, int],
) -> None:
    process, state, port = selfhost_up
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Ctrl-C stops"):
            break
    output = "".join(lines)
    assert f"WAIaaS self-host is up: http://127.0.0.1:{port}" in output, output
    assert "is a throw-away owner key for this local chain only" in output
    assert "warning      the local chain has no Squads program, so wallets here have no on-chain limit" in output
    assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()["status"] == "ready"
    chain_url = next(line.split()[-1] for line in lines if line.strip().startswith("chain"))
    assert httpx.post(chain_url, json={"jsonrpc": "2.0", "id": 1, "method": "getHealth"}, timeout=5).status_code == 200
    assert stat.S_IMODE((state / "owner.json").stat().st_mode) == 0o600
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    for url in (f"http://127.0.0.1:{port}/healthz", chain_url):
        with pytest.raises(httpx.ConnectError, match="Connection refused"):
            httpx.get(url, timeout=2)
    secret = (state / "secrets" / paths.UNSEAL_SECRET_NAME).read_text()
    owner = (state / "owner.json").read_text()
    for text in [output, *(p.read_text() for p in (state / "logs").iterdir())]:
        assert secret not in text and owner not in text


def _up_refused(*args: str) -> subprocess.CompletedProcess[str]:
    """`waiaas selfhost up` with arguments it must refuse at once (exit 2)."""
    result = subprocess.run(
        _waiaas("selfhost", "up", *args), cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stdout + result.stderr
    return result


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "--port must be 1-65535"),
        (["--rpc-url", "ftp://x"], "--rpc-url must be an http"),
        (["--rpc-url", "http://10.0.0.5:8899/"], "--rpc-url must be https (plain http only to localhost"),
        (["--rpc-url", "http://127.0.0.1:99999/"], "--rpc-url must be an http(s) URL with a host and a valid port"),
        (["--rpc-url", "https:///path"], "--rpc-url must be an http(s) URL with a host and a valid port"),
        (["--owner-key", "nope"], "selfhost up: --owner-key (number 1 given) is not a base58 public key of 32 bytes"),
        (["--owner-key", "{owner}", "--owner-key", "KEYPART" * 12], "--owner-key (number 2 given) is not a base58"),
        (["--rpc-url", "http://127.0.0.1:1"], "--rpc-url needs --owner-key"),
        (["--rpc-url-file", "{dir}/missing"], "--rpc-url-file {dir}/missing: cannot be read (No such file"),
        (["--rpc-url-file", "{dir}/plain-http"], "--rpc-url-file {dir}/plain-http: the URL must be https (plain"),
        (["--rpc-url-file", "{dir}/plain-http", "--rpc-url", "https://x"], "not allowed with argument"),
    ],
)
def test_selfhost_up_refuses_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    given = tmp_path / "given"
    given.mkdir()
    (given / "plain-http").write_text("http://10.0.0.5:8899/KEYPART\n")
    owner = str(Pubkey.from_bytes(Ed25519PrivateKey.generate().public_key().public_bytes_raw()))
    given_args = (a.replace("{dir}", str(given)).replace("{owner}", owner) for a in args)
    result = _up_refused("--state-dir", str(tmp_path / "state"), *given_args)
    assert message.replace("{dir}", str(given)) in result.stderr
    assert "KEYPART" not in result.stdout + result.stderr


def test_selfhost_up_refuses_a_real_chain_in_a_directory_with_a_throw_away_owner_key(tmp_path: Path) -> None:
    """A wallet made on the local chain with the throw-away owner key must not go on to a real chain: both of its
    multisig members' keys would be readable in this directory."""
    write_keypair_file(tmp_path / "owner.json", Ed25519PrivateKey.generate())
    owner = str(Pubkey.from_bytes(Ed25519PrivateKey.generate().public_key().public_bytes_raw()))
    result = _up_refused("--state-dir", str(tmp_path), "--rpc-url", "http://127.0.0.1:1", "--owner-key", owner)
    assert "holds a throw-away owner key" in result.stderr
    assert not (tmp_path / "logs").exists()  # refused before anything was started or made


def test_selfhost_up_refuses_state_without_its_unseal_secret(tmp_path: Path) -> None:
    """A state directory whose secret file went missing (say, removed once the services were healthy, as the
    Unseal section allows): refused before anything starts, nothing made, the message says what to do."""
    (tmp_path / deployment.DATABASE).parent.mkdir()
    store = SqliteStore(tmp_path / deployment.DATABASE)
    store.create_wallet(Wallet("w1", bytes(range(32)), bytes(32), bytes(range(32)), b"sealed-under-the-old-secret"))
    store.close()
    owner = str(Pubkey.from_bytes(Ed25519PrivateKey.generate().public_key().public_bytes_raw()))
    process = subprocess.Popen(
        _waiaas("selfhost", "up", "--state-dir", str(tmp_path), "--owner-key", owner),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # it started the services instead: SIGTERM stops them all
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        pytest.fail("selfhost up started the services on state without its unseal secret")
    assert process.returncode == 1, stderr
    assert "is missing, but" in stderr and "Restore the secret from your backup" in stderr
    assert not (tmp_path / "secrets" / paths.UNSEAL_SECRET_NAME).exists() and not (tmp_path / "logs").exists()


# ------------------------------------------------------------------------------- webhooks to private receivers


class _Captured(Exception):
    """Raised by the stand-in for run_stack once it has seen the model (nothing is started)."""


def _compose_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **run_local_args: Any) -> dict[str, Any]:
    """The compose model `run_local` (one generated owner key, a free port unless given) would start: `run_stack`
    captures it and stops there, and no local chain is started (its URL is ``http://127.0.0.1:2/``)."""
    seen: list[dict[str, Any]] = []

    def capture(model: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        seen.append(model)
        raise _Captured

    monkeypatch.setattr(deployment, "run_stack", capture)
    monkeypatch.setattr(deployment, "start_local_chain", lambda *args: "http://127.0.0.1:2/")
    owner = str(Pubkey.from_bytes(Ed25519PrivateKey.generate().public_key().public_bytes_raw()))
    run_local_args.setdefault("port", free_port())
    with pytest.raises(_Captured), run_local(tmp_path / "state", owner_keys=[owner], **run_local_args):
        pass
    return seen[0]


@pytest.mark.parametrize("allow", [False, True])
def test_run_local_hands_the_webhook_setting_to_the_proxy_through_the_compose_file(
    allow: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _compose_model(tmp_path, monkeypatch, rpc_url="http://127.0.0.1:1/", webhook_allow_private=allow)
    environment = model["services"]["proxy"]["environment"]
    assert environment["WAIAAS_WEBHOOK_ALLOW_PRIVATE"] == ("true" if allow else "false")


@pytest.mark.parametrize("rpc_url", [None, "http://127.0.0.1:1/"])
def test_run_local_requires_a_multisig_except_on_its_local_chain(
    rpc_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local chain has no Squads program: only there do the proxy and the signer run without requiring a
    multisig in every policy (and the deployment says so); with an RPC URL the compose file's default, true,
    stands."""
    model = _compose_model(tmp_path, monkeypatch, rpc_url=rpc_url)
    environment = model["services"]["proxy"]["environment"]
    assert environment["WAIAAS_REQUIRE_MULTISIG"] == ("false" if rpc_url is None else "true")
    assert environment["WAIAAS_CHAIN"] == f"rpc:{rpc_url or 'http://127.0.0.1:2/'}"
    signer = model["services"]["signer"]["environment"]  # the signer enforces the same requirement
    assert signer["WAIAAS_ENCLAVE_REQUIRE_MULTISIG"] == environment["WAIAAS_REQUIRE_MULTISIG"]


@pytest.mark.parametrize("flag", [[], ["--allow-private-webhooks"]])
def test_selfhost_up_passes_allow_private_webhooks_on(
    flag: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from policies.cli import main
    from selfhost import cli

    calls: list[dict[str, Any]] = []

    def stand_in(root: Path, **kwargs: Any) -> Any:
        calls.append(kwargs)
        raise KeyboardInterrupt  # as Ctrl-C during start-up: stopped, exit 0

    monkeypatch.setattr(cli, "run_local", stand_in)
    assert main(["selfhost", "up", "--state-dir", str(tmp_path / "state"), *flag]) == 0
    assert calls[0]["webhook_allow_private"] is bool(flag)


def test_run_local_accepts_owner_requests_signed_for_its_loopback_origins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Owner requests are signed for the origin they are sent to (`parent_proxy.owner_auth`): the proxy of
    ``run_local`` accepts the two names of its published loopback address, ``api_url``'s among them, and no other."""
    port = free_port()
    model = _compose_model(tmp_path, monkeypatch, port=port)
    origins = model["services"]["proxy"]["environment"]["WAIAAS_PUBLIC_ORIGINS"].split(",")
    assert origins == [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    assert [normalize_origin(origin) for origin in origins] == origins  # the proxy's normal form already
    assert url_origin(f"http://127.0.0.1:{port}") in origins  # what `Deployment.api_url` signs for
