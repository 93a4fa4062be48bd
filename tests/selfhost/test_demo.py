"""`waiaas demo` (selfhost/demo.py, selfhost/demo_story.py): the whole story against the real services started from
the compose file.

Run once as a real subprocess (exit 0, every step in the output, no secret in the output or in any log), then
in-process for its failure paths: a step that misbehaves exits 1, services that do not start exit 2, and in both
cases every process it started is stopped."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from enclave_app.sealing import LocalSealer, SealBinding, unseal_agent_key
from enclave_app.secret_file import read_operator_secret
from parent_proxy.store.sqlite import SqliteStore
from selfhost import demo, demo_story, deployment, paths
from selfhost.demo import run_demo
from selfhost.demo_story import redact_token
from selfhost.local_stack import free_port
from tests.selfhost.compose_config import REPO

DEMO_WALLET = "demo-wallet"
"""The demo's wallet id (the example policy is bound to it)."""
FULL_TOKEN = re.compile(r"waiaas_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")
STEPS = [
    "warning    the local chain has no Squads program, so wallets here have no on-chain limit",
    "== 1. The services are ready; attestation",
    "== 2. The owner creates a wallet",
    "== 3. The owner signs the example policy and installs it",
    "expires in 30 days",
    "== 4. The owner issues an agent token",
    "agent view policy 1, expires_at ",
    "== 5. The agent pays a merchant 0.5 SOL",
    "verdict    ALLOW",
    "merchant 0.500000 SOL (+0.500000 SOL)",
    "verdict    ESCALATE: pending approval",
    "merchant 3.500000 SOL (+3.000000 SOL)",
    "verdict    DENY (403 policy_denied)",
    "reason     destinations.deny",
    "verdict    FREEZE (403 wallet_frozen)",
    "refused too: 403 wallet_frozen",
    "frozen: False; signer acknowledged: True",
    "merchant 3.600000 SOL (+0.100000 SOL)",
    "== 10. The owner checks that the unfreeze reached the signer (waiaas owner verify-order)",
    "command    waiaas owner verify-order --answer answer.json --order order.json",
    "result     verified: the enclave (session key ",
    "unfrozen (frozen: false,",
    "note       attestation mode none:",
    "== 11. The services are stopped",
    "the audit log's hash chain and its enclave receipts are verified",
    "audit      chain intact",
    "receipts   every enclave receipt verifies under the session key recorded before it",
    "every step behaved as expected",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.CompletedProcess[str], Path]]:
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    # subprocess.run with a timeout kills the demo if it hangs; the demo stops its own services on the way out.
    result = subprocess.run(
        [sys.executable, "-m", "policies.cli", "demo", "--run-dir", str(run_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    yield result, run_dir


def test_demo_exits_0_and_tells_the_whole_story(demo_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, run_dir = demo_run
    assert result.returncode == 0, result.stdout + result.stderr
    positions = [result.stdout.find(step) for step in STEPS]
    assert all(p >= 0 for p in positions), [s for s, p in zip(STEPS, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    assert "UNEXPECTED" not in result.stdout
    # The local chain has no Squads program: only there does the proxy accept a policy without a multisig, and
    # its log says so too.
    proxy_log = (run_dir / "logs" / "proxy.log").read_text(encoding="utf-8")
    assert "WAIAAS_REQUIRE_MULTISIG=false: policies that declare no Squads multisig are installed" in proxy_log
    signer_log = (run_dir / "logs" / "signer.log").read_text(encoding="utf-8")
    assert "WAIAAS_ENCLAVE_REQUIRE_MULTISIG=false: policies that declare no Squads multisig" in signer_log


def test_demo_prints_no_secret_and_its_logs_hold_none(demo_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, run_dir = demo_run
    owner_bytes = bytes(json.loads((run_dir / "owner.json").read_text()))
    owner_secret_forms = [
        owner_bytes[:32].hex(),
        base64.b64encode(owner_bytes[:32]).decode(),
        str(Keypair.from_bytes(owner_bytes)),  # base58 of the 64-byte keypair
        json.dumps(list(owner_bytes[:32]))[1:-1],
    ]
    unseal = (run_dir / "secrets" / paths.UNSEAL_SECRET_NAME).read_text()
    # The agent key's seed, as the signer unseals it from the state (review s21: the search covered no agent key).
    store = SqliteStore(run_dir / deployment.DATABASE)
    try:
        record = store.get_wallet(DEMO_WALLET)
    finally:
        store.close()
    binding = SealBinding(DEMO_WALLET, record.agent_pubkey, record.owner_pubkey)
    seed = unseal_agent_key(
        LocalSealer(read_operator_secret(run_dir / "secrets" / paths.UNSEAL_SECRET_NAME)), record.sealed_key, binding
    ).private_bytes_raw()
    seed_forms = [
        seed.hex(),
        base64.b64encode(seed).decode(),
        str(Keypair.from_seed(seed)),
        str(Pubkey.from_bytes(seed)),
    ]
    texts = {"stdout": result.stdout, "stderr": result.stderr}
    texts |= {str(p): p.read_text(errors="replace") for p in (run_dir / "logs").iterdir()}
    assert set(texts) >= {"stdout", str(run_dir / "logs" / "proxy.log"), str(run_dir / "logs" / "signer.log")}
    redacted = re.search(r"token      (waiaas_[0-9a-f]{16}_\*\*\*\*)", result.stdout)
    assert redacted, "the redacted token prefix is shown"
    for where, text in texts.items():
        assert not FULL_TOKEN.search(text), where
        assert unseal not in text, where
        for form in owner_secret_forms + seed_forms:
            assert form not in text, where


def test_redaction_keeps_none_of_the_secret() -> None:
    token = "waiaas_0123456789abcdef_" + "a_b-c" * 8 + "xyz"
    assert redact_token(token) == "waiaas_0123456789abcdef_****"
    assert redact_token("something_else_entirely") == "****"


def test_a_step_that_misbehaves_exits_1_and_stops_the_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the "denylisted" payment is now allowed: step 7 fails
    monkeypatch.setattr(demo_story, "BLOCKED", demo_story.MERCHANT)
    lines: list[str] = []
    port = free_port()
    assert run_demo(tmp_path / "run", port, lines.append) == demo.EXIT_MISBEHAVED
    output = "\n".join(lines)
    assert "UNEXPECTED: expected HTTP 403, got HTTP 200" in output
    assert "every step behaved" not in output
    with pytest.raises(httpx.ConnectError, match="Connection refused"):  # the services are stopped
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def _receipt_removed(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in answer.items() if key not in ("receipt", "receipt_signature")}


def _receipt_signature_flipped(answer: dict[str, Any]) -> dict[str, Any]:
    signature = bytearray(base64.b64decode(answer["receipt_signature"]))
    signature[0] ^= 1
    return {**answer, "receipt_signature": base64.b64encode(bytes(signature)).decode()}


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        (_receipt_removed, "the answer carries no order receipt"),
        (_receipt_signature_flipped, "order receipt signature invalid"),
    ],
    ids=["no receipt", "forged receipt"],
)
def test_an_unfreeze_the_owner_cannot_verify_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tamper: Callable[[dict[str, Any]], dict[str, Any]], why: str
) -> None:
    """The parent answers the owner's unfreeze without the signer's receipt, or with one it forged (as a taken-over
    parent could): the owner's ``verify-order`` step fails, and so does the demo. Before: the demo had no such step
    and exited 0."""
    owner_call = demo_story.Story.owner_call

    def hostile_parent(story: demo_story.Story, method: str, path: str, body: Any = None) -> httpx.Response:
        response = owner_call(story, method, path, body)
        if not path.endswith("/unfreeze"):
            return response
        return httpx.Response(response.status_code, json=tamper(response.json()))

    monkeypatch.setattr(demo_story.Story, "owner_call", hostile_parent)
    lines: list[str] = []
    assert run_demo(tmp_path / "run", free_port(), lines.append) == demo.EXIT_MISBEHAVED
    output = "\n".join(lines)
    assert "== 10. The owner checks that the unfreeze reached the signer" in output
    assert "   refused    owner verify-order: NOT VERIFIED: " in output
    assert why in output
    assert "UNEXPECTED: verify-order exited with 1: nothing shows that the signer applied this order" in output
    assert "every step behaved" not in output and "== 11." not in output


def test_services_that_do_not_start_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "selfhost" / "docker-compose.yml").read_text(encoding="utf-8")
    broken = text.replace('command: ["python", "-m", "parent_proxy"]', 'command: ["python", "-c", "exit(4)"]', 1)
    assert broken != text
    (tmp_path / "docker-compose.yml").write_text(broken, encoding="utf-8")
    monkeypatch.setattr(deployment, "COMPOSE_FILE", tmp_path / "docker-compose.yml")
    lines: list[str] = []
    assert run_demo(tmp_path / "run", free_port(), lines.append) == demo.EXIT_NOT_STARTED
    assert "the services did not start: proxy exited with 4" in "\n".join(lines)


def test_a_used_run_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "leftover").write_text("x")
    result = subprocess.run(
        [sys.executable, "-m", "policies.cli", "demo", "--run-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == demo.EXIT_NOT_STARTED
    assert "not empty" in result.stderr
