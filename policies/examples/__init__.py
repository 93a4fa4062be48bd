"""Built-in example policies (used by the demo, the benchmark and the docs)."""

from __future__ import annotations

from importlib.resources import files


def example_policy_json() -> bytes:
    """``agent-payments.json``: SOL and one token mint with tiered limits, two merchants, fee caps."""
    return files(__package__).joinpath("agent-payments.json").read_bytes()
