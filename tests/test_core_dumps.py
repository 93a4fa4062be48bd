"""No core dump of the signer or the proxy, however they are started (enclave_app.core_dumps,
parent_proxy.core_dumps, selfhost.lifetime.child_setup).

Review s21 (secret hygiene): `waiaas selfhost up` and `waiaas demo` started the signer with the caller's core-file
limit (the compose file's `core: 0` was not carried over), and a signer started by hand had it too: under a raised
soft limit (`ulimit -c unlimited`, common in a developer's shell), SIGABRT wrote a 40 MB core holding the unseal
secret. Each case raises the soft limit to the hard one first, so that the process would dump if nothing stopped
it. Linux only (/proc, prctl)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from selfhost.local_stack import ProcessGroup, base_env, free_port
from tests.proxy.proxy_process import proxy_env, wait_healthy

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl: Linux")

REPO = Path(__file__).resolve().parent.parent
START_SECONDS = 60.0
SOFT, HARD = resource.getrlimit(resource.RLIMIT_CORE)
needs_room = pytest.mark.skipif(HARD == 0, reason="the hard core-file limit is 0 here: nothing could dump anyway")
PROBE = """
import ctypes, importlib, resource, sys
module = importlib.import_module(sys.argv[1])
hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
applied = module.forbid_core_dumps()
libc = ctypes.CDLL(None)
print(applied, *resource.getrlimit(resource.RLIMIT_CORE), libc.prctl(module.PR_GET_DUMPABLE, 0, 0, 0, 0))
"""


def _raise_soft_limit() -> None:
    """preexec_fn: the child starts with its soft core-file limit at the hard one (as after `ulimit -c unlimited`)."""
    resource.setrlimit(resource.RLIMIT_CORE, (HARD, HARD))


def core_limits(pid: int) -> tuple[str, str]:
    """(soft, hard) of the process's core-file limit, as /proc/PID/limits shows them."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            soft, hard = line.split()[4:6]
            return soft, hard
    raise AssertionError("no core-file line in /proc/PID/limits")


def crash_leaves_no_core(process: subprocess.Popen[bytes], directory: Path) -> None:
    """SIGABRT (the default action dumps core), then no core file in ``directory``, the process's working
    directory. Checked only where the kernel writes cores there (``core_pattern`` a plain file name)."""
    process.send_signal(signal.SIGABRT)
    assert process.wait(timeout=20) == -signal.SIGABRT
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern:
        return  # dumps go to a handler or elsewhere: the limits above are what this machine lets us check
    time.sleep(0.5)
    assert [p.name for p in directory.iterdir() if p.name.startswith(pattern.split("%")[0])] == []


@pytest.fixture
def stopped() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


@needs_room
@pytest.mark.parametrize("module", ["enclave_app.core_dumps", "parent_proxy.core_dumps"])
def test_forbid_core_dumps_sets_the_limit_and_clears_the_dumpable_flag(module: str) -> None:
    # In a process of its own: the flag and the hard limit cannot be undone in this one.
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "0", "0", "0"]


@needs_room
@pytest.mark.slow
def test_a_signer_started_by_hand_cannot_dump_core(tmp_path: Path, stopped: list[subprocess.Popen[bytes]]) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(32).hex().encode())
    secret.chmod(0o400)
    socket_path = tmp_path / "signer.sock"
    env = {
        "PATH": "/usr/bin:/bin",
        "WAIAAS_ENCLAVE_LISTEN": f"unix:{socket_path}",
        "WAIAAS_ENCLAVE_NSM": "none",
        "WAIAAS_ENCLAVE_ALLOW_UNSAFE_NSM": "false",
        "WAIAAS_ENCLAVE_SEALER": "local",
        "WAIAAS_ENCLAVE_LOCAL_SECRET_FILE": str(secret),
    }
    log = tmp_path / "signer.log"
    with log.open("wb") as out:
        signer = subprocess.Popen(
            [sys.executable, "-m", "enclave_app"], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
            stdout=out, stderr=out, preexec_fn=_raise_soft_limit,  # noqa: PLW1509 (one setrlimit call)
        )  # fmt: skip
    stopped.append(signer)
    deadline = time.monotonic() + START_SECONDS
    while not socket_path.exists():
        assert signer.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    assert core_limits(signer.pid) == ("0", "0")
    crash_leaves_no_core(signer, tmp_path)


@needs_room
@pytest.mark.slow
def test_a_proxy_started_by_hand_cannot_dump_core(tmp_path: Path, stopped: list[subprocess.Popen[bytes]]) -> None:
    port = free_port()
    env = proxy_env(tmp_path / "waiaas.db", tmp_path, port)
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        proxy = subprocess.Popen(
            [sys.executable, "-m", "parent_proxy"], cwd=tmp_path, env=env, stdout=out, stderr=out,
            preexec_fn=_raise_soft_limit,  # noqa: PLW1509 (one setrlimit call)
        )  # fmt: skip
    stopped.append(proxy)
    wait_healthy(proxy, port, log)
    assert core_limits(proxy.pid) == ("0", "0")
    crash_leaves_no_core(proxy, tmp_path)


@pytest.fixture
def raised_soft_limit() -> Iterator[None]:
    """This test process's soft core-file limit at the hard one for the test (the runner's children inherit it
    unless something lowers it), restored after (a soft limit can always go back down)."""
    resource.setrlimit(resource.RLIMIT_CORE, (HARD, HARD))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (SOFT, HARD))


@needs_room
def test_every_process_the_runner_starts_has_no_core_limit(tmp_path: Path, raised_soft_limit: None) -> None:
    group = ProcessGroup(tmp_path)
    try:
        child = group.spawn("child", [sys.executable, "-c", "import time; time.sleep(60)"], base_env(tmp_path))
        assert core_limits(os.getpid()) != ("0", "0")  # the runner's own, raised
        assert core_limits(child.pid) == ("0", "0")
    finally:
        group.stop_all()
