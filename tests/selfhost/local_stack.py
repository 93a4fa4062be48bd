"""Start the services of selfhost/docker-compose.yml as local processes, from compose's own normalized model.

Nothing about the commands is restated here: each service's ``entrypoint`` + ``command``, ``environment``,
secrets and healthcheck are read from ``docker compose config --format json`` and started as they are, after a
fixed, documented translation from the container's world to a temporary directory on this machine:

============================  ===========================================================================
in the container              locally
============================  ===========================================================================
``python``                    this interpreter (``sys.executable``: the venv with the project installed)
``/run/waiaas/...``           ``<root>/socket/...``   (the shared socket volume; selfhost.paths)
``/var/lib/waiaas/state``     ``<root>/state``        (state volume)
``/run/secrets/<target>``     ``<root>/secrets/<target>``: the test's unseal secret, mode 0400
``WAIAAS_HOST=0.0.0.0``       ``127.0.0.1`` (the container's interfaces become this machine's loopback)
published port target 8080    a free loopback port, in ``WAIAAS_PORT`` and in the healthcheck URL
process environment           PATH, HOME, PYTHONPATH (this checkout) and the service's ``environment``: nothing
                              else of the caller's
============================  ===========================================================================

A value that mentions any other container path is refused (selfhost.paths.PathMappingError), so a new mount in
the compose file fails here until its mapping is added. What this cannot show: the container isolation itself
(no network namespace, read-only root, dropped capabilities), which test_compose.py checks on the model, and that
the images build (no Docker engine in CI).
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from selfhost import paths
from selfhost.paths import local_dirs, translate

START_ORDER = ("signer", "proxy")
HEALTH_TIMEOUT_SECONDS = 60.0
HEALTH_POLL_SECONDS = 0.25
STOP_TIMEOUT_SECONDS = 10.0
LOG_TAIL_CHARS = 4000


class StackError(RuntimeError):
    """A service did not start or did not become healthy; the message carries the tail of its log."""


@dataclass(frozen=True)
class LocalService:
    name: str
    argv: list[str]
    env: dict[str, str]
    healthcheck: list[str] | None
    secrets: dict[Path, str] = field(default_factory=dict)
    """Local secret file -> the compose secret it stands for (its content comes from the caller)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
            target, local = int(port["target"]), published[int(port["target"])]
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


REPO = Path(__file__).resolve().parents[2]


def _base_env(root: Path) -> dict[str, str]:
    # PYTHONPATH: the services import the same source tree as the tests, whatever the venv has installed.
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(root),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(REPO),
    }


def _tail(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    return text[-LOG_TAIL_CHARS:]


def _healthy(service: LocalService, root: Path) -> bool:
    if service.healthcheck is None:
        return True
    result = subprocess.run(
        service.healthcheck, env=_base_env(root), cwd=root, capture_output=True, timeout=30, check=False
    )
    return result.returncode == 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECONDS)


@dataclass
class RunningStack:
    root: Path
    services: dict[str, LocalService]
    processes: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]

    def log(self, name: str) -> str:
        return _tail(self.logs[name])


@contextlib.contextmanager
def run_stack(
    model: Mapping[str, Any],
    root: Path,
    *,
    secret_values: Mapping[str, bytes],
    published: Mapping[int, int],
    only: Sequence[str] = START_ORDER,
) -> Iterator[RunningStack]:
    """Start the services (all, or ``only`` these) in :data:`START_ORDER`, each once the previous one's
    healthcheck passes; stop them all (in reverse order, our own processes only) on exit."""
    services = plan(model, root, published=published, only=only)
    for directory in local_dirs(root).values():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    handles: list[IO[bytes]] = []
    stack = RunningStack(root, services, processes, logs)
    try:
        for name, service in services.items():
            for path, source in service.secrets.items():
                path.unlink(missing_ok=True)
                path.write_bytes(secret_values[source])
                path.chmod(0o400)
            logs[name] = root / "logs" / f"{name}.log"
            handle = logs[name].open("wb")
            handles.append(handle)
            processes[name] = subprocess.Popen(
                service.argv,
                env={**_base_env(root), **service.env},
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
            while not _healthy(service, root):
                if processes[name].poll() is not None:
                    raise StackError(f"{name} exited with {processes[name].returncode}:\n{stack.log(name)}")
                if time.monotonic() > deadline:
                    raise StackError(f"{name} not healthy after {HEALTH_TIMEOUT_SECONDS} s:\n{stack.log(name)}")
                time.sleep(HEALTH_POLL_SECONDS)
        yield stack
    finally:
        for name in reversed(list(processes)):
            _stop(processes[name])
        for handle in handles:
            handle.close()


def command_exists(argv: list[str]) -> bool:
    """Whether the program ``argv`` names exists here: for ``python -m X``, module X (or package X with a
    ``__main__``); otherwise an executable on PATH."""
    if argv[0] in ("python", "python3") and len(argv) > 2 and argv[1] == "-m":
        try:
            spec = importlib.util.find_spec(argv[2])
            if spec is not None and spec.submodule_search_locations is not None:
                spec = importlib.util.find_spec(f"{argv[2]}.__main__")
        except ModuleNotFoundError:
            return False
        return spec is not None
    return shutil.which(argv[0]) is not None
