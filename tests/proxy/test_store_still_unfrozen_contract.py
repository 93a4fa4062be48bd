"""Contract tests for `StillUnfrozen` on every adapter: the condition of the transaction that records a signature
(`Store.finish_signing`'s ``unfrozen``, `Store.apply_audited` for an off-chain message) that the wallet is not
frozen and its owner-order sequence is the one the request read; else `FrozenMeanwhile` and nothing of the
transaction is written (DynamoDB: a ``ConditionCheck`` of the wallet item in the same ``TransactWriteItems``).

Before: the signature's record was written whatever happened to the wallet since the request read it, so a freeze
stored (and answered 200 to the owner) while the request was in the enclave did not stop its signature.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import FrozenMeanwhile, IdempotencyInProgress, InvalidInput, NotFound
from parent_proxy.store.model import (
    Approval,
    ApprovalStatus,
    IdempotentAnswer,
    OutboxItem,
    Reservation,
    ReservationStatus,
)
from parent_proxy.store.protocol import Store
from parent_proxy.store.state_changes import FinishApproval, SetFrozen, StateChange, StillUnfrozen
from tests.proxy.conftest import FakeClock, make_wallet, moto_dynamo_store

T0 = 1_700_000_000.0
H1 = hashlib.sha256(b"request one").digest()


def started(s: Store, key: str = "k1", request_id: str = "r1") -> Reservation:
    claim = s.begin_signing(
        "w1", key, H1, request_id=request_id, amounts={"SOL": 100}, limits={("SOL", 86_400): 1_000}, now=T0
    )
    assert claim.reservation is not None
    return claim.reservation


def finish(s: Store, clock: FakeClock, reservation: Reservation, unfrozen: StillUnfrozen, **kw: Any) -> Any:
    item = OutboxItem("e-" + reservation.request_id, "w1", "transaction.signed", b"{}", T0, next_attempt_at=T0)
    answer = IdempotentAnswer("w1", "k1", H1, b'{"status_code":200}')
    seal = AuditLog(s, clock).sealer("transaction.signed", {"request_id": "r1"}, wallet_id="w1")
    return s.finish_signing(reservation, seal, item, answer, unfrozen=unfrozen, **kw)


def freeze(s: Store, clock: FakeClock, change: SetFrozen) -> None:
    s.apply_audited([change], AuditLog(s, clock).sealer("wallet.frozen", {}, wallet_id=change.wallet_id))


def assert_nothing_finished(s: Store, head_seq: int) -> None:
    head = s.audit_head()
    assert (0 if head is None else head.seq) == head_seq
    assert s.reservation_status("w1", "r1") == ReservationStatus.PENDING
    with pytest.raises(IdempotencyInProgress, match="has not completed"):
        s.lookup_idempotent("w1", "k1", H1, T0)


def test_a_wallet_as_it_was_read_is_recorded(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    freeze(s, clock, SetFrozen("w1", True, "owner freeze order 4", order_sequence=4))
    freeze(s, clock, SetFrozen("w1", False, None, order_sequence=5))
    reservation = started(s)
    record = finish(s, clock, reservation, StillUnfrozen("w1", 5))
    assert record.event_type == "transaction.signed"
    assert s.reservation_status("w1", "r1") == ReservationStatus.COMMITTED


def test_a_freeze_since_the_read_refuses_the_record_whole(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    reservation = started(s)
    s.set_frozen("w1", True, "denial burst")  # the parent's own freeze: no order, the sequence stays 0
    with pytest.raises(FrozenMeanwhile, match="wallet w1 was frozen, or took an owner order, since the request"):
        finish(s, clock, reservation, StillUnfrozen("w1", 0))
    assert_nothing_finished(s, head_seq=0)


def test_a_freeze_and_unfreeze_since_the_read_refuse_it_too(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    reservation = started(s)
    freeze(s, clock, SetFrozen("w1", True, "owner freeze order 1", order_sequence=1))
    freeze(s, clock, SetFrozen("w1", False, None, order_sequence=2))
    assert s.get_wallet("w1").frozen is False
    with pytest.raises(FrozenMeanwhile, match="wallet w1"):
        finish(s, clock, reservation, StillUnfrozen("w1", 0))
    assert_nothing_finished(s, head_seq=2)
    assert finish(s, clock, reservation, StillUnfrozen("w1", 2)).seq == 3  # read after the unfreeze: recorded


def test_the_approval_and_the_answer_stay_as_they_were(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    s.create_approval(Approval("a1", "w1", b"{}", ApprovalStatus.PENDING, T0))
    s.decide_approval("a1", ApprovalStatus.APPROVED, b"envelope", T0, signing="r1")
    reservation = started(s)
    freeze(s, clock, SetFrozen("w1", True, "owner freeze order 1", order_sequence=1))
    with pytest.raises(FrozenMeanwhile, match="wallet w1"):
        finish(s, clock, reservation, StillUnfrozen("w1", 0), approval=FinishApproval("a1", "r1"))
    assert s.get_approval("a1").signing == "r1"  # its signing did not finish: it can be reopened
    assert_nothing_finished(s, head_seq=1)


def test_an_audited_change_checks_it_as_well(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    log = AuditLog(s, clock)
    item = OutboxItem("e1", "w1", "message.signed", b"{}", T0, next_attempt_at=T0)
    s.apply_audited([StillUnfrozen("w1", 0)], log.sealer("message.signed", {}, wallet_id="w1"), item)
    s.set_frozen("w1", True, "denial burst")
    item2 = OutboxItem("e2", "w1", "message.signed", b"{}", T0, next_attempt_at=T0)
    with pytest.raises(FrozenMeanwhile, match="wallet w1"):
        s.apply_audited([StillUnfrozen("w1", 0)], log.sealer("message.signed", {}, wallet_id="w1"), item2)
    head = s.audit_head()
    assert head is not None and head.seq == 1
    assert s.get_outbox_item("e1").event_id == "e1"
    with pytest.raises(NotFound, match="outbox item e2 not found"):
        s.get_outbox_item("e2")
    s.apply_audited([StillUnfrozen("w2", 0)], log.sealer("message.signed", {}, wallet_id="w2"))  # another wallet


@pytest.mark.parametrize(
    ("unfrozen", "field"),
    [(StillUnfrozen("w1", -1), "order_sequence"), (StillUnfrozen("w 1", 0), "wallet_id"), (("w1", 0), "unfrozen")],
)
def test_a_malformed_condition_is_refused(wallet_store: Store, clock: FakeClock, unfrozen: Any, field: str) -> None:
    s = wallet_store
    reservation = started(s)
    with pytest.raises(InvalidInput, match=field):
        finish(s, clock, reservation, unfrozen)
    assert_nothing_finished(s, head_seq=0)


def test_it_is_the_only_change_of_its_wallet_record(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    changes: list[StateChange] = [StillUnfrozen("w1", 0), SetFrozen("w1", True, "x")]
    with pytest.raises(InvalidInput, match="at most one change of its wallet's record"):
        s.apply_audited(changes, AuditLog(s, clock).sealer("t", {}, wallet_id="w1"))
    assert s.get_wallet("w1").frozen is False


def test_a_dynamodb_wallet_item_without_an_order_sequence_reads_as_none(aws_env: None, clock: FakeClock) -> None:
    with moto_dynamo_store(lambda client: client) as (store, client):
        store.create_wallet(make_wallet("w1"))
        key = {"pk": {"S": "W#w1"}, "sk": {"S": "WALLET"}}
        client.update_item(TableName="waiaas-test", Key=key, UpdateExpression="REMOVE order_sequence")
        reservation = started(store)
        with pytest.raises(FrozenMeanwhile, match="wallet w1"):
            finish(store, clock, reservation, StillUnfrozen("w1", 1))
        assert finish(store, clock, reservation, StillUnfrozen("w1", 0)).seq == 1
