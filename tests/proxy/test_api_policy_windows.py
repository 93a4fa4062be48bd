"""A policy counting in more spending windows than a signing request can carry to the enclave is refused at install
(422 naming the field), not installed to make every later signing a 503 (nineteenth-session enclave review)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policies.document import MAX_SPEND_WINDOWS
from tests.proxy.api_harness import Harness, provision, running_harness
from tests.support.policies import MERCHANT, example_policy


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    for harness in running_harness(tmp_path):
        provision(harness)
        yield harness


def _limits(sol_periods: int) -> list[dict[str, Any]]:
    limits: list[dict[str, Any]] = example_policy()["rules"]["limits"]
    limits[0]["periods"] = [
        {"id": f"p{i}", "window_seconds": 3600 + i, "automatic": "5000000000", "approval": "20000000000"}
        for i in range(sol_periods)
    ]
    return limits


def test_the_most_windows_install_and_sign_one_more_is_refused(h: Harness) -> None:
    path = f"/v1/wallets/{h.wallet_id}/policy"
    too_many = h.owner_call("PUT", path, {"envelope": h.policy(2, limits=_limits(MAX_SPEND_WINDOWS - 1))})
    assert too_many.status_code == 422, too_many.text
    error = too_many.json()["error"]
    assert error["code"] == "invalid_request" and "spending windows" in error["message"]
    assert h.sign(h.transfer(1_000, MERCHANT)).status_code == 200  # the installed policy still signs
    most = h.owner_call("PUT", path, {"envelope": h.policy(2, limits=_limits(MAX_SPEND_WINDOWS - 2))})
    assert most.status_code == 200, most.text
    assert h.sign(h.transfer(1_000, MERCHANT)).status_code == 200
