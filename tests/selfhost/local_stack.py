"""Test-side helpers around the local runner (selfhost/local_stack.py, production code): the runner itself is
imported from there, not restated; what stays here is only for tests."""

from __future__ import annotations

import importlib.util
import secrets
import shutil
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from selfhost import paths
from selfhost.local_stack import (
    LocalService,
    RunningStack,
    StackError,
    free_port,
    plan,
    run_stack,
)

__all__ = [
    "CONTAINER_PORT",
    "LocalService",
    "RunningStack",
    "StackError",
    "command_exists",
    "free_port",
    "plan",
    "run_stack",
    "run_stack_on",
]

CONTAINER_PORT = 8080
"""The proxy's port inside its container (selfhost/docker-compose.yml), which the local runs publish."""


def run_stack_on(model: Any, root: Path, port: int) -> AbstractContextManager[RunningStack]:
    """`run_stack` of every service with a fresh random unseal secret, the proxy published on 127.0.0.1:``port``."""
    secret = secrets.token_urlsafe(32).encode()
    return run_stack(model, root, secret_values={paths.UNSEAL_SECRET_NAME: secret}, published={CONTAINER_PORT: port})


def command_exists(argv: list[str]) -> bool:
    """Whether the program ``argv`` names exists in this checkout: for ``python -m X``, module X (or package X with
    a ``__main__``); otherwise an executable on PATH."""
    if argv[0] in ("python", "python3") and len(argv) > 2 and argv[1] == "-m":
        try:
            spec = importlib.util.find_spec(argv[2])
            if spec is not None and spec.submodule_search_locations is not None:
                spec = importlib.util.find_spec(f"{argv[2]}.__main__")
        except ModuleNotFoundError:
            return False
        return spec is not None
    return shutil.which(argv[0]) is not None
