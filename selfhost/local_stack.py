"""Run the services of selfhost/docker-compose.yml as local processes, from compose's normalized model.

Nothing about the commands is restated here: each service's ``entrypoint`` + ``command``, ``environment``,
secrets and healthcheck come from the model (:mod:`selfhost.compose_model`) and are started as they are, after a
fixed, documented translation from the container's world to a local root directory:

============================  ===========================================================================
in the container              locally
============================  ===========================================================================
``python``                    this interpreter (``sys.executable``: the venv with the project installed)
``/run/waiaas/...``           ``<root>/socket/...``   (the shared socket volume; selfhost.paths)
``/var/lib/waiaas/state``     ``<root>/state``        (state volume)
``/var/lib/waiaas/sealed``    ``<root>/sealed``       (sealed-keys volume)
``/run/secrets/<target>``     ``<root>/secrets/<target>``: the Compose secret's file, mode 0400 (the host file
                              must pass the signer's own mode rule: `enclave_app.secret_file`)
``ulimits: core: 0``          core-file limit 0, soft and hard, for every process started here
                              (:mod:`selfhost.lifetime`)
``WAIAAS_HOST=0.0.0.0``       ``127.0.0.1`` (the container's interfaces become this machine's loopback)
published port target 8080    the chosen local port, in ``WAIAAS_PORT`` and in the healthcheck URL
process environment           PATH, HOME, PYTHONPATH (this checkout), the images' PYTHON* ``ENV`` and the
                              service's ``environment``: nothing else of the caller's
============================  ===========================================================================

A value that mentions any other container path is refused (selfhost.paths.PathMappingError), so a new mount in
the compose file fails here until its mapping is added. What this cannot give: the container isolation itself
(no network namespace, read-only root, dropped capabilities); tests/selfhost/test_compose.py checks it on the
model.

Processes: each runs in its own session (a Ctrl-C in the terminal, or its hangup, reaches only the runner, which
then stops the services in reverse order), with stdout and stderr in ``<root>/logs/<name>.log``, and with a
parent-death signal (:mod:`selfhost.lifetime`): a runner killed outright takes its services with
it. Stopping is SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_SECONDS`; only the processes started here are
signalled. A service counts as healthy once its healthcheck passes while its process is still running (a
healthcheck answered by another server on the same port does not count), and a published port must be free
before anything is started (:func:`check_port_free`). A port chosen for a service (:func:`free_port`) lies outside
the kernel's ephemeral range, so nothing on the machine is given it by chance before the service binds it.

Errors: :class:`StackError` (a service exited or did not become healthy in time; the message carries the tail of
its log, which the services keep free of secrets).
"""

from __future__ import annotations

import contextlib
import errno
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from enclave_app.errors import SecretFileError
from enclave_app.secret_file import check_secret_file_mode
from selfhost import paths
from selfhost.lifetime import child_setup, signals_held
from selfhost.paths import local_dirs, translate

START_ORDER: Final = ("signer", "proxy")
HEALTH_TIMEOUT_SECONDS: Final = 60.0
HEALTH_POLL_SECONDS: Final = 0.25
HEALTHCHECK_RUN_SECONDS: Final = 30.0
STOP_TIMEOUT_SECONDS: Final = 10.0
LOG_TAIL_CHARS: Final = 4000
REPO: Final = Path(__file__).resolve().parents[1]
PORT_RANGE_FILE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")
"""Linux: the range the kernel takes a local port from when none is named (connect without bind, bind to port 0)."""
DEFAULT_EPHEMERAL_RANGE: Final = (49152, 65535)
"""Where there is no :data:`PORT_RANGE_FILE`: IANA's dynamic ports (RFC 6335), the range macOS and Windows use."""
FIRST_UNPRIVILEGED_PORT: Final = 1024
MAX_PORT: Final = 65535
FREE_PORT_TRIES: Final = 50
"""Candidates :func:`free_port` checks before it gives up (with a few hundred of the ports taken, fifty taken ones in
a row come with a probability below 1e-100)."""
_PORT_CHOICE: Final = random.SystemRandom()
"""The operating system's randomness: processes forked from one parent do not choose alike."""


class StackError(RuntimeError):
    """A service did not start or did not become healthy; the message carries the tail of its log."""


@dataclass(frozen=True)
class LocalService:
    name: str
    argv: list[str]
    env: dict[str, str] = field(repr=False)
    healthcheck: list[str] | None
    secrets: dict[Path, str] = field(default_factory=dict)
    """Local secret file -> the compose secret it stands for."""


def ephemeral_port_range() -> tuple[int, int]:
    """The ports the kernel hands out by itself (an outgoing connection, a bind to port 0), inclusive: read from
    :data:`PORT_RANGE_FILE`, or :data:`DEFAULT_EPHEMERAL_RANGE` where there is no such file. :class:`StackError` if
    it holds anything but two port numbers, low then high."""
    path = PORT_RANGE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return DEFAULT_EPHEMERAL_RANGE
    except OSError as exc:
        raise StackError(f"cannot read {path}: {exc.strerror}") from exc
    fields = text.split()
    if len(fields) != 2 or not all(f.isascii() and f.isdigit() for f in fields):
        raise StackError(f"{path} does not hold a port range (two numbers, low then high)")
    low, high = int(fields[0]), int(fields[1])
    if not 0 < low <= high <= MAX_PORT:
        raise StackError(f"{path} does not hold a port range (two numbers, low then high)")
    return low, high


def free_port(port_range: tuple[int, int] | None = None, *, tries: int = FREE_PORT_TRIES) -> int:
    """A loopback port for a server that a subprocess starts soon after: one that binds now as the server will bind
    it (127.0.0.1, SO_REUSEADDR), chosen at random among the unprivileged ports outside the kernel's ephemeral range
    (``port_range``, by default :func:`ephemeral_port_range`). The kernel never gives such a port to anything by
    itself, so between this check and the server's bind only another program that names the port could take it (a
    random choice among some thirty thousand makes two callers of this function unlikely to meet). Up to ``tries``
    candidates are checked; :class:`StackError` if none binds."""
    low, high = ephemeral_port_range() if port_range is None else port_range
    below = range(FIRST_UNPRIVILEGED_PORT, max(low, FIRST_UNPRIVILEGED_PORT))
    above = range(max(high + 1, FIRST_UNPRIVILEGED_PORT), MAX_PORT + 1)
    outside = len(below) + len(above)
    if outside == 0:
        raise StackError(f"the ephemeral port range {low}-{high} leaves no unprivileged port outside it")
    for _ in range(tries):
        index = _PORT_CHOICE.randrange(outside)
        port = below[index] if index < len(below) else above[index - len(below)]
        try:
            _bind_loopback(port)
        except OSError:
            continue
        return port
    raise StackError(f"no free port on 127.0.0.1 outside the ephemeral port range {low}-{high} in {tries} tries")


def _bind_loopback(port: int) -> None:
    """Bind ``127.0.0.1:port`` as the services bind it (SO_REUSEADDR), and let it go; OSError if it cannot be."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def check_port_free(port: int) -> None:
    """:class:`StackError` unless ``127.0.0.1:port`` can be bound now (as the proxy will bind it, SO_REUSEADDR)."""
    try:
        _bind_loopback(port)
    except OSError as exc:
        why = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound: {exc.strerror}"
        raise StackError(
            f"port {port} on 127.0.0.1 {why} (another `waiaas selfhost up`, the compose bundle, or another "
            "server?): choose another with --port (in the compose bundle, WAIAAS_PUBLISH_PORT); nothing was "
            "started"
        ) from exc


def _argv(svc: Mapping[str, Any]) -> list[str]:
    argv = list(svc.get("entrypoint") or []) + list(svc.get("command") or [])
    if not argv:
        raise StackError("the compose file must give each service an explicit command")
    return argv


def _executable(argv: list[str]) -> list[str]:
    return [sys.executable, *argv[1:]] if argv[0] in ("python", "python3") else argv


def _healthcheck(svc: Mapping[str, Any]) -> list[str] | None:
    check = svc.get("healthcheck") or {}
    test = list(check.get("test") or [])
    if not test or check.get("disable") or test[0] == "NONE":
        return None
    if test[0] != "CMD":
        raise StackError("healthchecks must use the exec form (CMD), not a shell")
    return test[1:]


def plan(
    model: Mapping[str, Any], root: Path, *, published: Mapping[int, int], only: Sequence[str] = START_ORDER
) -> dict[str, LocalService]:
    """The local processes for the services ``only`` of ``model`` (in :data:`START_ORDER`), paths under ``root``.

    ``published`` maps each container port (a ``ports[].target``) to the local port that replaces it.
    """
    services: dict[str, LocalService] = {}
    for name in (name for name in START_ORDER if name in only):
        svc = model["services"][name]
        env = {key: translate(str(value), root) for key, value in (svc.get("environment") or {}).items()}
        if env.get("WAIAAS_HOST") == "0.0.0.0":  # noqa: S104 (the value being replaced, not bound)
            env["WAIAAS_HOST"] = "127.0.0.1"
        healthcheck = _healthcheck(svc)
        for port in svc.get("ports") or []:
            target = int(port["target"])
            if target not in published:
                raise StackError(f"{name}: no local port given for container port {target}")
            local = published[target]
            if env.get("WAIAAS_PORT") == str(target):
                env["WAIAAS_PORT"] = str(local)
            if healthcheck:
                healthcheck = [arg.replace(f"127.0.0.1:{target}/", f"127.0.0.1:{local}/") for arg in healthcheck]
        secret_files: dict[Path, str] = {}
        for secret in svc.get("secrets") or []:
            target = secret.get("target") or secret["source"]
            container_path = target if target.startswith("/") else f"{paths.SECRETS_DIR}/{target}"
            secret_files[Path(translate(container_path, root))] = secret["source"]
        services[name] = LocalService(
            name=name,
            argv=[translate(arg, root) for arg in _executable(_argv(svc))],
            env=env,
            healthcheck=[translate(arg, root) for arg in _executable(healthcheck)] if healthcheck else None,
            secrets=secret_files,
        )
    return services


def base_env(root: Path) -> dict[str, str]:
    """The only variables a service gets besides its compose ``environment``."""
    # PYTHONPATH: the services import the same source tree as the runner, whatever the venv has installed.
    # PYTHONDONTWRITEBYTECODE and PYTHONUNBUFFERED: as the images' ENV sets them (logs reach the file at once).
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(root),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(REPO),
    }


def tail(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    return text[-LOG_TAIL_CHARS:]


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds; reaps it either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


@dataclass
class ProcessGroup:
    """Processes started by this runner, their logs, and the order to stop them in (reverse of start)."""

    root: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    _handles: list[IO[bytes]] = field(default_factory=list)

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        (self.root / "logs").mkdir(mode=0o700, parents=True, exist_ok=True)
        self.logs[name] = self.root / "logs" / f"{name}.log"
        handle = self.logs[name].open("ab")
        self._handles.append(handle)
        with signals_held() as mask:  # forked and recorded before a stop signal is handled (selfhost.lifetime)
            process = subprocess.Popen(  # noqa: S603 (argv from the compose model or this package)
                list(argv),
                env=dict(env),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=child_setup(mask),  # noqa: PLW1509 (no threads here; selfhost.lifetime)
            )
            self.processes[name] = process
        return process

    def wait_healthy(self, name: str, healthy: Callable[[], bool], timeout: float = HEALTH_TIMEOUT_SECONDS) -> None:
        """Poll ``healthy`` until it says yes while the process still runs; :class:`StackError` if the process
        exits (even right after a passing check: something else answered it) or time runs out."""
        process = self.processes[name]
        deadline = time.monotonic() + timeout
        while True:
            passed = healthy()
            if process.poll() is not None:
                raise StackError(f"{name} exited with {process.returncode}:\n{tail(self.logs[name])}")
            if passed:
                return
            if time.monotonic() > deadline:
                raise StackError(f"{name} not healthy after {timeout:g} s:\n{tail(self.logs[name])}")
            time.sleep(HEALTH_POLL_SECONDS)

    def exited(self) -> dict[str, int]:
        """The processes that have stopped on their own, with their exit codes."""
        return {name: code for name, p in self.processes.items() if (code := p.poll()) is not None}

    def stop_all(self) -> None:
        """Stop every process, last started first; a stop signal meanwhile waits until all are stopped."""
        with signals_held():
            for name in reversed(list(self.processes)):
                stop_process(self.processes[name])
            for handle in self._handles:
                handle.close()
            self._handles.clear()

    def log(self, name: str) -> str:
        return tail(self.logs[name])


def run_healthcheck(argv: Sequence[str], root: Path) -> bool:
    """Run a compose healthcheck command (already translated); healthy = exit status 0."""
    process = None
    try:
        with signals_held() as mask:  # as in ProcessGroup.spawn
            process = subprocess.Popen(  # noqa: S603 (the compose healthcheck, translated)
                list(argv),
                env=base_env(root),
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=child_setup(mask),  # noqa: PLW1509 (no threads here; selfhost.lifetime)
            )
        return process.wait(timeout=HEALTHCHECK_RUN_SECONDS) == 0
    except subprocess.TimeoutExpired:
        return False
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


def _install_secret(local: Path, source: str, model: Mapping[str, Any], values: Mapping[str, bytes] | None) -> None:
    if values is not None:
        local.unlink(missing_ok=True)
        local.write_bytes(values[source])
        local.chmod(0o400)
        return
    host = Path(model["secrets"][source]["file"])
    if not host.is_file():
        raise StackError(f"secret {source}: no file at {host}")
    try:
        check_secret_file_mode(host, host.stat().st_mode)  # the signer's own rule (enclave_app.secret_file)
    except SecretFileError as exc:
        raise StackError(f"secret {source}: {exc}") from None
    if host.resolve() != local.resolve():
        local.unlink(missing_ok=True)
        shutil.copyfile(host, local)
        local.chmod(0o400)


def _health_probe(service: LocalService, root: Path) -> Callable[[], bool]:
    check = service.healthcheck
    return lambda: check is None or run_healthcheck(check, root)


@dataclass
class RunningStack:
    root: Path
    services: dict[str, LocalService]
    group: ProcessGroup

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        return self.group.processes

    @property
    def logs(self) -> dict[str, Path]:
        return self.group.logs

    def log(self, name: str) -> str:
        return self.group.log(name)


@contextlib.contextmanager
def run_stack(
    model: Mapping[str, Any],
    root: Path,
    *,
    published: Mapping[int, int],
    secret_values: Mapping[str, bytes] | None = None,
    only: Sequence[str] = START_ORDER,
    health_timeout: float = HEALTH_TIMEOUT_SECONDS,
) -> Iterator[RunningStack]:
    """Start the services (all, or ``only`` these) in :data:`START_ORDER`, each once the previous one's
    healthcheck passes; stop them all (in reverse order, our own processes only) on exit, error or not.

    Secrets come from the files the model's top-level ``secrets`` name (or, for tests, from ``secret_values``).
    """
    services = plan(model, root, published=published, only=only)
    for directory in local_dirs(root).values():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    group = ProcessGroup(root)
    try:
        for name, service in services.items():
            for path, source in service.secrets.items():
                _install_secret(path, source, model, secret_values)
            group.spawn(name, service.argv, {**base_env(root), **service.env})
            group.wait_healthy(name, _health_probe(service, root), health_timeout)
        yield RunningStack(root, services, group)
    finally:
        group.stop_all()
