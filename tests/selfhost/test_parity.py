"""Parity: the commands of selfhost/docker-compose.yml, started as local processes, serve the same API.

The harness (tests/selfhost/local_stack.py) reads each service's command, environment, secrets and healthcheck
from compose's normalized model and maps container paths onto a temporary directory. Three layers:

1. the plan for the real compose file (pure: no process started);
2. the harness itself, end to end, on a small compose file of its own whose services are two short Python
   programs, so a broken harness cannot pass for a broken service, nor the other way round;
3. the real services: ``python -m enclave_app`` and the proxy's command, exactly as the compose file gives them,
   with the API checked over HTTP. Skipped, with the reason, only while a command the compose file names does
   not exist in this checkout.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import stat
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from solders.keypair import Keypair
from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.system_program import AssignParams, assign
from solders.transaction import VersionedTransaction

from enclave_app.client import EnclaveClient
from enclave_app.errors import EnclaveRequestError
from enclave_app.protocol import EnclaveState, ErrorCode
from enclave_app.sealing import SCHEME_LOCAL, LocalSealer, SealBinding, unseal_agent_key
from parent_proxy.owner_auth import signed_request_headers
from parent_proxy.owner_cli_common import envelope
from parent_proxy.owner_signers import LocalOwnerSigner
from parent_proxy.sign_parts import message_hash
from parent_proxy.store.sqlite import SqliteStore
from policies.orders import approval_document
from selfhost import paths
from selfhost.paths import PathMappingError
from tests.selfhost.compose_config import SELFHOST, load_config
from tests.selfhost.conftest import EnvFactory
from tests.selfhost.live_wallet import SOL, LiveWallet, new_wallet
from tests.selfhost.local_stack import (
    CONTAINER_PORT,
    StackError,
    command_exists,
    free_port,
    plan,
    run_stack,
    run_stack_on,
)

# ------------------------------------------------------------------------------------- 1. plan of the real file


def test_plan_maps_every_container_path(compose_model: dict[str, Any], tmp_path: Path) -> None:
    services = plan(compose_model, tmp_path, published={CONTAINER_PORT: 18080})
    signer, proxy = services["signer"], services["proxy"]
    assert signer.argv[1:] == ["-m", "enclave_app"]
    socket_path = f"unix:{tmp_path}/socket/signer.sock"
    assert socket_path in signer.env.values()
    assert proxy.env["WAIAAS_ENCLAVE"] == socket_path
    assert proxy.env["WAIAAS_STATE"] == f"sqlite:{tmp_path}/state/waiaas.db"
    assert proxy.env["WAIAAS_SEALED_KEYS_DIR"] == f"{tmp_path}/sealed"
    assert (proxy.env["WAIAAS_HOST"], proxy.env["WAIAAS_PORT"]) == ("127.0.0.1", "18080")
    assert proxy.healthcheck is not None and proxy.healthcheck[-1] == "http://127.0.0.1:18080/readyz"
    assert signer.healthcheck is not None and signer.healthcheck[-1] == f"unix:{tmp_path}/socket/signer.sock"
    assert signer.secrets == {tmp_path / "secrets" / paths.UNSEAL_SECRET_NAME: paths.UNSEAL_SECRET_NAME}
    assert not proxy.secrets
    # Both services run with the same multisig requirement (the signer enforces it, the proxy checks it first).
    assert signer.env["WAIAAS_ENCLAVE_REQUIRE_MULTISIG"] == proxy.env["WAIAAS_REQUIRE_MULTISIG"]
    for service in services.values():
        for value in [*service.argv, *service.env.values(), *(service.healthcheck or [])]:
            assert not re.search(r"(^|[:='\"])/(run|var/lib)/waiaas|/run/secrets", value), value


@pytest.mark.parametrize("service", ["signer", "proxy"])
def test_compose_command_is_the_image_command(compose_model: dict[str, Any], service: str) -> None:
    # The local run uses the compose command; the image's CMD must say the same, so that `docker run` of the
    # image alone does not start something else.
    text = (SELFHOST / f"Dockerfile.{service}").read_text(encoding="utf-8")
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert json.loads(cmd) == compose_model["services"][service]["command"]


def test_plan_refuses_an_unmapped_container_path(compose_model: dict[str, Any], tmp_path: Path) -> None:
    model = json.loads(json.dumps(compose_model))
    model["services"]["signer"]["environment"]["WAIAAS_EXTRA"] = "/var/lib/waiaas/backups"
    with pytest.raises(PathMappingError, match="no local mapping"):
        plan(model, tmp_path, published={CONTAINER_PORT: 18080})


# ----------------------------------------------------------------------------------- 2. the harness end to end

_STAND_IN_SIGNER = textwrap.dedent(
    """
    import os, socket, sys, time
    address = os.environ["WAIAAS_ENCLAVE_LISTEN"].removeprefix("unix:")
    secret = open(os.environ["WAIAAS_ENCLAVE_LOCAL_SECRET_FILE"], "rb").read()
    open(os.path.join(os.path.dirname(address), "seen"), "w").write(str(len(secret)))
    if any(k.startswith("LEAK_") for k in os.environ):
        sys.exit(3)
    server = socket.socket(socket.AF_UNIX)
    server.bind(address)
    server.listen()
    while True:
        conn, _ = server.accept()
        conn.sendall(b"pong")
        conn.close()
    """
)

_STAND_IN_SIGNER_CHECK = (
    "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/waiaas/signer.sock'); "
    "assert s.recv(4) == b'pong'"
)

_STAND_IN_PROXY = textwrap.dedent(
    """
    import http.server, os, socket
    address = os.environ["WAIAAS_ENCLAVE"].removeprefix("unix:")
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(address)
                body = s.recv(16)
            self.send_response(200 if body == b"pong" else 500)
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    http.server.HTTPServer((os.environ["WAIAAS_HOST"], int(os.environ["WAIAAS_PORT"])), Handler).serve_forever()
    """
)


def _stand_in_compose(tmp_path: Path) -> Path:
    """The real file with each service's command swapped for a short program (same mounts, env, secrets), and
    the signer's healthcheck for a plain connect (the stand-in does not speak the enclave protocol)."""
    text = (SELFHOST / "docker-compose.yml").read_text(encoding="utf-8")
    ping = '["CMD", "python", "-m", "selfhost.healthcheck", "unix:/run/waiaas/signer.sock"]'
    connect = json.dumps(["CMD", "python", "-c", _STAND_IN_SIGNER_CHECK])
    assert ping in text
    text = text.replace(ping, connect, 1)
    signer_cmd = json.dumps(["python", "-c", _STAND_IN_SIGNER])
    proxy_cmd = json.dumps(["python", "-c", _STAND_IN_PROXY])
    text = text.replace('command: ["python", "-m", "enclave_app"]', f"command: {signer_cmd}", 1)
    text = text.replace('command: ["python", "-m", "parent_proxy"]', f"command: {proxy_cmd}", 1)
    assert signer_cmd in text and proxy_cmd in text
    # Outside the repository: the build context then points elsewhere, which `config` does not check, and the
    # secret's path comes from the env file.
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(text, encoding="utf-8")
    return copy


def test_harness_runs_the_compose_commands_as_local_processes(
    tmp_path: Path, make_env_file: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_config(_stand_in_compose(tmp_path), make_env_file())
    monkeypatch.setenv("LEAK_CANARY", "must-not-reach-the-services")
    secret = secrets.token_bytes(32)
    port = free_port()
    root = tmp_path / "root"
    with run_stack(model, root, secret_values={paths.UNSEAL_SECRET_NAME: secret}, published={8080: port}) as stack:
        response = httpx.get(f"http://127.0.0.1:{port}/anything", timeout=5)
        assert (response.status_code, response.content) == (200, b"pong")
        secret_file = root / "secrets" / paths.UNSEAL_SECRET_NAME
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o400
        assert (root / "socket" / "seen").read_text() == "32"
        assert stack.processes["signer"].poll() is None
    assert all(process.poll() is not None for process in stack.processes.values())


def test_harness_reports_a_service_that_dies(
    compose_model: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = json.loads(json.dumps(compose_model))
    model["services"]["signer"]["command"] = ["python", "-c", "import sys; print('boom'); sys.exit(7)"]
    secret_values = {paths.UNSEAL_SECRET_NAME: b"x" * 32}
    with (
        pytest.raises(StackError, match=r"signer exited with 7:\nboom"),
        run_stack(model, tmp_path, secret_values=secret_values, published={8080: free_port()}),
    ):
        pass


# ---------------------------------------------------------------------------------------- 3. the real services


def _missing_commands(model: dict[str, Any]) -> list[str]:
    return [" ".join(svc["command"]) for svc in model["services"].values() if not command_exists(list(svc["command"]))]


@pytest.fixture(scope="module")
def live_stack(
    compose_model_on: Callable[[int], dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Any:  # Iterator[tuple[str, RunningStack]]
    port = free_port()
    model = compose_model_on(port)
    missing = _missing_commands(model)
    if missing:
        pytest.skip(f"not in this checkout yet (colleagues' pieces): {', '.join(missing)}")
    with run_stack_on(model, tmp_path_factory.mktemp("selfhost-live"), port) as stack:
        yield f"http://127.0.0.1:{port}", stack


def test_live_health_and_readiness(live_stack: tuple[str, Any]) -> None:
    base, _stack = live_stack
    assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_live_agent_routes_need_a_token(live_stack: tuple[str, Any]) -> None:
    base, _stack = live_stack
    body = {"transaction": base64.b64encode(b"\x00" * 64).decode(), "idempotency_key": "k1"}
    response = httpx.post(f"{base}/v1/wallets/w1/transactions/sign", json=body, timeout=5)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_live_logs_hold_no_secret(live_stack: tuple[str, Any]) -> None:
    _base, stack = live_stack
    secret = (stack.root / "secrets" / paths.UNSEAL_SECRET_NAME).read_bytes().decode()
    for path in stack.logs.values():
        assert secret not in path.read_text(encoding="utf-8", errors="replace")


# ------------------------------------------------------------------------- 3a. the signer alone, through its socket


def _signer_available(model: dict[str, Any]) -> None:
    command = list(model["services"]["signer"]["command"])
    if not command_exists(command):
        pytest.skip(f"not in this checkout yet: {' '.join(command)}")


async def _provision(socket_address: str, owner: bytes) -> tuple[str, bytes, bytes]:
    client = EnclaveClient(socket_address, timeout=30)
    status = await client.ping()
    assert status.state is EnclaveState.BOOTING
    answer = await client.provision_wallet("w1", owner)
    assert answer.sealed_blob is not None
    return answer.wallet_id, answer.agent_public_key, answer.sealed_blob


async def _load(socket_address: str, owner: bytes, agent: bytes, blob: bytes) -> EnclaveState:
    client = EnclaveClient(socket_address, timeout=30)
    await client.load_wallet("w1", owner_public_key=owner, agent_public_key=agent, sealed_blob=blob)
    return (await client.ping()).state


def test_live_signer_seals_with_the_unseal_secret_and_unseals_after_a_restart(
    compose_model: dict[str, Any], tmp_path: Path
) -> None:
    """The compose signer command, run twice on one secret: a key sealed by the first run opens in the second;
    a third run on another secret refuses it. This is the self-host "unseal" (docs/selfhost.md)."""
    _signer_available(compose_model)
    owner = bytes(Keypair().pubkey())
    secret, other = secrets.token_urlsafe(32).encode(), secrets.token_urlsafe(32).encode()
    address = f"unix:{tmp_path}/socket/signer.sock"

    def signer(value: bytes) -> Any:
        return run_stack(
            compose_model, tmp_path, secret_values={paths.UNSEAL_SECRET_NAME: value}, published={}, only=["signer"]
        )

    with signer(secret):
        _wallet, agent, blob = asyncio.run(_provision(address, owner))
    assert cbor2.loads(blob)["scheme"] == SCHEME_LOCAL
    assert secret not in blob
    assert secret not in (tmp_path / "logs" / "signer.log").read_bytes()
    with signer(secret):
        assert asyncio.run(_load(address, owner, agent, blob)) is EnclaveState.PROVISIONED
    with signer(other), pytest.raises(EnclaveRequestError) as refused:
        asyncio.run(_load(address, owner, agent, blob))
    assert refused.value.code == ErrorCode.UNSEAL_FAILED


# ------------------------------------------------------------- 4. the API contract, over HTTP, on the live stack
# Each test gets a wallet of its own (created by the owner, example policy installed, agent token issued), so the
# tests do not depend on each other's order. Chain: the compose env's `litesvm` (embedded in the proxy).

BLOCKED = Pubkey.from_string("3R2khGdRVoeaEHJz3FaRq6GEJRta8VPBaxy9vo4jgoJv")


@pytest.fixture
def wallet(live_stack: tuple[str, Any], owner_key: Ed25519PrivateKey) -> LiveWallet:
    base, _stack = live_stack
    return new_wallet(base, owner_key)


def test_live_wallet_creation_needs_a_configured_owner(live_stack: tuple[str, Any]) -> None:
    base, _stack = live_stack
    stranger = LiveWallet(base, LocalOwnerSigner(Ed25519PrivateKey.generate()), "w-stranger")
    body = {"wallet_id": stranger.wallet_id, "owner_public_key": str(stranger.owner.public_key)}
    response = stranger.owner_call("POST", "/v1/wallets", body)
    assert response.status_code == 401 and response.json()["error"]["code"] == "owner_signature_invalid"


def test_live_allowed_transfer_is_signed_by_the_agent_key(wallet: LiveWallet) -> None:
    response = wallet.sign(wallet.pay(SOL // 2))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "signed" and body["decision"]["verdict"] == "allow"
    signed = VersionedTransaction.from_bytes(base64.b64decode(body["signed_transaction"]))
    Ed25519PublicKey.from_public_bytes(bytes(wallet.agent)).verify(
        bytes(signed.signatures[0]), to_bytes_versioned(signed.message)
    )
    view = httpx.get(
        f"{wallet.base}/v1/wallets/{wallet.wallet_id}", headers={"Authorization": f"Bearer {wallet.token}"}
    )
    assert view.status_code == 200 and view.json()["frozen"] is False


def test_live_escalation_is_signed_only_after_the_owner_approves(wallet: LiveWallet) -> None:
    large = wallet.pay(3 * SOL)
    pending = wallet.sign(large)
    assert pending.status_code == 202, pending.text
    approval_id = pending.json()["approval_id"]
    listed = wallet.owner_call("GET", f"/v1/wallets/{wallet.wallet_id}/approvals")
    assert [item["approval_id"] for item in listed.json()] == [approval_id]
    document = approval_document(wallet.wallet_id, message_hash(large), int(time.time()) + 600)
    path = f"/v1/wallets/{wallet.wallet_id}/approvals/{approval_id}/approve"
    approved = wallet.owner_call("POST", path, {"envelope": envelope(wallet.owner, "approval", document)})
    assert approved.status_code == 200, approved.text
    assert approved.json()["transaction"]["status"] == "signed"


def test_live_denied_destination_is_403_with_reasons(wallet: LiveWallet) -> None:
    response = wallet.sign(wallet.pay(1_000, BLOCKED))
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "policy_denied"
    assert any(reason["rule"] == "destinations.deny" for reason in error["reasons"])


def test_live_attack_freezes_until_the_owner_unfreezes(wallet: LiveWallet) -> None:
    attack = assign(AssignParams(pubkey=wallet.agent, owner=Pubkey.new_unique()))
    frozen = wallet.sign(wallet.tx(attack))
    assert frozen.status_code == 403 and frozen.json()["error"]["code"] == "wallet_frozen"
    assert wallet.sign(wallet.pay(1_000)).json()["error"]["code"] == "wallet_frozen"
    unfrozen = wallet.owner_call(
        "POST", f"/v1/wallets/{wallet.wallet_id}/unfreeze", {"envelope": wallet.order("unfreeze", 1)}
    )
    assert unfrozen.status_code == 200 and unfrozen.json()["frozen"] is False
    assert wallet.sign(wallet.pay(1_000)).status_code == 200


def test_live_owner_freeze_and_unfreeze(wallet: LiveWallet) -> None:
    path = f"/v1/wallets/{wallet.wallet_id}"
    frozen = wallet.owner_call("POST", f"{path}/freeze", {"envelope": wallet.order("freeze", 1)})
    assert frozen.status_code == 200
    assert (frozen.json()["frozen"], frozen.json()["enclave_acknowledged"]) == (True, True)
    assert wallet.sign(wallet.pay(1_000)).json()["error"]["code"] == "wallet_frozen"
    unfrozen = wallet.owner_call("POST", f"{path}/unfreeze", {"envelope": wallet.order("unfreeze", 2)})
    assert unfrozen.status_code == 200 and unfrozen.json()["frozen"] is False
    assert wallet.sign(wallet.pay(1_000)).status_code == 200


def test_live_owner_requests_are_not_replayable(wallet: LiveWallet) -> None:
    path = f"/v1/wallets/{wallet.wallet_id}/approvals"
    headers = signed_request_headers(
        wallet.base, "GET", path, b"", owner=wallet.owner.public_key, sign=wallet.owner.sign
    )
    assert httpx.get(wallet.base + path, headers=headers, timeout=10).status_code == 200
    replay = httpx.get(wallet.base + path, headers=headers, timeout=10)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "owner_request_replayed"


def test_live_attestation_answers_with_the_callers_nonce(live_stack: tuple[str, Any]) -> None:
    base, _stack = live_stack
    nonce = secrets.token_bytes(32)
    response = httpx.get(f"{base}/v1/attestation", params={"nonce": nonce.hex()}, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    # Self-hosted: attestation mode none, no document, and the reason why (DESIGN.md section 11).
    assert body["mode"] == "none" and body["document"] is None
    assert "no Nitro Enclave" in body["reason"] and "no hardware attestation" in body["reason"]
    assert len(bytes(Pubkey.from_string(body["session_public_key"]))) == 32
    assert body["enclave_state"] in {"booting", "provisioned", "ready"}
    short = httpx.get(f"{base}/v1/attestation", params={"nonce": "00"}, timeout=10)
    assert short.status_code == 422


def _forms(secret: bytes) -> list[str]:
    """The forms a 32-byte secret could leak in: hex, base64 (standard and URL-safe), base58."""
    return [
        secret.hex(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
        str(Pubkey.from_bytes(secret)),
    ]


def test_live_logs_and_answers_hold_no_webhook_secret_or_agent_seed(
    live_stack: tuple[str, Any], wallet: LiveWallet
) -> None:
    """Review s21: the live leak check searched the logs for the unseal secret only. Here a webhook (secret, and
    credentials in its URL) is set, refused forms first, an event fails to deliver (``.invalid`` never resolves),
    and the logs and every answer are searched for the webhook secret, the URL credential and the agent seed (as
    the signer unseals it from the state)."""
    _base, stack = live_stack
    hook_secret = secrets.token_bytes(32)
    credential = "hookpass" + secrets.token_hex(8)
    webhook = {
        "url": f"https://user:{credential}@hooks.invalid/h?k={credential}",
        "secret": base64.b64encode(hook_secret).decode(),
    }
    path = f"/v1/wallets/{wallet.wallet_id}/webhook"
    answers = []
    for body in (
        {**webhook, "url": "ftp://x"},
        {**webhook, "extra": 1},
        {**webhook, "secret": webhook["secret"][:-1] + "!"},
        {"secret": webhook["secret"]},
        webhook,
    ):
        answer = wallet.owner_call("PUT", path, body)
        answers.append(answer.text)
    assert answer.status_code == 204, answer.text
    assert wallet.sign(wallet.pay(1_000)).status_code == 200  # an event for the webhook
    deadline = time.monotonic() + 30
    while "attempt 1 failed" not in stack.log("proxy"):
        assert time.monotonic() < deadline, "no delivery attempt was logged"
        time.sleep(0.2)
    unseal = LocalSealer((stack.root / "secrets" / paths.UNSEAL_SECRET_NAME).read_bytes())
    store = SqliteStore(stack.root / "state" / "waiaas.db")
    try:
        record = store.get_wallet(wallet.wallet_id)
    finally:
        store.close()
    binding = SealBinding(wallet.wallet_id, record.agent_pubkey, record.owner_pubkey)
    seed = unseal_agent_key(unseal, record.sealed_key, binding).private_bytes_raw()
    needles = {
        "webhook secret": _forms(hook_secret),
        "URL credential": [credential],
        "agent seed": [*_forms(seed), str(Keypair.from_seed(seed))],
    }
    texts = {str(p): p.read_text(encoding="utf-8", errors="replace") for p in stack.logs.values()}
    texts["answers"] = "\n".join(answers)
    found = [
        (what, where)
        for what, forms in needles.items()
        for where, text in texts.items()
        if any(f in text for f in forms)
    ]
    assert found == []
