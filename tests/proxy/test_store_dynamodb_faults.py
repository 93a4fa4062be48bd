"""DynamoDB faults that moto does not produce by itself, injected at the botocore seam (the real adapter above it,
moto's table below): transactions cancelled for transient reasons, and writes resent by botocore after a lost
response (a single-item conditional write resent after its first send was applied fails its condition against
itself: each such write stores a fresh write id, and finding its own id in the refusal's stored item is success).

A ``TransactionCanceledException`` is a refusal of the stored state only when a reason is
``ConditionalCheckFailed``. Cancelled for ``TransactionConflict`` or throttling only, nothing was written and the same
transaction may succeed when sent again: it is resent after a short jittered pause, then reported as the store being
unavailable (503). Before, every cancellation was a ``Conflict``: a signed request given up with 409 on transient
contention for the audit head, a free idempotency key reported "in progress", a new approval "already exists".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from parent_proxy.audit import AuditLog
from parent_proxy.errors import (
    AlreadyDecided,
    Conflict,
    IdempotencyInProgress,
    NotFound,
    StalePolicySequence,
    StoreUnavailable,
)
from parent_proxy.store.dynamodb_base import TRANSACT_ATTEMPTS, ConditionFailed, Contended, translate
from parent_proxy.store.dynamodb_limits import MAX_RESERVE_ATTEMPTS
from parent_proxy.store.model import Approval, ApprovalStatus, IdempotentAnswer, OutboxItem, ReservationStatus
from parent_proxy.store.state_changes import DecideApproval, FinishApproval
from tests.proxy.conftest import FakeClock, make_wallet, moto_dynamo_store
from tests.proxy.hooked_client import Hook, Hooked, first_answer_lost, transaction_answer_lost

T0 = 1_700_000_000.0
H = b"\x11" * 32


@pytest.fixture
def dynamo(aws_env: None) -> Iterator[tuple[Any, Hooked]]:
    with moto_dynamo_store(Hooked) as (store, client):
        store.create_wallet(make_wallet("w1"))
        yield store, client


def cancelled(reasons: list[str]) -> ClientError:
    """A ``TransactionCanceledException`` as botocore raises it (``CancellationReasons`` at the top level)."""
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": f"Transaction cancelled {reasons}"},
            "CancellationReasons": [{"Code": r} for r in reasons],
        },
        "TransactWriteItems",
    )


def cancel(reason_at: dict[int, str], times: int) -> tuple[Hook, list[int]]:
    """A transact_write_items hook: the first ``times`` calls are cancelled with ``reason_at`` (index -> code;
    negative indexes count from the end), the rest go through. Returns the hook and its call log."""
    calls: list[int] = []

    def hook(real: Hook, **kwargs: Any) -> Any:
        count = len(kwargs["TransactItems"])
        calls.append(count)
        if len(calls) <= times:
            raise cancelled([reason_at.get(i, reason_at.get(i - count, "None")) for i in range(count)])
        return real(**kwargs)

    return hook, calls


@pytest.mark.parametrize(
    ("reasons", "error"),
    [
        (["None", "ConditionalCheckFailed"], ConditionFailed),
        (["TransactionConflict", "ConditionalCheckFailed"], ConditionFailed),
        (["None", "TransactionConflict"], Contended),
        (["ThrottlingError", "ProvisionedThroughputExceeded"], Contended),
        (["ValidationError", "None"], StoreUnavailable),
        (["TransactionConflict", "ValidationError"], StoreUnavailable),
        ([], StoreUnavailable),
    ],
)
def test_a_cancelled_transaction_is_a_refusal_only_when_a_condition_failed(reasons: list[str], error: type) -> None:
    with pytest.raises(error) as info, translate():
        raise cancelled(reasons)
    assert type(info.value) is error
    assert isinstance(info.value, Conflict) == (error is ConditionFailed)
    if error is not StoreUnavailable:  # the codes per action, as DynamoDB gave them
        assert info.value.reasons == reasons  # type: ignore[attr-defined]
    if error is Contended:
        assert str(info.value) == f"dynamodb store unavailable: transaction cancelled {reasons}"


def test_finish_signing_resends_after_a_transient_conflict_on_the_audit_head(dynamo: tuple[Any, Hooked]) -> None:
    store, client = dynamo
    log = AuditLog(store, FakeClock())
    log.append("setup", {})
    claim = store.begin_signing("w1", "k1", H, request_id="r1", amounts={"SOL": 5}, limits={}, now=T0)
    client.hooks["transact_write_items"], calls = cancel({-2: "TransactionConflict"}, times=1)
    record = store.finish_signing(claim.reservation, log.sealer("t", {}), None, IdempotentAnswer("w1", "k1", H, b"{}"))
    assert (record.seq, len(calls)) == (2, 2)
    assert store.reservation_status("w1", "r1") == ReservationStatus.COMMITTED
    assert store.lookup_idempotent("w1", "k1", H, T0) is not None


def test_finish_signing_under_lasting_contention_is_unavailable_and_writes_nothing(dynamo: tuple[Any, Hooked]) -> None:
    store, client = dynamo
    log = AuditLog(store, FakeClock())
    head = log.append("setup", {})
    claim = store.begin_signing("w1", "k1", H, request_id="r1", amounts={"SOL": 5}, limits={}, now=T0)
    client.hooks["transact_write_items"], calls = cancel({-2: "TransactionConflict"}, times=1000)
    with pytest.raises(StoreUnavailable, match="transaction cancelled") as info:
        store.finish_signing(claim.reservation, log.sealer("t", {}), None, IdempotentAnswer("w1", "k1", H, b"{}"))
    assert not isinstance(info.value, Conflict)
    assert len(calls) == TRANSACT_ATTEMPTS
    del client.hooks["transact_write_items"]
    assert store.audit_head() == head
    assert store.reservation_status("w1", "r1") == ReservationStatus.PENDING
    with pytest.raises(IdempotencyInProgress, match="idempotency key 'k1': the first request has not completed"):
        store.lookup_idempotent("w1", "k1", H, T0)


def test_audit_append_resends_after_throttling_and_is_unavailable_when_it_lasts(dynamo: tuple[Any, Hooked]) -> None:
    store, client = dynamo
    log = AuditLog(store, FakeClock())
    client.hooks["transact_write_items"], calls = cancel({0: "ThrottlingError"}, times=1)
    assert log.append("first", {}).seq == 1 and len(calls) == 2
    client.hooks["transact_write_items"], calls = cancel({-1: "TransactionConflict"}, times=1000)
    with pytest.raises(StoreUnavailable, match="transaction cancelled"):
        log.append("second", {})
    assert len(calls) == TRANSACT_ATTEMPTS  # not 20 sends reported as a lost race (409)
    del client.hooks["transact_write_items"]
    assert [r.event_type for r in store.audit_records(0, 10)] == ["first"]


def test_a_throttled_claim_is_unavailable_not_in_progress(dynamo: tuple[Any, Hooked]) -> None:
    store, client = dynamo
    client.hooks["transact_write_items"], _ = cancel({0: "ThrottlingError"}, times=1000)
    with pytest.raises(StoreUnavailable, match="transaction cancelled"):
        store.begin_signing("w1", "k2", H, request_id="r2", amounts={}, limits={}, now=T0)
    with pytest.raises(StoreUnavailable, match="transaction cancelled"):
        store.begin_signing("w1", "k2", H, request_id="r2", amounts={"SOL": 1}, limits={}, now=T0)
    del client.hooks["transact_write_items"]
    assert store.lookup_idempotent("w1", "k2", H, T0) is None  # nothing was claimed


def test_a_throttled_approval_is_created_on_the_resend(dynamo: tuple[Any, Hooked]) -> None:
    store, client = dynamo
    client.hooks["transact_write_items"], calls = cancel({1: "ThrottlingError"}, times=1)
    store.create_approval(Approval("a1", "w1", b"{}", ApprovalStatus.PENDING, T0))
    assert len(calls) == 2 and store.get_approval("a1").status == ApprovalStatus.PENDING
    client.hooks["transact_write_items"], calls = cancel({1: "ThrottlingError"}, times=1000)
    with pytest.raises(StoreUnavailable, match="transaction cancelled"):
        store.create_approval(Approval("a2", "w1", b"{}", ApprovalStatus.PENDING, T0))


def test_a_validation_error_is_not_resent(dynamo: tuple[Any, Hooked]) -> None:
    store, client = dynamo
    client.hooks["transact_write_items"], calls = cancel({0: "ValidationError"}, times=1000)
    with pytest.raises(StoreUnavailable, match="ValidationError"):
        store.create_approval(Approval("a1", "w1", b"{}", ApprovalStatus.PENDING, T0))
    assert len(calls) == 1


# -- writes resent by botocore after a lost response ---------------------------------------------------------------
def test_a_resent_approval_decision_is_this_decision_not_a_refusal(dynamo: tuple[Any, Hooked]) -> None:
    """Before: `AlreadyDecided` for the owner's own approval, which stayed approved with nothing reserved or signed
    (the flow gives back only what it took); the owner could neither approve again nor reject. A decision is one
    transaction with the wallet's pending count; its resend carries the first send's token."""
    store, client = dynamo
    store.create_approval(Approval("a1", "w1", b"{}", ApprovalStatus.PENDING, T0))
    with transaction_answer_lost(client) as resent:
        approved = store.decide_approval("a1", ApprovalStatus.APPROVED, b"owner-envelope", T0 + 1, "r1")
    assert resent and (approved.status, approved.decision, approved.decided_at) == (
        ApprovalStatus.APPROVED, b"owner-envelope", T0 + 1,
    )  # fmt: skip
    with transaction_answer_lost(client) as resent:  # the give-back of a failed signing, resent too
        reopened = store.reopen_approval("a1", b"owner-envelope", "r1")
    assert resent and reopened.status == ApprovalStatus.PENDING and reopened.decision is None
    with transaction_answer_lost(client) as resent:
        rejected = store.decide_approval("a1", ApprovalStatus.REJECTED, None, T0 + 2)
    assert resent and rejected == store.get_approval("a1") and rejected.status == ApprovalStatus.REJECTED
    with pytest.raises(AlreadyDecided, match="approval a1 is already rejected"):
        store.decide_approval("a1", ApprovalStatus.APPROVED, b"owner-envelope", T0 + 3, "r2")  # a refusal stays one
    # The count went +1 (created), 0 (approved: its signing keeps the place), 0 (reopened), -1 once each, resends
    # included: one more approval fits under a bound of one.
    count = client.inner.get_item(TableName="waiaas-test", Key={"pk": {"S": "W#w1"}, "sk": {"S": "APPROVALS"}})
    assert count["Item"]["pending"] == {"N": "0"}


def test_an_approval_decision_is_answered_from_its_own_write(dynamo: tuple[Any, Hooked]) -> None:
    """Before: the decision was written, then read back in separate calls; a failed read answered 503 for a decision
    that was stored, and the approval stayed approved with nothing signed."""
    store, client = dynamo
    store.create_approval(Approval("a1", "w1", b"{}", ApprovalStatus.PENDING, T0))
    written: list[str] = []

    def transact(real: Hook, **kwargs: Any) -> Any:
        for action in kwargs["TransactItems"]:  # a signing's mark is put (it has no "Key")
            written.append(next(iter(action.values())).get("Key", {"sk": {"S": "put"}})["sk"]["S"])
        return real(**kwargs)

    def get(real: Hook, **kwargs: Any) -> Any:
        if written:
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "GetItem")
        return real(**kwargs)

    client.hooks.update(transact_write_items=transact, get_item=get)
    decided = store.decide_approval("a1", ApprovalStatus.APPROVED, b"owner-envelope", T0 + 1, "r1")
    assert written == ["AP#a1", "put"] and decided.status == ApprovalStatus.APPROVED


def test_resent_creations_and_installs_are_their_own_writes(dynamo: tuple[Any, Hooked]) -> None:
    """Before: `Conflict` ("already exists"), `StalePolicySequence` and `IdempotencyInProgress` for the call's own
    successful write (the caller then holds an idempotency claim it was told it does not have)."""
    store, client = dynamo
    with first_answer_lost(client, "PutItem") as resent:
        store.create_wallet(make_wallet("w9"))
    assert resent and store.get_wallet("w9") == make_wallet("w9")
    with first_answer_lost(client, "UpdateItem") as resent:
        store.install_policy("w9", b"policy", 1)
    assert resent and store.get_wallet("w9").policy_sequence == 1
    with first_answer_lost(client, "PutItem") as resent:
        assert store.begin_idempotent("w9", "k1", H, T0) is None
    assert resent
    with first_answer_lost(client, "UpdateItem") as resent:
        store.complete_idempotent("w9", "k1", H, b"{}")
    assert resent and store.lookup_idempotent("w9", "k1", H, T0) is not None
    with first_answer_lost(client, "PutItem") as resent:
        token = store.issue_token("w9", T0)
    assert resent and store.authenticate_token(token.token) == "w9"
    # Real refusals stay refusals, with the stored state in the error.
    with pytest.raises(Conflict, match="wallet w9 already exists"):
        store.create_wallet(make_wallet("w9"))
    with pytest.raises(StalePolicySequence, match="policy sequence 1 is not greater than 1"):
        store.install_policy("w9", b"policy", 1)
    with pytest.raises(NotFound, match="wallet nope not found"):
        store.install_policy("nope", b"policy", 1)


def test_an_identical_concurrent_claim_is_not_taken_for_a_resend(dynamo: tuple[Any, Hooked]) -> None:
    """Two requests with the same key, body and time: only the first holds the claim (each write has its own id;
    the same content is not proof that this call wrote it)."""
    store, _ = dynamo
    assert store.begin_idempotent("w1", "k1", H, T0) is None
    with pytest.raises(IdempotencyInProgress, match="idempotency key 'k1': the first request has not completed"):
        store.begin_idempotent("w1", "k1", H, T0)
    store.create_approval(Approval("a1", "w1", b"{}", ApprovalStatus.PENDING, T0))
    store.decide_approval("a1", ApprovalStatus.REJECTED, None, T0)
    with pytest.raises(AlreadyDecided, match="already rejected"):
        store.decide_approval("a1", ApprovalStatus.REJECTED, None, T0)


# -- claiming webhooks ---------------------------------------------------------------------------------------------
LEASE = 30.0


def outbox_item(event_id: str, wallet_id: str = "w1") -> OutboxItem:
    return OutboxItem(event_id, wallet_id, "t", b"{}", T0, next_attempt_at=T0)


def test_an_item_rescheduled_after_the_read_is_not_claimed(dynamo: tuple[Any, Hooked]) -> None:
    """The claim re-checks due time and lease in its condition. Before: only the attempt count was checked, and
    mark_failed's reschedule does not change it, so an item rescheduled an hour out was claimed and sent at once."""
    store, client = dynamo
    store.enqueue_webhook(outbox_item("e1"))
    [held] = store.claim_webhooks(T0, LEASE, 10)  # worker C takes it, then stalls past its lease
    later = T0 + 60

    def query_then_c_reschedules(real: Hook, **kwargs: Any) -> Any:
        page = real(**kwargs)  # worker A has read e1 as due (its lease has ended)
        del client.hooks["query"]
        store.mark_failed("e1", held.lease_id or "", now=later, error="HTTP 500", status_code=500,
                          next_attempt_at=later + 3600)  # fmt: skip
        return page

    client.hooks["query"] = query_then_c_reschedules
    assert store.claim_webhooks(later, LEASE, 10) == []
    assert store.get_outbox_item("e1").attempts == 1
    assert [c.event_id for c in store.claim_webhooks(later + 3600, LEASE, 10)] == ["e1"]


def test_a_store_failure_mid_batch_hands_over_what_was_leased(dynamo: tuple[Any, Hooked]) -> None:
    """Before: the error was raised after two items had been leased (an attempt used up each); the worker got
    nothing, and the two sat leased and unsent until their lease ended."""
    store, client = dynamo
    for i in range(3):
        store.create_wallet(make_wallet(f"w-e{i}"))  # a claim takes one item per wallet
        store.enqueue_webhook(outbox_item(f"e{i}", f"w-e{i}"))
    leases: list[str] = []

    def third_lease_throttled(real: Hook, **kwargs: Any) -> Any:
        leases.append(kwargs["TransactItems"][0]["Update"]["Key"]["sk"]["S"])
        if len(leases) == 3:
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}, "TransactWriteItems"
            )
        return real(**kwargs)

    client.hooks["transact_write_items"] = third_lease_throttled
    claimed = store.claim_webhooks(T0, LEASE, 10)
    assert [(c.event_id, c.attempts) for c in claimed] == [("e0", 1), ("e1", 1)]
    assert all(c == store.get_outbox_item(c.event_id) for c in claimed)
    del client.hooks["transact_write_items"]
    assert [c.event_id for c in store.claim_webhooks(T0 + 1, LEASE, 10)] == ["e2"]  # unleased, claimable at once


def test_a_failing_first_claim_is_raised(dynamo: tuple[Any, Hooked]) -> None:
    store, client = dynamo
    store.enqueue_webhook(outbox_item("e1"))

    def throttled(real: Hook, **kwargs: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}, "TransactWriteItems"
        )

    client.hooks["transact_write_items"] = throttled
    with pytest.raises(StoreUnavailable, match="ProvisionedThroughputExceededException"):
        store.claim_webhooks(T0, LEASE, 10)
    del client.hooks["transact_write_items"]
    assert store.get_outbox_item("e1").lease_id is None


def test_a_resent_claim_is_this_claim(dynamo: tuple[Any, Hooked]) -> None:
    """Before: the resend failed its condition against the first send, the item counted as "claimed by another
    worker", and it sat leased to nobody until the lease ended. A claim is a transaction (the item's lease and its
    wallet's lease item); its resend carries the first send's token."""
    store, client = dynamo
    store.enqueue_webhook(outbox_item("e1"))
    with transaction_answer_lost(client) as resent:
        [claimed] = store.claim_webhooks(T0, LEASE, 10)
    assert resent and claimed == store.get_outbox_item("e1") and claimed.attempts == 1
    store.mark_delivered("e1", claimed.lease_id or "", now=T0 + 1, status_code=200)


@pytest.mark.parametrize("losses", [MAX_RESERVE_ATTEMPTS - 1, MAX_RESERVE_ATTEMPTS])
def test_a_reservation_losing_every_version_race_is_unavailable_and_writes_nothing(
    dynamo: tuple[Any, Hooked], losses: int
) -> None:
    """The wallet's ledger version changed under each attempt (another reservation won): the check is redone and
    the write resent, up to `MAX_RESERVE_ATTEMPTS` sends; past that the store is unavailable (503), nothing is
    reserved, and the id stays free. Before this test, no test reached the give-up (returning None passed)."""
    store, client = dynamo
    client.hooks["transact_write_items"], calls = cancel({0: "ConditionalCheckFailed"}, times=losses)
    if losses < MAX_RESERVE_ATTEMPTS:
        reservation = store.reserve("w1", "r1", {"SOL": 5}, {}, T0)
        assert (reservation.request_id, len(calls)) == ("r1", losses + 1)
        assert store.reservation_status("w1", "r1") == ReservationStatus.PENDING
        return
    with pytest.raises(StoreUnavailable, match="reservation contended") as info:
        store.reserve("w1", "r1", {"SOL": 5}, {}, T0)
    assert not isinstance(info.value, Conflict)
    assert len(calls) == MAX_RESERVE_ATTEMPTS
    del client.hooks["transact_write_items"]
    with pytest.raises(NotFound):
        store.reservation_status("w1", "r1")
    assert store.spent_in_window("w1", "SOL", 60, T0) == 0
    store.reserve("w1", "r1", {"SOL": 5}, {}, T0)  # the id was never taken


def test_a_reservation_whose_idempotency_claim_lost_a_race_is_in_progress_and_reserves_nothing(
    dynamo: tuple[Any, Hooked],
) -> None:
    """A concurrent request with the same idempotency key reserved and claimed the key between this request's read
    and its transaction: the claim's condition fails (an ``extra`` action of the reservation), which is final, not a
    version race to resend, and not a reused request id: the key's first request is in progress; this request
    reserved nothing and its request id stays free."""
    store, client = dynamo
    calls: list[int] = []

    def concurrent_first(real: Hook, **kwargs: Any) -> Any:
        calls.append(len(kwargs["TransactItems"]))
        if len(calls) == 1:
            store.begin_signing("w1", "k1", H, request_id="r0", amounts={"SOL": 5}, limits={}, now=T0)
        return real(**kwargs)

    client.hooks["transact_write_items"] = concurrent_first
    with pytest.raises(IdempotencyInProgress, match="the first request has not completed"):
        store.begin_signing("w1", "k1", H, request_id="r1", amounts={"SOL": 7}, limits={}, now=T0)
    assert len(calls) == 2  # the concurrent one, and this one once: not resent
    del client.hooks["transact_write_items"]
    with pytest.raises(NotFound):
        store.reservation_status("w1", "r1")
    assert store.reservation_status("w1", "r0") == ReservationStatus.PENDING
    assert store.spent_in_window("w1", "SOL", 60, T0) == 5
    assert store.count_requests("w1", T0) == 1
    store.reserve("w1", "r1", {"SOL": 7}, {}, T0)


def test_a_signing_that_ends_between_the_marks_query_and_the_approvals_read_is_not_stalled(
    dynamo: tuple[Any, Hooked],
) -> None:
    """`stalled_approvals` finds candidates by their signing marks, then reads each approval: a signing that ended
    in between (another host finished or refused it) is no longer stalled, though its mark was read."""
    store, client = dynamo
    log = AuditLog(store, FakeClock())
    store.create_approval(Approval("a1", "w1", b"{}", ApprovalStatus.PENDING, T0))
    decided = DecideApproval("a1", ApprovalStatus.APPROVED, b"yes", T0, "s1")
    store.apply_audited([decided], log.sealer("approval.approved", {}, wallet_id="w1"))
    assert [a.approval_id for a in store.stalled_approvals(T0 + 1, 10)] == ["a1"]
    ended: list[bool] = []

    def finished_meanwhile(real: Hook, **kwargs: Any) -> Any:
        if kwargs["Key"]["sk"]["S"] == "AP#a1" and not ended:
            ended.append(True)
            store.apply_audited([FinishApproval("a1", "s1")], log.sealer("transaction.refused", {}, wallet_id="w1"))
        return real(**kwargs)

    client.hooks["get_item"] = finished_meanwhile
    assert store.stalled_approvals(T0 + 1, 10) == []
    assert ended == [True]
