"""`outcome_unknown.finish_applied` on every store adapter: after `finish_signing` raised `StoreOutcomeUnknown`,
the sign flow settles whether its transaction was applied with a fence (release the reservation; else free the
key the answer needed) and gives back only what was not used; with nothing to settle it, everything stays held.

The transaction's two outcomes are made here by calling `finish_signing` (applied) or not (never arrived); the
DynamoDB faults themselves are in ``test_api_dynamodb_unanswered.py``.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import Any

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import IdempotencyInProgress
from parent_proxy.outcome_unknown import finish_applied
from parent_proxy.store.model import IdempotentAnswer, Reservation, ReservationStatus
from parent_proxy.store.protocol import Store
from tests.proxy.conftest import FakeClock

T0 = 1_700_000_000.0
CAPS = {("SOL", 86_400): 1_000}


def request(s: Store, n: int, *, amount: int) -> tuple[Any, Any]:
    """Request ``r<n>`` under key ``k<n>``, claimed (and ``amount`` reserved): the services and the prepared
    request that `finish_applied` reads."""
    digest = hashlib.sha256(f"request {n}".encode()).digest()
    amounts = {"SOL": amount} if amount else {}
    claim = s.begin_signing("w1", f"k{n}", digest, request_id=f"r{n}", amounts=amounts, limits=CAPS, now=T0)
    prepared = SimpleNamespace(
        wallet=SimpleNamespace(wallet_id="w1"), request_id=f"r{n}", key=f"k{n}", digest=digest,
        reservation=claim.reservation, idempotent=True, approval=None,
    )  # fmt: skip
    return SimpleNamespace(store=s, clock=FakeClock(T0)), prepared


def write_finish(s: Store, prepared: Any, *, answer: bool) -> None:
    """The transaction that `finish_signing` would have sent, applied."""
    stored = IdempotentAnswer("w1", prepared.key, prepared.digest, b"{}") if answer else None
    seal = AuditLog(s, FakeClock(T0)).sealer("transaction.signed", {"request_id": prepared.request_id})
    s.finish_signing(prepared.reservation, seal, None, stored)


def key_state(s: Store, prepared: Any) -> str:
    try:
        found = s.lookup_idempotent("w1", prepared.key, prepared.digest, T0)
    except IdempotencyInProgress:
        return "in progress"
    return "free" if found is None else "completed"


@pytest.mark.parametrize("answer", [True, False], ids=["answer stored", "submit"])
def test_the_reservation_settles_it(wallet_store: Store, answer: bool) -> None:
    s = wallet_store
    services, applied = request(s, 1, amount=5)
    write_finish(s, applied, answer=answer)
    assert finish_applied(services, applied, answer_stored=answer)
    assert s.reservation_status("w1", "r1") == ReservationStatus.COMMITTED
    assert key_state(s, applied) == ("completed" if answer else "in progress")  # `submission` completes it
    services, lost = request(s, 2, amount=5)
    assert not finish_applied(services, lost, answer_stored=answer)
    assert s.reservation_status("w1", "r2") == ReservationStatus.RELEASED and key_state(s, lost) == "free"
    assert [r.event_type for r in s.audit_records(0, 10)] == ["transaction.signed"]


def test_without_a_reservation_the_stored_answer_settles_it(wallet_store: Store) -> None:
    s = wallet_store
    services, applied = request(s, 1, amount=0)
    assert applied.reservation is None
    write_finish(s, applied, answer=True)
    assert finish_applied(services, applied, answer_stored=True) and key_state(s, applied) == "completed"
    services, lost = request(s, 2, amount=0)
    assert not finish_applied(services, lost, answer_stored=True) and key_state(s, lost) == "free"


def test_with_nothing_to_settle_it_everything_stays_held(wallet_store: Store) -> None:
    """No reservation and no answer in the transaction (``submit``): nothing can tell, so the key stays claimed."""
    s = wallet_store
    services, lost = request(s, 1, amount=0)
    assert not finish_applied(services, lost, answer_stored=False) and key_state(s, lost) == "in progress"


def test_a_failing_fence_leaves_everything_held(wallet_store: Store) -> None:
    s = wallet_store
    services, lost = request(s, 1, amount=5)
    unknown = Reservation("w1", "r-unknown", (("SOL", 5),), T0)  # a release that fails: NotFound
    elsewhere: Any = SimpleNamespace(**{**vars(lost), "reservation": unknown})  # a stand-in, as `request` makes
    assert not finish_applied(services, elsewhere, answer_stored=True)
    assert s.reservation_status("w1", "r1") == ReservationStatus.PENDING and key_state(s, lost) == "in progress"
