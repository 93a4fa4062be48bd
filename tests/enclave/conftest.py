"""The enclave tests' ``world``: an in-process enclave world on moto (`tests.support.enclave_world`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.enclave_world import EnclaveWorld, world_in_moto


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[EnclaveWorld]:
    yield from world_in_moto(monkeypatch)
