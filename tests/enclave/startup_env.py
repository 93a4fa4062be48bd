"""The environment of a self-hosted enclave's start-up (Unix socket, development NSM, local sealer), with changes."""

from __future__ import annotations

from pathlib import Path


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
