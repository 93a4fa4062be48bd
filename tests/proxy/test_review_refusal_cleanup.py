"""Review: the store failing while the proxy records an enclave *refusal* (step 6, unsigned answer).

The answer is 503 ``store_unavailable``, and docs/api.md promises for every 503 that no reservation is held and the
idempotency key is free again. The refusal branch of `SignFlow.finish` wrote its effects one by one and, on a store
failure part-way, neither abandoned the claim nor (when the release itself failed) tried again: the key stayed
``in_progress`` for ever (every retry 409 ``idempotency_in_progress``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from parent_proxy.store.model import ReservationStatus
from tests.proxy.api_harness import (
    Harness,
    new_session_key,
    provisioned_harness,
    stand_in_refusal,
    start_stand_in_enclave,
    stop_enclave,
)
from tests.support.policies import MERCHANT


@pytest.fixture
def refusing(tmp_path: Path) -> Iterator[Harness]:
    """A provisioned wallet whose enclave is then replaced by one that refuses every transaction."""
    with provisioned_harness(tmp_path, enclave_timeout=2.0) as (h, loop, servers):
        stop_enclave(h, loop, servers[0])
        session = new_session_key()  # its receipts verify under the key it attests
        servers.append(start_stand_in_enclave(loop, h.socket, session, lambda: stand_in_refusal(session, h.wallet_id)))
        h.services.relay._loaded[h.wallet_id] = 1  # the stand-in answers the signing request itself
        yield h


def pending(h: Harness) -> list[str]:
    rows = h.store.inner._conn().execute("SELECT status FROM reservations").fetchall()
    return [r[0] for r in rows if r[0] == ReservationStatus.PENDING]


@pytest.mark.parametrize("failing", [{"apply_audited"}, {"release"}])  # the denial and its record: one write
def test_store_failure_while_recording_a_refusal_frees_the_key(refusing: Harness, failing: set[str]) -> None:
    h = refusing
    tx = h.transfer(1000, MERCHANT)
    h.store.failing = failing
    first = h.sign(tx, key="refused-once")
    h.store.failing = set()
    assert first.status_code == 503, first.text
    assert first.json()["error"]["code"] == "store_unavailable"
    assert "signed_transaction" not in first.text
    if "release" not in failing:
        assert pending(h) == []
    # The key is free again (503: the caller decides), so the same request reaches the enclave once more.
    again = h.sign(tx, key="refused-once")
    assert again.status_code == 403, again.text
    assert again.json()["error"]["code"] == "enclave_refused"
    # A release the store could not take stays pending: counted against the limits (never lost), not leaked out.
    assert len(pending(h)) == (1 if "release" in failing else 0)
