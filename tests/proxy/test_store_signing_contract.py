"""Contract tests for the store methods of the signing path (`begin_signing`, `finish_signing`,
`lookup_idempotent`), `token_wallet`, `prune`, and exact rolling-window totals under random reservations and
releases, on every `Store` adapter."""

from __future__ import annotations

import hashlib
import random
import re

import pytest

from parent_proxy.audit import AuditLog, iter_audit_records, verify_audit_chain
from parent_proxy.errors import Conflict, IdempotencyInProgress, IdempotencyMismatch, LimitExceeded, NotFound
from parent_proxy.store.model import (
    AuditRecord,
    IdempotencyStatus,
    IdempotentAnswer,
    OutboxItem,
    OutboxStatus,
    ReservationStatus,
    SigningClaim,
)
from parent_proxy.store.protocol import Store
from parent_proxy.store.validation import (
    IDEMPOTENCY_RETENTION_SECONDS,
    IDEMPOTENCY_STALE_SECONDS,
    MAX_WINDOW_SECONDS,
)
from tests.proxy.conftest import FakeClock

T0 = 1_700_000_000.0
DAY = 86_400
H1 = hashlib.sha256(b"request one").digest()
H2 = hashlib.sha256(b"request two").digest()
CAPS = {("SOL", DAY): 1_000}


def begin(s: Store, key: str, request_id: str, amount: int, *, now: float = T0, digest: bytes = H1) -> SigningClaim:
    amounts = {"SOL": amount} if amount else {}
    return s.begin_signing("w1", key, digest, request_id=request_id, amounts=amounts, limits=CAPS, now=now)


def test_begin_signing_claims_records_and_reserves_together(wallet_store: Store) -> None:
    s = wallet_store
    assert s.lookup_idempotent("w1", "k1", H1, T0) is None
    claim = begin(s, "k1", "r1", 400)
    assert claim.replay is None and claim.reservation is not None
    assert claim.reservation.amounts == (("SOL", 400),)
    assert s.reservation_status("w1", "r1") == ReservationStatus.PENDING
    assert s.spent_in_window("w1", "SOL", DAY, T0) == 400
    assert s.recent_requests("w1", T0) == [T0]
    with pytest.raises(IdempotencyInProgress, match="has not completed"):
        s.lookup_idempotent("w1", "k1", H1, T0)
    with pytest.raises(IdempotencyInProgress, match="has not completed"):
        begin(s, "k1", "r2", 1)
    with pytest.raises(IdempotencyMismatch, match="different request"):
        begin(s, "k1", "r2", 1, digest=H2)
    # Nothing spent: claimed and recorded, no reservation.
    free = begin(s, "k2", "r3", 0, now=T0 + 1)
    assert free.replay is None and free.reservation is None
    assert s.recent_requests("w1", T0) == [T0, T0 + 1]
    with pytest.raises(NotFound, match="reservation r3 not found"):
        s.reservation_status("w1", "r3")
    with pytest.raises(NotFound, match="wallet w9 not found"):
        s.begin_signing("w9", "k", H1, request_id="r", amounts={"SOL": 1}, limits=CAPS, now=T0)


def test_begin_signing_over_the_limit_writes_nothing(wallet_store: Store) -> None:
    s = wallet_store
    begin(s, "k1", "r1", 900)
    with pytest.raises(LimitExceeded, match=r"SOL/86400s: 1001 > 1000"):
        begin(s, "k2", "r2", 101, now=T0 + 1)
    assert s.lookup_idempotent("w1", "k2", H1, T0) is None  # the key is still free
    assert s.recent_requests("w1", T0) == [T0]  # the request was not recorded
    with pytest.raises(NotFound, match="reservation r2 not found"):
        s.reservation_status("w1", "r2")
    assert s.spent_in_window("w1", "SOL", DAY, T0 + 1) == 900


def test_finish_signing_commits_audits_enqueues_and_completes(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    claim = begin(s, "k1", "r1", 400)
    log = AuditLog(s, clock)
    log.append("before", {"n": 1}, wallet_id="w1")
    item = OutboxItem("e1", "w1", "transaction.signed", b"{}", created_at=T0, next_attempt_at=T0)
    answer = IdempotentAnswer("w1", "k1", H1, b'{"status_code":200}')
    seal = log.sealer("transaction.signed", {"request_id": "r1"}, wallet_id="w1", receipt=b"receipt")
    record = s.finish_signing(claim.reservation, seal, item, answer)
    assert (record.seq, record.event_type, record.receipt) == (2, "transaction.signed", b"receipt")
    assert s.audit_head() == record
    verify_audit_chain(iter_audit_records(s))
    assert s.reservation_status("w1", "r1") == ReservationStatus.COMMITTED
    assert s.get_outbox_item("e1").status == OutboxStatus.PENDING
    replay = s.lookup_idempotent("w1", "k1", H1, T0)
    assert replay is not None and replay.status == IdempotencyStatus.COMPLETED
    assert replay.response == b'{"status_code":200}'
    again = begin(s, "k1", "r9", 1, now=T0 + 5)  # a completed key replays and writes nothing
    assert again.replay == replay and again.reservation is None
    assert s.recent_requests("w1", T0 + 5) == []
    # Without reservation, webhook or answer: only the audit record.
    bare = s.finish_signing(None, log.sealer("transaction.signed", {}, wallet_id="w1"), None, None)
    assert bare.seq == 3


def test_finish_signing_is_all_or_nothing(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    log = AuditLog(s, clock)
    released = begin(s, "k1", "r1", 400).reservation
    assert released is not None
    s.release(released)
    item = OutboxItem("e1", "w1", "x", b"{}", created_at=T0, next_attempt_at=T0)
    answer = IdempotentAnswer("w1", "k1", H1, b"{}")
    with pytest.raises(Conflict, match="r1 is released, cannot become committed"):
        s.finish_signing(released, log.sealer("t", {}, wallet_id="w1"), item, answer)
    assert s.audit_head() is None
    with pytest.raises(NotFound, match="outbox item e1 not found"):
        s.get_outbox_item("e1")
    with pytest.raises(IdempotencyInProgress, match="idempotency key 'k1': the first request has not completed"):
        s.lookup_idempotent("w1", "k1", H1, T0)
    # An answer for a key that is not claimed: nothing is committed either.
    pending = begin(s, "k2", "r2", 100).reservation
    with pytest.raises((Conflict, NotFound), match=r"idempotency key|not in progress"):
        s.finish_signing(pending, log.sealer("t", {}, wallet_id="w1"), None, IdempotentAnswer("w1", "k3", H1, b"{}"))
    assert s.reservation_status("w1", "r2") == ReservationStatus.PENDING
    assert s.audit_head() is None
    # A head that moved under the sealer is handled: the record extends the real head.
    log.append("other", {}, wallet_id=None)
    record = s.finish_signing(pending, log.sealer("t", {}, wallet_id="w1"), None, None)
    assert record.seq == 2
    verify_audit_chain(iter_audit_records(s))


def test_finish_signing_refuses_a_record_that_does_not_extend_the_head(wallet_store: Store) -> None:
    s = wallet_store
    claim = begin(s, "k1", "r1", 1)

    def stale(_head: AuditRecord | None) -> AuditRecord:
        return AuditRecord(7, T0, "w1", "t", b"{}", None, b"\x01" * 32, b"\x02" * 32)

    with pytest.raises(Conflict, match=re.escape("audit record 7 does not extend the head (expected seq 1)")):
        s.finish_signing(claim.reservation, stale, None, None)
    assert s.reservation_status("w1", "r1") == ReservationStatus.PENDING


def test_token_wallet(wallet_store: Store) -> None:
    issued = wallet_store.issue_token("w2", T0)
    assert wallet_store.token_wallet(issued.token_id) == "w2"
    wallet_store.revoke_token(issued.token_id, T0 + 1)
    assert wallet_store.token_wallet(issued.token_id) == "w2"  # revoked tokens still name their wallet
    with pytest.raises(NotFound, match="token 0123456789abcdef not found"):
        wallet_store.token_wallet("0123456789abcdef")


def test_prune_changes_no_answer_from_now_on(wallet_store: Store) -> None:
    s = wallet_store
    old, recent = T0, T0 + MAX_WINDOW_SECONDS - 10
    s.commit(s.reserve("w1", "old", {"SOL": 5}, {("SOL", DAY): 100}, old))
    s.record_request("w1", old)
    s.record_denial("w1", old)
    s.commit(s.reserve("w1", "recent", {"SOL": 7}, {("SOL", DAY): 100}, recent))
    s.record_request("w1", recent)
    now = T0 + MAX_WINDOW_SECONDS + 5
    before = [s.spent_in_window("w1", "SOL", w, now) for w in (1, 3600, DAY, MAX_WINDOW_SECONDS)]
    s.prune(now)
    after = [s.spent_in_window("w1", "SOL", w, now) for w in (1, 3600, DAY, MAX_WINDOW_SECONDS)]
    assert before == after == [0, 7, 7, 7]
    assert s.recent_requests("w1", now - MAX_WINDOW_SECONDS) == [recent]
    assert s.recent_denials("w1", now - MAX_WINDOW_SECONDS) == []
    s.prune(now)  # idempotent
    assert s.spent_in_window("w1", "SOL", MAX_WINDOW_SECONDS, now) == 7


@pytest.mark.parametrize("edge", [0.5, 0.001])
def test_prune_keeps_what_the_longest_window_still_counts(wallet_store: Store, edge: float) -> None:
    """At ``edge`` seconds before a reservation and an event leave the longest window, a prune keeps them."""
    s = wallet_store
    s.commit(s.reserve("w1", "edge", {"SOL": 5}, {}, T0))
    s.record_request("w1", T0)
    s.record_denial("w1", T0)
    now = T0 + MAX_WINDOW_SECONDS - edge
    s.prune(now)
    assert s.spent_in_window("w1", "SOL", MAX_WINDOW_SECONDS, now) == 5
    since = now - MAX_WINDOW_SECONDS
    assert (s.count_requests("w1", since), s.count_denials("w1", since), s.recent_requests("w1", since)) == (1, 1, [T0])
    assert s.reservation_status("w1", "edge") == ReservationStatus.COMMITTED


@pytest.mark.parametrize("target", [ReservationStatus.RELEASED, ReservationStatus.COMMITTED])
def test_a_pending_reservation_older_than_the_longest_window_still_ends(
    wallet_store: Store, target: ReservationStatus
) -> None:
    """A prune keeps a pending reservation (its amount counts in no window any more, SQLite deletes its running
    total's row): a late release or commit still finds it and ends it, and changes no window."""
    s = wallet_store
    held = s.reserve("w1", "late", {"SOL": 5, "USDC": 3}, {}, T0)
    now = T0 + MAX_WINDOW_SECONDS + 5
    recent = s.reserve("w1", "recent", {"SOL": 7}, {}, now - 10)
    s.prune(now)
    (s.release if target == ReservationStatus.RELEASED else s.commit)(held)
    assert s.reservation_status("w1", "late") == target
    assert s.spent_in_window("w1", "SOL", MAX_WINDOW_SECONDS, now) == 7
    assert s.spent_in_window("w1", "USDC", MAX_WINDOW_SECONDS, now) == 0
    s.release(recent)
    assert s.spent_in_window("w1", "SOL", MAX_WINDOW_SECONDS, now) == 0


def test_a_stale_in_progress_claim_frees_its_key(wallet_store: Store) -> None:
    """A claim left in progress by a request that died (a crash between begin and finish) holds its key only for
    `IDEMPOTENCY_STALE_SECONDS`; then a retry claims it again, as begin_idempotent and as begin_signing."""
    s = wallet_store
    begin(s, "k1", "r1", 400)
    stale = T0 + IDEMPOTENCY_STALE_SECONDS
    with pytest.raises(IdempotencyInProgress, match="idempotency key 'k1': the first request has not completed"):
        s.lookup_idempotent("w1", "k1", H1, stale)  # at the limit it still holds
    with pytest.raises(IdempotencyInProgress, match="idempotency key 'k1': the first request has not completed"):
        begin(s, "k1", "r2", 1, now=stale)
    later = stale + 1
    assert s.lookup_idempotent("w1", "k1", H1, later) is None
    retry = begin(s, "k1", "r2", 100, now=later)
    assert retry.replay is None and retry.reservation is not None
    assert s.spent_in_window("w1", "SOL", DAY, later) == 500  # the dead request's reservation stays counted
    with pytest.raises(IdempotencyInProgress, match="idempotency key 'k1': the first request has not completed"):
        s.begin_idempotent("w1", "k1", H1, later + 1)  # the new claim holds the key
    s.begin_idempotent("w1", "k2", H2, T0)
    assert s.begin_idempotent("w1", "k2", H1, later) is None  # an expired claim holds no request either


def test_a_completed_answer_replays_for_the_retention_period(wallet_store: Store) -> None:
    s = wallet_store
    assert s.begin_idempotent("w1", "k1", H1, T0) is None
    s.complete_idempotent("w1", "k1", H1, b'{"first": true}')
    kept = T0 + IDEMPOTENCY_RETENTION_SECONDS
    replay = s.lookup_idempotent("w1", "k1", H1, kept)
    assert replay is not None and replay.response == b'{"first": true}'
    with pytest.raises(IdempotencyMismatch, match="idempotency key 'k1' was used for a different request"):
        s.begin_idempotent("w1", "k1", H2, kept)
    expired = kept + 1
    assert s.lookup_idempotent("w1", "k1", H1, expired) is None
    claim = begin(s, "k1", "r1", 1, now=expired, digest=H2)  # the key is free for any request again
    assert claim.replay is None and claim.reservation is not None
    with pytest.raises(IdempotencyMismatch, match="idempotency key 'k1' was used for a different request"):
        s.lookup_idempotent("w1", "k1", H1, expired)


def test_prune_keeps_every_live_idempotency_record(wallet_store: Store) -> None:
    """(SQLite deletes the expired ones, see test_store_sqlite; DynamoDB leaves them to its TTL.)"""
    s = wallet_store
    s.begin_idempotent("w1", "done-old", H1, T0)
    s.complete_idempotent("w1", "done-old", H1, b"{}")
    s.begin_idempotent("w1", "dead", H1, T0)
    now = T0 + IDEMPOTENCY_RETENTION_SECONDS + 1
    s.begin_idempotent("w1", "running", H1, now - 10)
    s.begin_idempotent("w1", "done-new", H1, now - 10)
    s.complete_idempotent("w1", "done-new", H1, b"{}")
    s.prune(now)
    for key in ("done-old", "dead"):
        assert s.lookup_idempotent("w1", key, H1, now) is None
    with pytest.raises(IdempotencyInProgress, match="idempotency key 'running': the first request has not completed"):
        s.lookup_idempotent("w1", "running", H1, now)
    assert s.lookup_idempotent("w1", "done-new", H1, now) is not None


def test_reservations_at_one_time_count_in_any_request_id_order(wallet_store: Store) -> None:
    """Reservations made at the very same time, the later ones with request ids sorting before the earlier ones
    (SQLite orders its running totals by time, then request id): each counts, and the cap holds exactly; each
    release (one of an amount of 1 too) gives back exactly its amount."""
    s, cap = wallet_store, {("SOL", DAY): 20}
    held = {r: s.reserve("w1", r, {"SOL": a}, cap, T0) for r, a in (("r9", 5), ("r5", 3), ("r1", 4), ("r7", 1))}
    assert s.spent_in_window("w1", "SOL", DAY, T0) == 13
    with pytest.raises(LimitExceeded, match=r"SOL/86400s: 21 > 20"):
        s.reserve("w1", "r0", {"SOL": 8}, cap, T0)
    s.reserve("w1", "r0", {"SOL": 7}, cap, T0)
    s.release(held["r5"])
    assert s.spent_in_window("w1", "SOL", DAY, T0 + 1) == 17
    s.release(held["r7"])
    assert s.spent_in_window("w1", "SOL", DAY, T0 + 1) == 16
    assert s.spent_in_window("w1", "SOL", DAY, T0 + DAY) == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_window_totals_match_a_scan_under_random_reservations_and_releases(wallet_store: Store, seed: int) -> None:
    """Random amounts at random (also out-of-order) times, some committed, some released: every window total equals
    the plain sum of what should count, including at exact window boundaries."""
    rng = random.Random(seed)
    s = wallet_store
    live: dict[str, tuple[float, int]] = {}
    times = []
    for i in range(40):
        at = T0 + rng.choice([0, 0.5, 1, 2.25, 7, 60, 3599, 3600, 3600.5, 86_399, 86_400, 90_000]) + rng.random()
        at = round(at, 3) if rng.random() < 0.5 else at
        amount = rng.randint(1, 2**62)
        r = s.reserve("w1", f"r{i}", {"SOL": amount}, {}, at)
        times.append(at)
        live[f"r{i}"] = (at, amount)
        if rng.random() < 0.3:
            s.release(r)
            del live[f"r{i}"]
        elif rng.random() < 0.5:
            s.commit(r)
    probes = [t + d for t in rng.sample(times, 10) for d in (0, 1, 0.9999, 3600, 3599.9999, 86_400, 86_399.9999)]
    for now in probes:
        for window in (1, 3600, DAY):
            expected = sum(a for at, a in live.values() if now - at < window)
            assert s.spent_in_window("w1", "SOL", window, now) == expected, (now, window)
    assert s.spent_in_window("w2", "SOL", DAY, T0 + 10) == 0


def test_reads_together_see_the_writes_made_in_the_block(wallet_store: Store) -> None:
    """`Store.reading`: whatever the adapter shares between the reads of the block, a write in the block is seen by
    the reads after it, a nested block is the outer one's, a failed read leaves the block usable, and nothing is held
    after it (a write from the same thread goes through)."""
    s = wallet_store
    with s.reading():
        assert s.count_requests("w1", T0) == 0
        assert s.lookup_idempotent("w1", "k1", H1, T0) is None
        claim = begin(s, "k1", "r1", 400)
        assert claim.reservation is not None
        with s.reading():
            assert s.count_requests("w1", T0) == 1
            assert s.spent_in_window("w1", "SOL", DAY, T0) == 400
        with pytest.raises(IdempotencyInProgress, match="has not completed"):
            s.lookup_idempotent("w1", "k1", H1, T0)
        with pytest.raises(NotFound, match="wallet nope not found"):
            s.get_wallet("nope")
        assert s.get_wallet("w1").wallet_id == "w1"
        s.record_request("w1", T0 + 1)
        assert s.count_requests("w1", T0) == 2
    s.record_denial("w1", T0 + 2)
    assert s.count_denials("w1", T0) == 1
