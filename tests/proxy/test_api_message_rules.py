"""Off-chain messages follow the policy's request rules in the proxy (check 1): time windows, the request rate
(messages count as requests, and transactions count against messages too) and a burst of denials freezes the wallet.

Before: only ``offchain_messages`` and the expiry were checked, so a stolen agent token could have messages signed
at any hour and at any rate (noticed in review). The enclave's own check is in tests/enclave/test_offchain_policy.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tests.proxy.api_harness import Harness, provision
from tests.proxy.harness_calls import sign_message
from tests.support.policies import MERCHANT

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def test_messages_outside_the_time_windows_are_denied(h: Harness) -> None:
    today = datetime.now(UTC).weekday()
    other_days = [DAYS[(today + k) % 7] for k in (2, 3)]  # never today (nor tomorrow, should midnight pass)
    windows = [{"days": other_days, "start": "00:00", "end": "24:00"}]
    provision(h, h.policy(1, offchain_messages={"allowed": True}, time_windows=windows))
    denied = sign_message(h)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "policy_denied"
    assert [r["rule"] for r in denied.json()["error"]["reasons"]] == ["time_windows"]
    assert h.audit_events()[-1] == "message.denied"


def test_messages_count_against_the_request_rate(h: Harness) -> None:
    provision(h, h.policy(1, offchain_messages={"allowed": True}, rate={"max_requests": 3, "window_seconds": 3600}))
    assert [sign_message(h, f"m{i}").status_code for i in range(2)] == [200, 200]
    assert h.sign(h.transfer(1000, MERCHANT)).status_code == 200  # the third request of the hour
    denied = sign_message(h, "fourth")
    assert denied.status_code == 403 and [r["rule"] for r in denied.json()["error"]["reasons"]] == ["rate"]
    refused = h.sign(h.transfer(1000, MERCHANT))  # and messages counted for the transactions' rate too
    assert refused.status_code == 403 and "rate" in [r["rule"] for r in refused.json()["error"]["reasons"]]


def test_a_burst_of_denied_messages_freezes_the_wallet(h: Harness) -> None:
    freeze = {"on_authority_change": True, "on_delegate_approval": True, "on_close_to_stranger": True,
              "denials": {"count": 3, "window_seconds": 600}}  # fmt: skip
    provision(h, h.policy(1, offchain_messages={"allowed": True}, rate={"max_requests": 1, "window_seconds": 600},
                          freeze=freeze))  # fmt: skip
    assert sign_message(h).status_code == 200
    codes = [sign_message(h, f"again {i}").json()["error"]["code"] for i in range(3)]
    assert codes == ["policy_denied", "policy_denied", "wallet_frozen"]
    assert h.store.get_wallet(h.wallet_id).frozen
    assert sign_message(h, "after").json()["error"]["code"] == "wallet_frozen"
