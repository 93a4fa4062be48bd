"""Contract tests (SQLite and DynamoDB) for `ReplaceAnswer`: the answer stored under a completed idempotency key is
replaced only if it is exactly the one named, for the same request digest, in the transaction of `apply_audited` or
`finish_signing` that carries it; a key that holds anything else is left as it is, and never refuses the rest of the
transaction. `replace_idempotent` with ``previous`` is the same condition on its own (a `Conflict` then).

This is how the owner's decision on an escalated request replaces the agent's stored 202
(`parent_proxy.escalation_answers`). Before, nothing could replace an answer on a condition of its content: the 202
stayed the agent's answer for a day whatever the owner decided.
"""

from __future__ import annotations

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import Conflict, InvalidInput, NotFound
from parent_proxy.store.model import Approval, ApprovalStatus, IdempotentAnswer, ReservationStatus
from parent_proxy.store.protocol import Store
from parent_proxy.store.state_changes import CompleteIdempotent, DecideApproval, FinishApproval, ReplaceAnswer
from tests.proxy.conftest import FakeClock

T0 = 1_700_000_000.0
H1, H2 = b"\x01" * 32, b"\x02" * 32
PENDING = b'{"body":{"approval_id":"a1","status":"pending_approval"},"status_code":202}'
SIGNED = b'{"body":{"status":"signed"},"status_code":200}'
DAY = 86_400


def settle(key: str = "k", digest: bytes = H1, previous: bytes = PENDING, response: bytes = SIGNED) -> ReplaceAnswer:
    return ReplaceAnswer(IdempotentAnswer("w1", key, digest, response), previous)


def answered(s: Store, key: str, digest: bytes, response: bytes, now: float = T0) -> None:
    assert s.begin_idempotent("w1", key, digest, now) is None
    s.complete_idempotent("w1", key, digest, response)


def answer_of(s: Store, key: str, digest: bytes = H1, now: float = T0 + 1) -> bytes | None:
    record = s.lookup_idempotent("w1", key, digest, now)
    return None if record is None else record.response


def reject(s: Store, log: AuditLog, *replaced: ReplaceAnswer) -> None:
    """A rejection of the pending approval a1 with ``replaced``, as `ApprovalFlow.reject` writes it."""
    s.create_approval(Approval("a1", "w1", b"{}", ApprovalStatus.PENDING, T0))
    decided = DecideApproval("a1", ApprovalStatus.REJECTED, None, T0)
    s.apply_audited([decided, *replaced], log.sealer("approval.rejected", {}, wallet_id="w1"))


def test_the_named_answer_is_replaced_with_the_decision(wallet_store: Store, clock: FakeClock) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    answered(s, "k", H1, PENDING)
    reject(s, log, settle())
    assert answer_of(s, "k") == SIGNED and s.get_approval("a1").status == ApprovalStatus.REJECTED
    assert s.audit_head() is not None and s.audit_head().event_type == "approval.rejected"  # type: ignore[union-attr]
    record = s.lookup_idempotent("w1", "k", H1, T0 + DAY - 1)
    assert record is not None and record.created_at == T0  # its expiry stays: a day after the first request
    assert s.lookup_idempotent("w1", "k", H1, T0 + DAY + 1) is None


@pytest.mark.parametrize(
    "stored",
    ["another answer", "another request's", "in progress", "none", "another wallet's"],
)
def test_any_other_answer_is_left_and_the_decision_written(wallet_store: Store, clock: FakeClock, stored: str) -> None:
    """The key's answer is not the named one: it stays exactly as it was, and the rest of the transaction (the
    decision and its record) is written all the same -- never a refusal."""
    s, log = wallet_store, AuditLog(wallet_store, clock)
    if stored == "another answer":
        answered(s, "k", H1, b'{"status_code":202,"other":true}')
    elif stored == "another request's":
        answered(s, "k", H2, PENDING)  # the same bytes, but another digest
    elif stored == "in progress":
        assert s.begin_idempotent("w1", "k", H1, T0) is None
    elif stored == "another wallet's":
        assert s.begin_idempotent("w2", "k", H1, T0) is None
        s.complete_idempotent("w2", "k", H1, PENDING)
    before = [(w, s.lookup_idempotent(w, "k", H2 if stored == "another request's" else H1, T0 + 1))
              for w in ("w1", "w2") if stored != "in progress"]  # fmt: skip
    reject(s, log, settle())
    assert s.get_approval("a1").status == ApprovalStatus.REJECTED
    assert s.audit_head() is not None and s.audit_head().event_type == "approval.rejected"  # type: ignore[union-attr]
    after = [(w, s.lookup_idempotent(w, "k", H2 if stored == "another request's" else H1, T0 + 1))
             for w in ("w1", "w2") if stored != "in progress"]  # fmt: skip
    assert after == before
    if stored == "in progress":
        s.complete_idempotent("w1", "k", H1, b"its own")  # still claimed by its own request, which completes it
        assert answer_of(s, "k") == b"its own"
    if stored == "none":
        assert s.begin_idempotent("w1", "k", H1, T0 + 1) is None  # nothing was created under the key


def test_an_expired_key_taken_by_a_new_request_is_left(wallet_store: Store, clock: FakeClock) -> None:
    """The key expired and the same request was sent again under it (a new escalation, a new 202): the first
    approval's decision does not touch the second's answer."""
    s, log = wallet_store, AuditLog(wallet_store, clock)
    answered(s, "k", H1, PENDING)
    second = PENDING.replace(b'"a1"', b'"a2"')
    answered(s, "k", H1, second, now=T0 + DAY + 1)
    reject(s, log, settle())
    assert answer_of(s, "k", now=T0 + DAY + 2) == second


def test_finish_signing_replaces_the_named_answer(wallet_store: Store, clock: FakeClock) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    answered(s, "k", H1, PENDING)
    answered(s, "other", H2, PENDING)
    s.create_approval(Approval("a1", "w1", b"{}", ApprovalStatus.PENDING, T0))
    s.decide_approval("a1", ApprovalStatus.APPROVED, b"yes", T0, "s1")
    reservation = s.reserve("w1", "s1", {"SOL": 5}, {}, T0)
    s.finish_signing(reservation, log.sealer("transaction.signed", {}, wallet_id="w1"), None, None,
                     FinishApproval("a1", "s1"), replaced=settle())  # fmt: skip
    assert answer_of(s, "k") == SIGNED and answer_of(s, "other", H2) == PENDING
    assert s.reservation_status("w1", "s1") == ReservationStatus.COMMITTED and s.get_approval("a1").signing is None


def test_finish_signing_with_another_answer_commits_all_the_same(wallet_store: Store, clock: FakeClock) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    answered(s, "k", H1, b"something else")
    reservation = s.reserve("w1", "s1", {"SOL": 5}, {}, T0)
    record = s.finish_signing(reservation, log.sealer("transaction.signed", {}, wallet_id="w1"), None, None,
                              replaced=settle())  # fmt: skip
    assert s.audit_head() == record and s.reservation_status("w1", "s1") == ReservationStatus.COMMITTED
    assert answer_of(s, "k") == b"something else"


def test_one_change_per_key_answer_and_bad_input(wallet_store: Store, clock: FakeClock) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    assert s.begin_idempotent("w1", "k", H1, T0) is None
    complete = CompleteIdempotent(IdempotentAnswer("w1", "k", H1, PENDING))
    with pytest.raises(InvalidInput, match="at most one change of an idempotency key's answer"):
        s.apply_audited([complete, settle()], log.sealer("t", {}, wallet_id="w1"))
    with pytest.raises(InvalidInput, match="at most one change of an idempotency key's answer"):
        s.finish_signing(None, log.sealer("t", {}, wallet_id="w1"), None, complete.answer, replaced=settle())
    with pytest.raises(InvalidInput, match="previous"):
        s.apply_audited([settle(previous="x")], log.sealer("t", {}, wallet_id="w1"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="request_hash"):
        s.apply_audited([settle(digest=b"short")], log.sealer("t", {}, wallet_id="w1"))
    with pytest.raises(InvalidInput, match="replaced"):
        s.finish_signing(None, log.sealer("t", {}, wallet_id="w1"), None, None, replaced=complete)  # type: ignore[arg-type]
    assert s.audit_head() is None  # nothing was written
    s.apply_audited([complete], log.sealer("t", {}, wallet_id="w1"))  # the key is still in progress: it completes
    assert answer_of(s, "k") == PENDING


def test_replace_idempotent_with_previous_replaces_only_that_answer(wallet_store: Store) -> None:
    """`replace_idempotent(previous=...)`: a `Conflict` unless the key holds exactly ``previous`` (a submission's
    outcome replacing the answer stored with its signature, and nothing else)."""
    s = wallet_store
    with pytest.raises(NotFound, match="idempotency key 'k' not found"):
        s.replace_idempotent("w1", "k", H1, b"late", previous=PENDING)
    answered(s, "k", H1, PENDING)
    with pytest.raises(Conflict, match="'k' does not hold the answer to replace for this request"):
        s.replace_idempotent("w1", "k", H1, b"late", previous=b"something else")
    with pytest.raises(Conflict, match="'k' is not completed for this request"):
        s.replace_idempotent("w1", "k", H2, b"late", previous=PENDING)  # another request's digest
    with pytest.raises(InvalidInput, match="previous"):
        s.replace_idempotent("w1", "k", H1, b"late", previous="x")  # type: ignore[arg-type]
    assert answer_of(s, "k") == PENDING
    s.replace_idempotent("w1", "k", H1, SIGNED, previous=PENDING)
    assert answer_of(s, "k") == SIGNED
    with pytest.raises(Conflict, match="does not hold the answer to replace"):
        s.replace_idempotent("w1", "k", H1, b"again", previous=PENDING)  # once: it no longer holds it
