"""Test-side helpers around the local runner (selfhost/local_stack.py, production code): the runner itself is
imported from there, not restated; what stays here is only for tests."""

from __future__ import annotations

import importlib.util
import shutil

from selfhost.local_stack import (
    LocalService,
    RunningStack,
    StackError,
    free_port,
    plan,
    run_stack,
)

__all__ = ["LocalService", "RunningStack", "StackError", "command_exists", "free_port", "plan", "run_stack"]


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
