"""Every audited event with a webhook is written with its outbox item in one store transaction: a store failure
there answers 503 and leaves neither the record nor the item (the request is given back as for any store failure);
the retry then writes both.

Before: the item was queued in a write of its own after the audit record, and a failure of that write was only
logged: the event was recorded, the request answered as if all was well, and the notification was lost for good.
The failure is a real one of the SQLite store: its outbox table is renamed away, so writing it fails.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxy.api_harness import Harness, provision, running_harness, unwritable
from tests.proxy.harness_calls import freeze_order, queued
from tests.support.policies import BLOCKED, MERCHANT


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    for harness in running_harness(tmp_path):
        provision(harness)
        secret = base64.b64encode(b"s" * 32).decode()
        configured = harness.owner_call(
            "PUT", f"/v1/wallets/{harness.wallet_id}/webhook", {"url": "https://owner.example/hook", "secret": secret}
        )
        assert configured.status_code == 204, configured.text
        yield harness


def test_a_denial_whose_notification_cannot_be_queued_is_503_and_records_nothing(h: Harness) -> None:
    tx = h.transfer(1000, BLOCKED)
    with unwritable(h, "outbox"):
        failed = h.sign(tx, key="denied")
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "store_unavailable", failed.text
    assert "transaction.denied" not in h.audit_events()
    assert h.audit_events()[-1] == "transaction.failed"
    assert queued(h) == []
    retried = h.sign(tx, key="denied")  # the key was given back: the retry is decided, recorded and notified
    assert retried.status_code == 403 and retried.json()["error"]["code"] == "policy_denied"
    assert h.audit_events()[-1] == "transaction.denied"
    assert queued(h) == ["transaction.denied"]


def test_a_freeze_whose_notification_cannot_be_queued_is_503_and_records_nothing(h: Harness) -> None:
    with unwritable(h, "outbox"):
        failed = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/freeze", freeze_order(h, 1))
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "store_unavailable", failed.text
    assert "wallet.frozen" not in h.audit_events()
    assert queued(h) == []
    frozen = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/freeze", freeze_order(h, 2))
    assert frozen.status_code == 200, frozen.text
    assert h.audit_events()[-2:] == ["wallet.frozen", "wallet.enclave_frozen"]  # the order, the enclave's receipt
    assert queued(h) == ["wallet.frozen"]


@pytest.mark.parametrize("to", [BLOCKED, MERCHANT], ids=["denied", "signed"])
def test_webhook_settings_that_cannot_be_read_fail_the_request_instead_of_dropping_it(h: Harness, to: object) -> None:
    """Before: the read failure was logged and the event went ahead without its notification (a denial answered 403,
    a signature handed out). Now the request fails as on any store failure: nothing signed, the reservation released,
    the key free for the retry."""
    tx = h.transfer(1000, to)  # type: ignore[arg-type]
    h.store.failing = {"get_webhook"}
    failed = h.sign(tx, key="retry-me")
    h.store.failing = set()
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "store_unavailable", failed.text
    assert "signed_transaction" not in failed.text and h.spent() == 0
    assert not {"transaction.signed", "transaction.denied"} & set(h.audit_events()) and queued(h) == []
    retried = h.sign(tx, key="retry-me")
    assert retried.status_code in (200, 403), retried.text
    assert len(queued(h)) == 1
