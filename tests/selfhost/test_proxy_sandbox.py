"""The proxy serves inside the systemd sandbox the cloud hosts start it in (`cdk.service_sandbox`).

No systemd runs here, so the sandbox's seccomp half is loaded by tests/support/systemd_sandbox.py from the very
lines the boot script writes into the unit, and the proxy's own command from the compose file runs under it, with
its state in DynamoDB (moto's server, reached over HTTP as the cloud hosts reach the table) and the signer beside it
as in the self-host bundle. The first tests show the emulation refuses what the lines take away, so that the
proxy's passing run below means the lines allow what the proxy does: serve, reach its store and the signer, sign
and escalate. What the emulation cannot load (mounts, namespaces, capabilities) is listed in its docstring.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import boto3
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from moto.server import ThreadedMotoServer

from cdk.service_sandbox import UNIT_TEXT
from parent_proxy.store.dynamodb import create_table
from tests.proxy.locked_bucket import create_locked_bucket
from tests.selfhost.live_wallet import SOL, new_wallet
from tests.selfhost.local_stack import free_port, run_stack_on
from tests.support.aws_env import TEST_CREDENTIALS
from tests.support.systemd_sandbox import SIGSYS_EXIT, available

pytestmark = pytest.mark.skipif(available() is not None, reason=f"no seccomp emulation here: {available()}")

TABLE = "waiaas-sandboxed"
BUCKET = "waiaas-data-sandboxed"
REGION = TEST_CREDENTIALS["AWS_DEFAULT_REGION"]


@pytest.fixture(scope="module")
def unit_lines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("unit") / "proxy-sandbox.conf"
    path.write_text(UNIT_TEXT + "\n", encoding="utf-8")
    return path


def sandboxed(unit_lines: Path, *argv: str) -> list[str]:
    return [sys.executable, "-m", "tests.support.systemd_sandbox", str(unit_lines), "--", *argv]


def run_python(unit_lines: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    argv = sandboxed(unit_lines, sys.executable, "-c", code)
    return subprocess.run(argv, check=False, capture_output=True, text=True, env=env, timeout=60)


# ----------------------------------------------------------------- 1. the emulation refuses what the lines take away

REFUSED = {
    "a raw packet socket": (
        "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
        "Address family not supported",
    ),
    "writable and executable memory": (
        "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)",
        "Operation not permitted",
    ),
    "a set-user-id bit": ("import os, tempfile; f = tempfile.mkstemp()[1]; os.chmod(f, 0o4700)", "not permitted"),
    "a set-user-id file created": (
        "import os, tempfile; os.open(tempfile.mkdtemp() + '/f', os.O_CREAT | os.O_WRONLY, 0o4700)",
        "not permitted",
    ),
    "another execution domain": (
        "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.personality(0x0040000) == -1, 'personality changed'; raise OSError(ctypes.get_errno(), 'p')",
        "[Errno 1] p",
    ),
    "joining a namespace": (
        "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); fd = os.open('/proc/self/ns/uts', os.O_RDONLY)\n"
        "assert libc.setns(fd, 0) == -1, 'setns succeeded'; raise OSError(ctypes.get_errno(), 'setns')",
        "[Errno 1] setns",
    ),
    "a user namespace": (
        "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.unshare(0x10000000) == -1, 'unshare succeeded'; raise OSError(ctypes.get_errno(), 'unshare')",
        "[Errno 1] unshare",
    ),
}


@pytest.mark.parametrize("what", sorted(REFUSED))
def test_the_emulation_refuses(unit_lines: Path, what: str) -> None:
    code, error = REFUSED[what]
    result = run_python(unit_lines, code)
    assert result.returncode == 1 and error in result.stderr, result.stderr


@pytest.mark.parametrize(
    "code",
    [
        "import os; os.setuid(0)",  # @privileged
        "import ctypes; ctypes.CDLL(None).mount(b'none', b'/mnt', b'tmpfs', 0, None)",  # @mount (not in the allow list)
        "import ctypes; ctypes.CDLL(None).ptrace(16, 1, 0, 0)",  # PTRACE_ATTACH: @debug
    ],
)
def test_the_emulation_kills_a_call_outside_the_list(unit_lines: Path, code: str) -> None:
    assert run_python(unit_lines, code).returncode == SIGSYS_EXIT


def test_the_emulation_lets_through_what_a_service_does(unit_lines: Path) -> None:
    """Threads (glibc falls back from ``clone3`` to ``clone``), the core-file limit, the dumpable flag, and a socket
    of each family a host's proxy opens: the test stack below reaches its signer over a Unix socket and everything
    else on 127.0.0.1, so the vsock (the enclave) and netlink (glibc's address lookups with ``AI_ADDRCONFIG``)
    families are opened here."""
    code = (
        "import ctypes, resource, socket, threading\n"
        "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
        "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
        "assert ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) == 0\n"
        "for family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, socket.AF_VSOCK):\n"
        "    socket.socket(family, socket.SOCK_STREAM).close()\n"
        "socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()\n"
        "assert socket.getaddrinfo('localhost', 80, flags=socket.AI_ADDRCONFIG)\n"
        "print('done')\n"
    )
    result = run_python(unit_lines, code)
    assert result.returncode == 0 and result.stdout.split() == ["thread", "done"], result.stderr


# ------------------------------------------------------------------------------- 2. the proxy serves under them


def moto_client(endpoint: str, service: Literal["dynamodb", "s3"] = "dynamodb") -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=TEST_CREDENTIALS["AWS_SESSION_TOKEN"],
    )


@pytest.fixture(scope="module")
def dynamodb_server() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        create_table(moto_client(endpoint), TABLE)
        create_locked_bucket(moto_client(endpoint, "s3"), BUCKET, REGION)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sandboxed_stack(
    compose_model_on: Callable[[int], dict[str, Any]],
    unit_lines: Path,
    dynamodb_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Any]]:
    port = free_port()
    model = copy.deepcopy(compose_model_on(port))
    proxy = model["services"]["proxy"]
    proxy["command"] = ["python", "-m", "tests.support.systemd_sandbox", str(unit_lines), "--", *proxy["command"]]
    proxy["environment"] = {
        **proxy["environment"],
        **TEST_CREDENTIALS,
        "WAIAAS_STATE": f"dynamodb:{TABLE}@{REGION}",
        "AWS_ENDPOINT_URL": dynamodb_server,
        # As on the hosts: a Solana RPC endpoint, not the embedded chain (its JIT needs executable memory, which
        # MemoryDenyWriteExecute refuses). Nothing in this test reads the chain.
        "WAIAAS_CHAIN": f"rpc:http://127.0.0.1:{free_port()}",
    }
    with run_stack_on(model, tmp_path_factory.mktemp("sandboxed"), port) as stack:
        yield f"http://127.0.0.1:{port}", stack


def test_the_proxy_signs_and_escalates_inside_the_sandbox(
    sandboxed_stack: tuple[str, Any], dynamodb_server: str, owner_key: Ed25519PrivateKey
) -> None:
    base, stack = sandboxed_stack
    assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
    wallet = new_wallet(base, owner_key)
    allowed = wallet.sign(wallet.pay(SOL // 2))
    assert allowed.status_code == 200 and allowed.json()["status"] == "signed", allowed.text
    pending = wallet.sign(wallet.pay(3 * SOL))
    assert pending.status_code == 202, pending.text
    metrics = httpx.get(f"{base}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert stack.processes["proxy"].poll() is None, stack.log("proxy")
    assert "Traceback" not in stack.log("proxy")
    # The state went to the table over HTTP, as on the hosts (not to a file the compose default names).
    table = moto_client(dynamodb_server)
    assert table.scan(TableName=TABLE, Select="COUNT")["Count"] > 0


def test_the_audit_export_writes_inside_the_sandbox(
    sandboxed_stack: tuple[str, Any], dynamodb_server: str, owner_key: Ed25519PrivateKey, unit_lines: Path
) -> None:
    """The export unit's command (`cdk.user_data.audit_export_command`), from the table to the bucket, under the
    same lines."""
    base, _stack = sandboxed_stack
    new_wallet(base, owner_key)  # at least one audit record to export
    command = ["-m", "policies.cli", "audit", "export", "--state", f"dynamodb:{TABLE}@{REGION}"]
    command += ["--bucket", f"{BUCKET}@{REGION}", "--prefix", "audit/"]
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "AWS_ENDPOINT_URL": dynamodb_server,
        **TEST_CREDENTIALS,
    }
    result = subprocess.run(
        sandboxed(unit_lines, sys.executable, *command), check=False, capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit export: OK" in result.stdout + result.stderr
    listed = moto_client(dynamodb_server, "s3").list_objects_v2(Bucket=BUCKET, Prefix="audit/")
    assert listed["KeyCount"] >= 1
