"""Every environment variable a service reads is in its settings module's reference table (the docstring the
README points to), and every variable the table names is read: the loaders run on valid environments that record
each name they look up."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

import pytest

import enclave_app.settings
import parent_proxy.settings

OWNER = "FHEqRxoKaHqjfmpq5sDHwcTRetKh7uJny2UVN4pcd24J"
KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/11111111-2222-3333-4444-555555555555"


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers every name looked up in it, present or not."""

    def __init__(self, values: Mapping[str, str], seen: set[str]) -> None:
        self._values = dict(values)
        self._seen = seen

    def __getitem__(self, name: str) -> str:
        self._seen.add(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _table_names(module: ModuleType) -> set[str]:
    """The variables the table's rows name (a row starts with the name; descriptions may mention others)."""
    return set(re.findall(r"^(?:``)?(WAIAAS_[A-Z0-9_]+)", module.__doc__ or "", flags=re.MULTILINE))


def _proxy_environments() -> list[dict[str, str]]:
    base = {"WAIAAS_STATE": "sqlite:/var/lib/waiaas/state.db", "WAIAAS_ENCLAVE": "unix:/run/waiaas/enclave.sock",
            "WAIAAS_OWNER_KEYS": OWNER, "WAIAAS_CHAIN": "litesvm", "WAIAAS_REQUIRE_MULTISIG": "false",
            "WAIAAS_PUBLIC_ORIGINS": "https://wallets.example.com"}  # fmt: skip
    return [
        base,
        {
            **{k: v for k, v in base.items() if k != "WAIAAS_REQUIRE_MULTISIG"},
            "WAIAAS_STATE": "dynamodb:waiaas-state@eu-west-1",
            "WAIAAS_CHAIN": "rpc:https://rpc.example",
        },
    ]


def _enclave_environments(tmp_path: Path) -> list[dict[str, str]]:
    secret, root = tmp_path / "secret", tmp_path / "root.pem"
    secret.write_bytes(b"s" * 32)
    root.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    prefix = "WAIAAS_ENCLAVE_"
    local = {f"{prefix}LISTEN": "unix:/run/waiaas/signer.sock", f"{prefix}NSM": "none",
             f"{prefix}ALLOW_UNSAFE_NSM": "false", f"{prefix}SEALER": "local",
             f"{prefix}LOCAL_SECRET_FILE": str(secret), f"{prefix}MAX_CONNECTIONS": "8"}  # fmt: skip
    cloud = {f"{prefix}LISTEN": "vsock:4294967295:5005", f"{prefix}NSM": "device",
             f"{prefix}ALLOW_UNSAFE_NSM": "false", f"{prefix}ATTESTATION_ROOT": str(root), f"{prefix}SEALER": "kms",
             f"{prefix}KMS_KEY_ID": KEY_ARN, f"{prefix}KMS_REGION": "eu-west-1",
             f"{prefix}KMS_PROXY": "vsock:3:8000"}  # fmt: skip
    development = {**local, f"{prefix}NSM": "unsafe-development", f"{prefix}ALLOW_UNSAFE_NSM": "true"}
    return [local, cloud, development]


@pytest.mark.parametrize("service", ["proxy", "enclave"])
def test_the_settings_table_names_exactly_the_variables_read(service: str, tmp_path: Path) -> None:
    if service == "proxy":
        module: ModuleType = parent_proxy.settings
        environments = _proxy_environments()
    else:
        module = enclave_app.settings
        environments = _enclave_environments(tmp_path)
    read: set[str] = set()
    for values in environments:
        module.load_settings(RecordingEnv(values, read))
    assert {name for name in read if name.startswith("WAIAAS_")} == _table_names(module)
    assert read == {name for name in read if name.startswith("WAIAAS_")}  # nothing else is read
