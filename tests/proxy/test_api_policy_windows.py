"""A policy counting in more spending windows than a signing request can carry to the enclave is refused at install
(422 naming the field), not installed to make every later signing a 503 (nineteenth-session enclave review)."""

from __future__ import annotations

from typing import Any

from policies.document import MAX_SPEND_WINDOWS
from tests.proxy.api_harness import Harness
from tests.support.policies import MERCHANT, example_policy


def _limits(sol_periods: int) -> list[dict[str, Any]]:
    limits: list[dict[str, Any]] = example_policy()["rules"]["limits"]
    limits[0]["periods"] = [
        {"id": f"p{i}", "window_seconds": 3600 + i, "automatic": "5000000000", "approval": "20000000000"}
        for i in range(sol_periods)
    ]
    return limits


def test_the_most_windows_install_and_sign_one_more_is_refused(provisioned: Harness) -> None:
    path = f"/v1/wallets/{provisioned.wallet_id}/policy"
    too_many = provisioned.owner_call(
        "PUT", path, {"envelope": provisioned.policy(2, limits=_limits(MAX_SPEND_WINDOWS - 1))}
    )
    assert too_many.status_code == 422, too_many.text
    error = too_many.json()["error"]
    assert error["code"] == "invalid_request" and "spending windows" in error["message"]
    # the installed policy still signs
    assert provisioned.sign(provisioned.transfer(1_000, MERCHANT)).status_code == 200
    most = provisioned.owner_call(
        "PUT", path, {"envelope": provisioned.policy(2, limits=_limits(MAX_SPEND_WINDOWS - 2))}
    )
    assert most.status_code == 200, most.text
    assert provisioned.sign(provisioned.transfer(1_000, MERCHANT)).status_code == 200
