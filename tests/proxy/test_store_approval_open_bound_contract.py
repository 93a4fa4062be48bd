"""Contract tests for the bound on a wallet's open approvals (`CreateApproval.max_pending`) on every adapter: an
approval approved for a signing keeps its place until the signing finishes, so a return to pending (a failed signing
given back, a stalled one reopened, a withheld signature) never takes the queue past the bound, and nothing approved
is refused its return; a finished signing (signed, or refused by the enclave) frees the place; a refused finish or
reopening changes no count.

Before (s21, "Left"): the bound counted pending approvals only and was checked on creation only. An approval being
signed left the count, a new escalation took its place, and the failed signing's give-back made the queue one longer
than the bound (each time: 100 + every signing under way).
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import AlreadyDecided, ApprovalQueueFull
from parent_proxy.store.model import ApprovalStatus
from parent_proxy.store.protocol import Store
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.store.state_changes import DecideApproval, FinishApproval, ReopenApproval
from tests.proxy.approval_messages import T0, approval, escalate, previous_build_decides
from tests.proxy.conftest import FakeClock, make_wallet

BOUND = 2
RACE_SECONDS = 120.0
"""The racing test's signer gives up after this long: its writers then made fewer than 200 attempts, and it fails."""


def write(s: Store, clock: FakeClock, change: DecideApproval | ReopenApproval | FinishApproval) -> None:
    s.apply_audited([change], AuditLog(s, clock).sealer("approval.changed", {}, wallet_id="w1"))


def approve(s: Store, clock: FakeClock, approval_id: str, signing: str) -> None:
    write(s, clock, DecideApproval(approval_id, ApprovalStatus.APPROVED, b"yes", T0, signing))


def queue(s: Store, clock: FakeClock, approval_id: str) -> None:
    escalate(s, clock, approval(approval_id, None), bound=BOUND)


def full(s: Store, clock: FakeClock, approval_id: str) -> None:
    head = s.audit_head()
    with pytest.raises(ApprovalQueueFull, match=f"at most {BOUND}"):
        queue(s, clock, approval_id)
    assert s.audit_head() == head


def waiting(s: Store) -> list[str]:
    return [a.approval_id for a in s.pending_approvals("w1")]


def test_an_approval_being_signed_keeps_its_place_until_its_signing_finishes(
    wallet_store: Store, clock: FakeClock
) -> None:
    s = wallet_store
    queue(s, clock, "a1")
    queue(s, clock, "a2")
    approve(s, clock, "a1", "r1")
    full(s, clock, "a3")  # before: a3 queued, and a1's give-back below made three
    write(s, clock, ReopenApproval("a1", b"yes", "r1"))  # the signing failed: given back
    assert waiting(s) == ["a1", "a2"]
    full(s, clock, "a3")
    approve(s, clock, "a1", "r2")
    s.finish_signing(
        None, AuditLog(s, clock).sealer("transaction.signed", {}, wallet_id="w1"), None, None,
        FinishApproval("a1", "r2", answer=b"signed"),
    )  # fmt: skip
    queue(s, clock, "a3")  # the signing finished: its place is free
    full(s, clock, "a4")
    approve(s, clock, "a2", "r3")
    write(s, clock, FinishApproval("a2", "r3"))  # refused by the enclave: finished too
    queue(s, clock, "a4")
    assert waiting(s) == ["a3", "a4"]


def test_a_refused_finish_or_reopening_changes_no_place(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    queue(s, clock, "a1")
    queue(s, clock, "a2")
    approve(s, clock, "a1", "r1")
    for refused in (FinishApproval("a1", "r-other"), ReopenApproval("a1", b"yes", "r-other")):
        with pytest.raises(AlreadyDecided):
            write(s, clock, refused)
    full(s, clock, "a3")
    write(s, clock, ReopenApproval("a1", b"yes", "r1"))
    with pytest.raises(AlreadyDecided):  # reopened already (the sweep and the give-back, say)
        write(s, clock, ReopenApproval("a1", b"yes", "r1"))
    full(s, clock, "a3")
    for approval_id in ("a1", "a2"):
        s.decide_approval(approval_id, ApprovalStatus.REJECTED, None, T0)
    queue(s, clock, "a3")
    queue(s, clock, "a4")
    full(s, clock, "a5")


def test_the_direct_methods_keep_the_place_as_the_audited_changes_do(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    queue(s, clock, "a1")
    queue(s, clock, "a2")
    s.decide_approval("a1", ApprovalStatus.APPROVED, b"yes", T0, signing="r1")
    full(s, clock, "a3")
    s.reopen_approval("a1", b"yes", "r1")
    full(s, clock, "a3")
    assert waiting(s) == ["a1", "a2"]


def test_signings_racing_escalations_never_pass_the_bound_on_sqlite(tmp_path: Path, clock: FakeClock) -> None:
    """Four writers queue escalations under a bound of three while another approves the first one for a signing and
    gives it back, over and over, each with its own connection to one database file: the queue never holds more than
    three (before: four, once the first was given back with three others queued)."""
    path = tmp_path / "state.db"
    setup = SqliteStore(path)
    setup.create_wallet(make_wallet("w1"))
    escalate(setup, clock, approval("signed", None), bound=3)
    setup.close()
    stop, seen, lock, start = threading.Event(), list[int](), threading.Lock(), threading.Barrier(5)

    def signer() -> None:
        store = SqliteStore(path)
        start.wait()
        give_up = time.monotonic() + RACE_SECONDS
        i = 0
        while time.monotonic() < give_up:  # until the writers have tried 200 escalations, however slow the machine
            store.decide_approval("signed", ApprovalStatus.APPROVED, b"yes", T0, signing=f"r{i}")
            store.reopen_approval("signed", b"yes", f"r{i}")
            i += 1
            with lock:
                if len(seen) >= 200:
                    break
        stop.set()
        store.close()

    def escalations(n: int) -> None:
        store = SqliteStore(path)
        start.wait()
        i = 0
        while not stop.is_set():
            with contextlib.suppress(ApprovalQueueFull):
                escalate(store, clock, approval(f"e{n}-{i}", None), bound=3)
            i += 1
            with lock:
                seen.append(len(store.pending_approvals("w1")))
        store.close()

    threads = [threading.Thread(target=signer), *(threading.Thread(target=escalations, args=(n,)) for n in range(4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check = SqliteStore(path)
    assert max(seen) <= 3 and len(check.pending_approvals("w1")) <= 3
    assert len(seen) >= 200  # the writers did race the signer
    check.close()


def test_an_approval_a_previous_build_approved_counts_as_it_did(wallet_store: Store, clock: FakeClock) -> None:
    """An approval approved for a signing by a build before the kept places left DynamoDB's count when it was
    approved: its finish frees nothing more, its reopening takes a place again (SQLite counts the rows themselves)."""
    s = wallet_store
    queue(s, clock, "a1")
    queue(s, clock, "a2")
    previous_build_decides(s, "a1", ApprovalStatus.APPROVED, signing="r1")
    write(s, clock, ReopenApproval("a1", b"yes", "r1"))  # this build gives it back
    assert waiting(s) == ["a1", "a2"]
    full(s, clock, "a3")  # before the reopening counted it: a3 queued, three waiting
    previous_build_decides(s, "a1", ApprovalStatus.APPROVED, signing="r2")
    write(s, clock, FinishApproval("a1", "r2", answer=b"signed"))  # this build finishes it
    queue(s, clock, "a3")
    full(s, clock, "a4")  # a finish that freed a place again would let a4 in: three open
