"""Contract tests for one open approval per wallet and transaction message (`CreateApproval`, `Approval.message_hash`)
on every adapter: while an approval of a message is pending, or approved with its signing under way, a new approval
of the same message of the same wallet is refused (`ApprovalPending`, naming the open one), before the queue's bound,
and nothing of its transaction is written; a rejection or the signing's end frees the message, a reopening holds it
again. SQLite looks it up under the write lock; DynamoDB holds it with one conditionally written item.

Before (review s1, s6): the same transaction escalated twice made two approvals; approving both counted its amount
twice and recorded two ``transaction.signed``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import ApprovalPending, Conflict, InvalidInput
from parent_proxy.store.model import ApprovalStatus
from parent_proxy.store.protocol import Store
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.store.sqlite_schema import SCHEMA_VERSION
from parent_proxy.store.state_changes import DecideApproval, FinishApproval, ReopenApproval
from tests.proxy.approval_messages import M1, M2, T0, approval, escalate, previous_build_decides, refused
from tests.proxy.conftest import FakeClock, make_wallet


def test_a_message_has_one_open_approval(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    escalate(s, clock, approval("a1"))
    assert s.get_approval("a1").message_hash == M1
    refused(s, clock, approval("a2"), "a1")
    with pytest.raises(ApprovalPending, match="approval a1"):
        s.create_approval(approval("a2"))
    escalate(s, clock, approval("a3", M2))  # another message
    escalate(s, clock, approval("b1", wallet_id="w2"))  # the same message of another wallet
    escalate(s, clock, approval("n1", None))  # no message hash (stored before it was kept): never matched
    escalate(s, clock, approval("n2", None))
    assert [a.approval_id for a in s.pending_approvals("w1")] == ["a1", "a3", "n1", "n2"]


def test_it_is_refused_before_the_queue_bound(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    escalate(s, clock, approval("a1"), bound=1)
    refused(s, clock, approval("a2"), "a1", bound=1)  # not ApprovalQueueFull: the agent is told its approval


def test_a_rejection_frees_the_message(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    escalate(s, clock, approval("a1"))
    s.decide_approval("a1", ApprovalStatus.REJECTED, None, T0)
    escalate(s, clock, approval("a2"))
    refused(s, clock, approval("a3"), "a2")


def test_a_signing_holds_it_until_it_finishes_and_a_reopening_holds_it_again(
    wallet_store: Store, clock: FakeClock
) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    escalate(s, clock, approval("a1"))
    s.decide_approval("a1", ApprovalStatus.APPROVED, b"yes", T0, signing="r1")
    refused(s, clock, approval("a2"), "a1")  # approved, being signed: still the message's approval
    s.apply_audited([ReopenApproval("a1", b"yes", "r1")], log.sealer("approval.reopened", {}, wallet_id="w1"))
    refused(s, clock, approval("a2"), "a1")
    again = DecideApproval("a1", ApprovalStatus.APPROVED, b"yes", T0, "r2")
    s.apply_audited([again], log.sealer("approval.approved", {}, wallet_id="w1"))
    s.apply_audited([FinishApproval("a1", "r2")], log.sealer("transaction.refused", {}, wallet_id="w1"))
    escalate(s, clock, approval("a2"))  # its signing finished: the message is free again
    assert [a.approval_id for a in s.pending_approvals("w1")] == ["a2"]


def test_an_approval_approved_without_a_signing_frees_it(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    escalate(s, clock, approval("a1"))
    previous_build_decides(s, "a1", ApprovalStatus.APPROVED)  # none named (a build before): never under way
    escalate(s, clock, approval("a2"))
    refused(s, clock, approval("a3"), "a2")


def test_a_malformed_message_hash_is_refused(wallet_store: Store, clock: FakeClock) -> None:
    with pytest.raises(InvalidInput, match="message_hash"):
        escalate(wallet_store, clock, approval("a1", b"short"))
    assert wallet_store.pending_approvals("w1") == []


def test_a_version_11_database_gets_the_column(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.create_wallet(make_wallet("w1"))
    store.close()
    with sqlite3.connect(path) as conn:  # back to version 11: approvals without message_hash
        conn.execute("DROP INDEX approvals_by_message")
        conn.execute("ALTER TABLE approvals DROP COLUMN signed_answer")
        conn.execute("ALTER TABLE approvals DROP COLUMN message_hash")
        conn.execute("INSERT INTO approvals VALUES ('old', 'w1', x'7b7d', 'pending', 1.0, NULL, NULL, NULL)")
        conn.execute("PRAGMA user_version = 11")
    migrated = SqliteStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 13
    assert migrated.get_approval("old").message_hash is None
    escalate(migrated, clock, approval("a1"))
    refused(migrated, clock, approval("a2"), "a1")
    migrated.close()


def test_a_reused_approval_id_of_a_free_message_is_a_conflict(wallet_store: Store, clock: FakeClock) -> None:
    """The message's mark would be written, the approval's id is taken: the refusal is the id's (`Conflict`), not
    the message's, and nothing is written (the other message stays free)."""
    s = wallet_store
    escalate(s, clock, approval("a1"))
    with pytest.raises(Conflict, match="a1"):
        s.create_approval(approval("a1", M2))
    assert s.get_approval("a1").message_hash == M1
    escalate(s, clock, approval("a2", M2))


def test_the_same_approval_again_is_refused_as_its_messages(wallet_store: Store, clock: FakeClock) -> None:
    """Its id and its message are both taken: the message's refusal comes first (`ApprovalPending` naming the open
    one), on every adapter; nothing changes."""
    s = wallet_store
    escalate(s, clock, approval("a1"))
    with pytest.raises(ApprovalPending, match="approval a1 of the same message is still open"):
        s.create_approval(approval("a1"))
    assert [a.approval_id for a in s.pending_approvals("w1")] == ["a1"]
