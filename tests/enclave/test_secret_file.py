"""The signer refuses an unseal secret file that group or others may read (enclave_app.secret_file), as
`waiaas selfhost up` and `waiaas selfhost reseal` refuse it (the one check they share).

Review s21 (secret hygiene): `python -m enclave_app`, as the compose `signer` service runs it, started and served on a
world-readable secret file without a word, while the two commands refused the same file."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enclave_app.__main__ import serve
from enclave_app.errors import SealingError, SecretFileError
from enclave_app.secret_file import check_secret_file_mode, read_operator_secret
from enclave_app.settings import load_settings
from tests.enclave.startup_env import enclave_env

REPO = Path(__file__).resolve().parents[2]
SECRET = b"an unseal secret of 32 bytes...."
SERVED_SECONDS = 10.0
"""A signer that took the file would still be serving after this (the test then fails instead of waiting)."""


def _secret(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "waiaas_unseal_secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o440, 0o404, 0o640, 0o644, 0o604, 0o620, 0o602, 0o610, 0o601, 0o666])
def test_a_secret_file_open_to_group_or_others_stops_the_signer_before_it_listens(tmp_path: Path, mode: int) -> None:
    path = _secret(tmp_path, mode)
    settings = load_settings(enclave_env(tmp_path, LOCAL_SECRET_FILE=str(path)))
    expected = f"WAIAAS_ENCLAVE_LOCAL_SECRET_FILE {path}: readable by group or others (mode {mode:04o}; chmod 0400 it)"
    with pytest.raises(SecretFileError, match=f"^{expected}$".replace("(", r"\(").replace(")", r"\)")):
        asyncio.run(asyncio.wait_for(serve(settings, stop=asyncio.Event()), SERVED_SECONDS))
    assert not (tmp_path / "enclave.sock").exists()


def test_a_short_secret_stops_the_signer_naming_the_setting_the_file_and_the_minimum(tmp_path: Path) -> None:
    """Review s21 (the docs run literally): a short secret stopped the signer with "operator secret too short",
    naming neither the setting nor the file nor what would do."""
    path = tmp_path / "waiaas_unseal_secret"
    path.write_bytes(b"short\n")
    path.chmod(0o400)
    settings = load_settings(enclave_env(tmp_path, LOCAL_SECRET_FILE=str(path)))
    expected = f"WAIAAS_ENCLAVE_LOCAL_SECRET_FILE {path}: operator secret too short (at least 16 bytes)"
    with pytest.raises(SealingError, match=f"^{expected}$".replace("(", r"\(").replace(")", r"\)")):
        asyncio.run(asyncio.wait_for(serve(settings, stop=asyncio.Event()), SERVED_SECONDS))
    assert not (tmp_path / "enclave.sock").exists()


@pytest.mark.parametrize("mode", [0o400, 0o600])
def test_a_secret_file_only_its_owner_may_read_is_read(tmp_path: Path, mode: int) -> None:
    assert read_operator_secret(_secret(tmp_path, mode)) == SECRET


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(SecretFileError, match=r": not a regular file$"):
        read_operator_secret(fifo)


def test_a_missing_file_is_a_secret_file_error(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError, match=r"missing: No such file or directory$"):
        read_operator_secret(tmp_path / "missing")


def test_the_check_names_the_file_and_the_mode_it_needs() -> None:
    check_secret_file_mode(Path("/s"), 0o100400)
    with pytest.raises(SecretFileError, match=r"^/s: readable by group or others \(mode 0640; chmod 0400 it\)$"):
        check_secret_file_mode(Path("/s"), 0o100640)
    with pytest.raises(SecretFileError, match=r"^/s: not a regular file$"):
        check_secret_file_mode(Path("/s"), 0o040700)


@pytest.mark.slow
def test_the_signer_as_compose_runs_it_exits_1_on_a_world_readable_secret(tmp_path: Path) -> None:
    path = _secret(tmp_path, 0o644)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "WAIAAS_ENCLAVE_LISTEN": f"unix:{tmp_path / 'signer.sock'}",
        "WAIAAS_ENCLAVE_NSM": "none",
        "WAIAAS_ENCLAVE_ALLOW_UNSAFE_NSM": "false",
        "WAIAAS_ENCLAVE_SEALER": "local",
        "WAIAAS_ENCLAVE_LOCAL_SECRET_FILE": str(path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "enclave_app"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.endswith(
        f"waiaas-enclave: start-up failed: SecretFileError: WAIAAS_ENCLAVE_LOCAL_SECRET_FILE {path}: readable by "
        "group or others (mode 0644; chmod 0400 it)\n"
    )
    assert "enclave listening" not in result.stderr and not (tmp_path / "signer.sock").exists()
    assert SECRET.decode() not in result.stderr
