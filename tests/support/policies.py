"""Policy documents for tests: the built-in example as a mutable dict, and owner keys that sign it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

EXAMPLE_PATH = Path(__file__).resolve().parents[2] / "policies" / "examples" / "agent-payments.json"
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "policies" / "schema" / "policy-v1.schema.json"
_EXAMPLE: dict[str, Any] = json.loads(EXAMPLE_PATH.read_text())

MERCHANT = Pubkey.from_string("FHEqRxoKaHqjfmpq5sDHwcTRetKh7uJny2UVN4pcd24J")
TREASURY = Pubkey.from_string("AkexRZX1tPiseG5arHiPGW7RT1wcYmjT5YWipNxWAcUt")
BLOCKED = Pubkey.from_string("3R2khGdRVoeaEHJz3FaRq6GEJRta8VPBaxy9vo4jgoJv")
EXAMPLE_MINT = Pubkey.from_string("FJrj4SdzrJU6z5mV3ymwa9rouE9Wiicue9zoJHbaGxxY")


def example_policy() -> dict[str, Any]:
    """A fresh deep copy of ``policies/examples/agent-payments.json``."""
    return copy.deepcopy(_EXAMPLE)


def policy_schema() -> dict[str, Any]:
    """The published JSON Schema of policy documents (policies/schema/policy-v1.schema.json), parsed."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def owner_public_key(key: Ed25519PrivateKey) -> Pubkey:
    return Pubkey.from_bytes(key.public_key().public_bytes_raw())


def value_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path (keys and list indexes) of every value inside a JSON ``value``, itself first (the empty path)."""
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += value_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += value_paths(item, (*prefix, i))
    return out


def replace_at(document: Any, path: tuple[Any, ...], value: Any) -> None:
    """Put ``value`` at the (non-empty) ``path`` of ``document``, in place."""
    target = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
