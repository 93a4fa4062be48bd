"""Contract tests for the bound on a wallet's pending approvals (`CreateApproval.max_pending`) on every adapter:
the count is taken by the write that creates the approval, so the bound holds exactly, also under concurrent
writers; a refused approval writes nothing of its transaction; a rejection or an expiry frees its place (an approval
being signed keeps it: test_store_approval_open_bound_contract.py); other wallets are not affected.

Before, the proxy read the queue and then wrote the approval in another transaction, so concurrent escalations
could pass the bound by as many as ran at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import ApprovalQueueFull, InvalidInput
from parent_proxy.store.model import Approval, ApprovalStatus
from parent_proxy.store.protocol import Store
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.store.state_changes import CreateApproval, DecideApproval, RecordEvent, StateChange
from tests.proxy.conftest import FakeClock, make_wallet

T0 = 1_700_000_000.0
BOUND = 2


def pending(approval_id: str, wallet_id: str = "w1") -> Approval:
    return Approval(approval_id, wallet_id, b'{"request":1}', ApprovalStatus.PENDING, T0)


def escalate(s: Store, log: AuditLog, approval_id: str, wallet_id: str = "w1", bound: int = BOUND) -> None:
    """What the sign flow writes for an escalation: the request's time, the bounded approval, the record."""
    changes: list[StateChange] = [
        RecordEvent(wallet_id, "request", T0),
        CreateApproval(pending(approval_id, wallet_id), bound),
    ]
    s.apply_audited(changes, log.sealer("transaction.escalated", {"id": approval_id}, wallet_id=wallet_id))


def waiting(s: Store, wallet_id: str = "w1") -> list[str]:
    return [a.approval_id for a in s.pending_approvals(wallet_id)]


def test_the_bound_refuses_the_next_approval_and_writes_nothing(wallet_store: Store, clock: FakeClock) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    escalate(s, log, "a1")
    escalate(s, log, "a2")
    before = (waiting(s), s.recent_requests("w1", 0.0), s.audit_head())
    with pytest.raises(ApprovalQueueFull, match=r"wallet w1: 2 approvals are pending already \(at most 2\)") as full:
        escalate(s, log, "a3")
    assert (full.value.wallet_id, full.value.limit) == ("w1", BOUND)
    assert (waiting(s), s.recent_requests("w1", 0.0), s.audit_head()) == before  # not the request's time either
    escalate(s, log, "b1", wallet_id="w2")  # another wallet's queue is its own
    assert waiting(s, "w2") == ["b1"]


def test_a_decision_that_ends_an_approval_frees_its_place(wallet_store: Store, clock: FakeClock) -> None:
    """A rejection (audited or direct) and an expiry free a place; an approval keeps its place while its signing is
    under way (an approval always names one): test_store_approval_open_bound_contract.py."""
    s, log = wallet_store, AuditLog(wallet_store, clock)
    escalate(s, log, "a1")
    escalate(s, log, "a2")
    s.apply_audited(
        [DecideApproval("a1", ApprovalStatus.REJECTED, None, T0)], log.sealer("approval.rejected", {}, wallet_id="w1")
    )
    escalate(s, log, "a3")  # a1 no longer waits
    with pytest.raises(ApprovalQueueFull, match="wallet w1: 2 approvals are pending already"):
        escalate(s, log, "a4")
    s.decide_approval("a2", ApprovalStatus.EXPIRED, None, T0)
    escalate(s, log, "a4")
    assert waiting(s) == ["a3", "a4"]


@pytest.mark.parametrize("bound", [0, -1, 10_001, True, 2.0])
def test_a_malformed_bound_is_refused_before_anything_is_written(
    wallet_store: Store, clock: FakeClock, bound: object
) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    head = s.audit_head()
    with pytest.raises(InvalidInput, match="max_pending"):
        escalate(s, log, "a1", bound=bound)  # type: ignore[arg-type]
    assert (waiting(s), s.audit_head()) == ([], head)


def test_concurrent_escalations_never_pass_the_bound_on_sqlite(tmp_path: Path, clock: FakeClock) -> None:
    """Eight writers, each with its own connection to one database file (as proxy processes have), race to queue
    twenty approvals under a bound of five: exactly five wait."""
    path = tmp_path / "state.db"
    setup = SqliteStore(path)
    setup.create_wallet(make_wallet("w1"))
    setup.close()
    outcomes: list[str] = []
    lock, start = threading.Lock(), threading.Barrier(8)

    def writer(n: int) -> None:
        store = SqliteStore(path)
        log = AuditLog(store, clock)
        start.wait()
        for i in range(20 // 8 + 1):
            try:
                escalate(store, log, f"a{n}-{i}", bound=5)
                outcome = "queued"
            except ApprovalQueueFull:
                outcome = "full"
            with lock:
                outcomes.append(outcome)
        store.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check = SqliteStore(path)
    assert outcomes.count("queued") == 5 and len(check.pending_approvals("w1")) == 5
    check.close()


def test_one_transaction_cannot_queue_more_approvals_than_the_bound(wallet_store: Store, clock: FakeClock) -> None:
    """Two approvals of one wallet in one transaction under a bound of one, on a wallet with none queued yet (on
    DynamoDB its count item does not exist yet, which the count's condition lets through): refused, nothing
    written."""
    s, log = wallet_store, AuditLog(wallet_store, clock)
    head = s.audit_head()
    changes = [CreateApproval(pending("a1"), 1), CreateApproval(pending("a2"), 1)]
    with pytest.raises(ApprovalQueueFull, match=r"\(at most 1\)"):
        s.apply_audited(changes, log.sealer("transaction.escalated", {}, wallet_id="w1"))
    assert (waiting(s), s.audit_head()) == ([], head)
    escalate(s, log, "a3", bound=1)  # the place is free
    assert waiting(s) == ["a3"]


def test_a_transaction_freeing_one_place_and_taking_one_still_keeps_the_bound(
    wallet_store: Store, clock: FakeClock
) -> None:
    """Three approvals wait (queued under a bound of five); one transaction rejects one and queues another under a
    bound of one: the count is unchanged by it, but three after it are above one: refused, nothing written."""
    s, log = wallet_store, AuditLog(wallet_store, clock)
    for approval_id in ("a1", "a2", "a3"):
        escalate(s, log, approval_id, bound=5)
    changes: list[StateChange] = [
        DecideApproval("a1", ApprovalStatus.REJECTED, None, T0),
        CreateApproval(pending("a4"), 1),
    ]
    with pytest.raises(ApprovalQueueFull, match=r"\(at most 1\)"):
        s.apply_audited(changes, log.sealer("transaction.escalated", {}, wallet_id="w1"))
    assert waiting(s) == ["a1", "a2", "a3"]
