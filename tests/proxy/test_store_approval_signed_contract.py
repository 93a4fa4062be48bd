"""Contract tests for a signed approval's hold on its message (`FinishApproval.answer`, `Approval.signed_answer`,
`ApprovalSigned`) on every adapter: once an approval's signing recorded a signature, the approval keeps the signed
answer and a new approval of the same wallet and message is refused naming it (`ApprovalSigned`, before the bound),
nothing of its transaction written, for as long as the approval is kept; a finish that is refused keeps nothing; an
enclave refusal (a finish without an answer), a rejection, another message or another wallet leave it free. SQLite
looks it up under the write lock; DynamoDB keeps the message's mark naming the signed approval.

Before (s21, "Left"): the same transaction escalated after its approval was signed made a new approval, which the
owner could approve too, counting its amounts twice.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import AlreadyDecided, ApprovalPending, ApprovalSigned, FrozenMeanwhile, InvalidInput
from parent_proxy.store.model import ApprovalStatus
from parent_proxy.store.protocol import Store
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.store.sqlite_schema import SCHEMA_VERSION
from parent_proxy.store.state_changes import DecideApproval, FinishApproval, StillUnfrozen
from parent_proxy.store.validation import MAX_BLOB_BYTES
from tests.proxy.approval_messages import M1, M2, T0, approval, escalate
from tests.proxy.conftest import FakeClock, make_wallet

SIGNED = b'{"body":{"request_id":"r1","signature":"5igNAtur3"},"status_code":200}'


def approve(s: Store, clock: FakeClock, approval_id: str, signing: str) -> None:
    decided = DecideApproval(approval_id, ApprovalStatus.APPROVED, b"yes", T0, signing)
    s.apply_audited([decided], AuditLog(s, clock).sealer("approval.approved", {}, wallet_id="w1"))


def finish(s: Store, clock: FakeClock, approval_id: str, signing: str, answer: bytes | None = SIGNED) -> None:
    """What the sign flow writes when the owner's signing ends: `Store.finish_signing` with its record."""
    seal = AuditLog(s, clock).sealer("transaction.signed", {}, wallet_id="w1")
    s.finish_signing(None, seal, None, None, FinishApproval(approval_id, signing, answer=answer))


def signed_refused(s: Store, clock: FakeClock, approval_id: str, signed_id: str) -> None:
    before = (s.pending_approvals("w1"), s.recent_requests("w1", 0.0), s.audit_head())
    with pytest.raises(ApprovalSigned, match=f"approval {signed_id} of the same message was signed") as signed:
        escalate(s, clock, approval(approval_id), bound=1)  # before the bound, too
    assert (signed.value.wallet_id, signed.value.approval_id) == ("w1", signed_id)
    assert (s.pending_approvals("w1"), s.recent_requests("w1", 0.0), s.audit_head()) == before


def test_a_signed_approval_answers_its_message_for_good(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    escalate(s, clock, approval("a1"))
    approve(s, clock, "a1", "r1")
    finish(s, clock, "a1", "r1")
    kept = s.get_approval("a1")
    assert (kept.status, kept.signing, kept.signed_answer, kept.is_signed) == (
        ApprovalStatus.APPROVED,
        None,
        SIGNED,
        True,
    )
    assert b"5igNAtur3".decode() not in repr(kept)  # an answer is never in a repr
    signed_refused(s, clock, "a2", "a1")
    with pytest.raises(ApprovalSigned, match="approval a1"):
        s.create_approval(approval("a2"))  # the store's own call as well
    clock.t += 400 * 86_400  # no expiry: as long as the approval is kept
    signed_refused(s, clock, "a3", "a1")
    escalate(s, clock, approval("b1", M2))  # another message
    escalate(s, clock, approval("c1", wallet_id="w2"))  # the same message of another wallet
    assert [a.approval_id for a in s.pending_approvals("w1")] == ["b1"]
    signed_refused(s, clock, "a4", "a1")  # the queue full at its bound of 1: still told of the signed approval


def test_the_audited_finish_keeps_the_answer_too(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    escalate(s, clock, approval("a1"))
    approve(s, clock, "a1", "r1")
    ended = FinishApproval("a1", "r1", answer=SIGNED)
    s.apply_audited([ended], AuditLog(s, clock).sealer("transaction.signed", {}, wallet_id="w1"))
    assert s.get_approval("a1").signed_answer == SIGNED
    signed_refused(s, clock, "a2", "a1")


def test_a_refused_finish_keeps_nothing(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    escalate(s, clock, approval("a1"))
    approve(s, clock, "a1", "r1")
    head = s.audit_head()
    with pytest.raises(AlreadyDecided):
        finish(s, clock, "a1", "r-other")  # not this approval's signing (reopened and approved again, say)
    assert (s.get_approval("a1").signed_answer, s.get_approval("a1").signing, s.audit_head()) == (None, "r1", head)
    with pytest.raises(ApprovalPending, match="approval a1"):  # still open, not signed
        escalate(s, clock, approval("a2"))
    finish(s, clock, "a1", "r1")
    signed_refused(s, clock, "a2", "a1")


def test_an_enclave_refusal_or_a_rejection_leaves_the_message_free(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    escalate(s, clock, approval("a1"))
    approve(s, clock, "a1", "r1")
    finish(s, clock, "a1", "r1", answer=None)  # the enclave refused: nothing signed
    assert s.get_approval("a1").signed_answer is None and not s.get_approval("a1").is_signed
    escalate(s, clock, approval("a2"))  # escalates anew
    s.decide_approval("a2", ApprovalStatus.REJECTED, None, T0)
    escalate(s, clock, approval("a3"))
    assert [a.approval_id for a in s.pending_approvals("w1")] == ["a3"]


@pytest.mark.parametrize("answer", [b"x" * (MAX_BLOB_BYTES + 1), "text"])
def test_a_malformed_answer_is_refused_before_anything_is_written(
    wallet_store: Store, clock: FakeClock, answer: object
) -> None:
    s = wallet_store
    escalate(s, clock, approval("a1"))
    approve(s, clock, "a1", "r1")
    head = s.audit_head()
    with pytest.raises(InvalidInput, match="answer"):
        finish(s, clock, "a1", "r1", answer=answer)  # type: ignore[arg-type]
    assert (s.get_approval("a1").signing, s.audit_head()) == ("r1", head)


def test_a_new_approval_cannot_carry_a_signed_answer(wallet_store: Store) -> None:
    with pytest.raises(InvalidInput, match="status"):
        wallet_store.create_approval(replace(approval("a1"), signed_answer=SIGNED))
    assert wallet_store.pending_approvals("w1") == []


def test_a_version_12_database_gets_the_column(tmp_path: Path, clock: FakeClock) -> None:
    """Approvals signed before the column are not matched (their answer was not kept): the message escalates anew."""
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.create_wallet(make_wallet("w1"))
    store.close()
    with sqlite3.connect(path) as conn:  # back to version 12: approvals without signed_answer
        conn.execute("ALTER TABLE approvals DROP COLUMN signed_answer")
        conn.execute("INSERT INTO approvals VALUES ('old', 'w1', x'7b7d', 'approved', 1.0, x'79', 2.0, NULL, ?)", (M1,))
        conn.execute("PRAGMA user_version = 12")
    migrated = SqliteStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 13
    assert migrated.get_approval("old").signed_answer is None
    escalate(migrated, clock, approval("a1"))
    approve(migrated, clock, "a1", "r1")
    finish(migrated, clock, "a1", "r1")
    signed_refused(migrated, clock, "a2", "a1")
    migrated.close()


def test_a_signing_record_refused_part_way_keeps_no_answer(wallet_store: Store, clock: FakeClock) -> None:
    """The signing's transaction refused by another of its parts (the wallet frozen meanwhile: the signature is
    withheld): the approval keeps no answer and stays open (then given back), and the message is not held as signed."""
    s = wallet_store
    escalate(s, clock, approval("a1"))
    approve(s, clock, "a1", "r1")
    s.set_frozen("w1", True, "owner order")
    head = s.audit_head()
    seal = AuditLog(s, clock).sealer("transaction.signed", {}, wallet_id="w1")
    with pytest.raises(FrozenMeanwhile):
        s.finish_signing(
            None, seal, None, None, FinishApproval("a1", "r1", answer=SIGNED), unfrozen=StillUnfrozen("w1", 0)
        )
    kept = s.get_approval("a1")
    assert (kept.signed_answer, kept.signing, s.audit_head()) == (None, "r1", head)
    with pytest.raises(ApprovalPending, match="approval a1"):
        escalate(s, clock, approval("a2"))


@pytest.mark.parametrize("answer", [SIGNED, None], ids=["signed", "refused-by-the-enclave"])
def test_a_finished_signing_is_never_reopened(wallet_store: Store, clock: FakeClock, answer: bytes | None) -> None:
    """Neither by its own signing (it finished) nor by a reopening that names none (refused as input: every
    reopening names the signing that failed). Before the twenty-fourth session a reopening could name none ("approved
    without one named") and then returned an approval whose signing the enclave refused to pending, so the owner
    could approve it again (the refusal is a decision); before the twenty-third, a signed one too."""
    s = wallet_store
    escalate(s, clock, approval("a1"))
    approve(s, clock, "a1", "r1")
    finish(s, clock, "a1", "r1", answer)
    kept = s.get_approval("a1")
    with pytest.raises(AlreadyDecided, match="approval a1 is approved, not approved by this decision for this"):
        s.reopen_approval("a1", b"yes", "r1")
    with pytest.raises(InvalidInput, match="signing: must be"):
        s.reopen_approval("a1", b"yes", None)  # type: ignore[arg-type]
    assert s.get_approval("a1") == kept and s.pending_approvals("w1") == []
    if answer is not None:
        signed_refused(s, clock, "a2", "a1")
