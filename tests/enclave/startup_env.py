"""The environment of a self-hosted enclave's start-up (Unix socket, development NSM, local sealer), with changes,
and the enclave app served from such an environment."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from enclave_app.__main__ import serve
from enclave_app.client import EnclaveClient
from enclave_app.protocol import StatusResponse
from enclave_app.settings import load_settings

T = TypeVar("T")


def enclave_env(tmp_path: Path, **changes: str | None) -> dict[str, str]:
    secret = tmp_path / "secret"
    secret.write_bytes(b"operator secret for the tests!!\n")
    secret.chmod(0o600)  # the signer refuses a secret file open to group or others (enclave_app.secret_file)
    env = {
        "WAIAAS_ENCLAVE_LISTEN": f"unix:{tmp_path}/enclave.sock",
        "WAIAAS_ENCLAVE_NSM": "unsafe-development",
        "WAIAAS_ENCLAVE_ALLOW_UNSAFE_NSM": "true",
        "WAIAAS_ENCLAVE_SEALER": "local",
        "WAIAAS_ENCLAVE_LOCAL_SECRET_FILE": str(secret),
    }
    for key, value in changes.items():
        name = "WAIAAS_ENCLAVE_" + key
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def served_from(env: dict[str, str], body: Callable[[EnclaveClient, StatusResponse], Awaitable[T]]) -> T:
    """``body(client, status)`` against the enclave app served from the settings ``env`` (`enclave_app.__main__.serve`,
    listening where ``env`` says), once a ping answers (``status``, its answer); the app is stopped after."""
    settings = load_settings(env)

    async def run() -> T:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, stop=stop))
        client = EnclaveClient(env["WAIAAS_ENCLAVE_LISTEN"], timeout=10.0)
        try:
            return await body(client, await _first_status(client))
        finally:
            stop.set()
            await task

    return asyncio.run(run())


def served_status(env: dict[str, str]) -> StatusResponse:
    """The first status the enclave app served from ``env`` answers (`served_from`)."""

    async def first(_: EnclaveClient, status: StatusResponse) -> StatusResponse:
        return status

    return served_from(env, first)


async def _first_status(client: EnclaveClient) -> StatusResponse:
    for _ in range(200):
        try:
            return await client.ping()
        except Exception:  # not listening yet
            await asyncio.sleep(0.02)
    raise AssertionError("the enclave did not answer")
