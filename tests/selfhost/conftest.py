"""Fixtures for the self-host bundle tests: a throwaway env file and unseal secret, and compose's normalized model
of ``selfhost/docker-compose.yml`` built from them (once per session: the Go binary takes a moment to start)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from selfhost.deployment import loopback_origins
from tests.selfhost.compose_config import COMPOSE_FILE, load_config, write_env_file

EnvFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def owner_key() -> Ed25519PrivateKey:
    """The owner allowed to create wallets on the live stacks (WAIAAS_OWNER_KEYS). Never printed."""
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def owner_pubkey(owner_key: Ed25519PrivateKey) -> str:
    return str(Pubkey.from_bytes(owner_key.public_key().public_bytes_raw()))


@pytest.fixture(scope="session")
def unseal_secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random unseal secret for the tests, mode 0400. Its content is never printed."""
    path = tmp_path_factory.mktemp("secrets") / "waiaas_unseal_secret"
    path.write_text(secrets.token_urlsafe(32), encoding="ascii")
    path.chmod(0o400)
    return path


@pytest.fixture(scope="session")
def base_env(owner_pubkey: str, unseal_secret_file: Path) -> dict[str, str]:
    """What an operator puts in selfhost/.env, following .env.example: the embedded ``litesvm`` chain, which has no
    Squads program, so with ``WAIAAS_REQUIRE_MULTISIG=false`` (the live stacks install the example policy, which
    declares no multisig; the compose default, true, is tested without it)."""
    return {
        "WAIAAS_OWNER_KEYS": owner_pubkey,
        "WAIAAS_CHAIN": "litesvm",
        "WAIAAS_REQUIRE_MULTISIG": "false",
        "WAIAAS_PUBLIC_ORIGINS": "http://127.0.0.1:8080,http://localhost:8080",  # .env.example's
        "WAIAAS_UNSEAL_SECRET_PATH": str(unseal_secret_file),
    }


@pytest.fixture(scope="session")
def make_env_file(tmp_path_factory: pytest.TempPathFactory, base_env: dict[str, str]) -> EnvFactory:
    """``make_env_file(**overrides)``: an env file with ``base_env`` plus overrides (a value of None drops it)."""

    def make(**overrides: str | None) -> Path:
        values = {**base_env, **overrides}
        kept = {name: value for name, value in values.items() if value is not None}
        return write_env_file(tmp_path_factory.mktemp("env") / "selfhost.env", kept)

    return make


@pytest.fixture(scope="session")
def compose_model(make_env_file: EnvFactory) -> dict[str, Any]:
    """The normalized model of the real compose file with the default settings."""
    return load_config(COMPOSE_FILE, make_env_file())


@pytest.fixture(scope="session")
def compose_model_on(make_env_file: EnvFactory) -> Callable[[int], dict[str, Any]]:
    """``compose_model_on(port)``: the model with the API published on ``port`` and its public origins those of that
    port (as `selfhost.deployment.run_local` writes them): what the live stacks run, owner requests signed for
    ``http://127.0.0.1:<port>``."""

    def model(port: int) -> dict[str, Any]:
        origins = ",".join(loopback_origins(port))
        return load_config(COMPOSE_FILE, make_env_file(WAIAAS_PUBLISH_PORT=str(port), WAIAAS_PUBLIC_ORIGINS=origins))

    return model
