"""Contract tests every `Store` adapter must pass: tokens, wallets, policies, limits, rate events, idempotency,
approvals. The `store` fixture runs each test on SQLite and on DynamoDB (moto)."""

from __future__ import annotations

import hashlib
import logging
import math
import re

import pytest

from parent_proxy.errors import (
    AlreadyDecided,
    Conflict,
    IdempotencyInProgress,
    IdempotencyMismatch,
    InvalidInput,
    LimitExceeded,
    NotFound,
    StalePolicySequence,
)
from parent_proxy.store.model import Approval, ApprovalStatus, IdempotencyStatus, OwnerOrder, ReservationStatus
from parent_proxy.store.protocol import Store
from tests.proxy.conftest import make_wallet

T0 = 1_700_000_000.0
DAY = 86_400
H1 = hashlib.sha256(b"request one").digest()
H2 = hashlib.sha256(b"request two").digest()


# -- tokens ---------------------------------------------------------------------------------------------------
def test_token_issue_authenticate_revoke(wallet_store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    issued = wallet_store.issue_token("w1", T0)
    assert issued.token.startswith(f"waiaas_{issued.token_id}_")
    assert issued.token not in repr(issued)
    assert wallet_store.authenticate_token(issued.token) == "w1"
    wallet_store.revoke_token(issued.token_id, T0 + 1)
    wallet_store.revoke_token(issued.token_id, T0 + 2)  # idempotent
    with pytest.raises(NotFound, match="unknown or revoked token"):
        wallet_store.authenticate_token(issued.token)
    secret = issued.token.split("_", 2)[2]  # waiaas_<16 hex id>_<43-char secret, which may contain "_">
    assert secret not in caplog.text


def test_token_wrong_secret_unknown_id_and_garbage_look_the_same(wallet_store: Store) -> None:
    issued = wallet_store.issue_token("w2", T0)
    other = wallet_store.issue_token("w2", T0)
    forged = issued.token[: -len("x")] + ("A" if issued.token[-1] != "A" else "B")
    wrong_id = other.token.replace(other.token_id, issued.token_id)
    for bad in (forged, wrong_id, "waiaas_0000000000000000_" + "A" * 43, "garbage", ""):
        with pytest.raises(NotFound, match=r"^unknown or revoked token$"):
            wallet_store.authenticate_token(bad)
    assert wallet_store.authenticate_token(other.token) == "w2"


def test_token_for_unknown_wallet_and_unknown_revoke(store: Store) -> None:
    with pytest.raises(NotFound, match="wallet nope not found"):
        store.issue_token("nope", T0)
    with pytest.raises(NotFound, match="token 0123456789abcdef not found"):
        store.revoke_token("0123456789abcdef", T0)


# -- wallets and policies -------------------------------------------------------------------------------------
def test_wallet_roundtrip_freeze_and_duplicate(wallet_store: Store) -> None:
    assert wallet_store.get_wallet("w1") == make_wallet("w1")
    wallet_store.set_frozen("w1", True, "denial burst")
    frozen = wallet_store.get_wallet("w1")
    assert (frozen.frozen, frozen.frozen_reason) == (True, "denial burst")
    wallet_store.set_frozen("w1", False, None)
    assert wallet_store.get_wallet("w1") == make_wallet("w1")
    with pytest.raises(Conflict, match="wallet w1 already exists"):
        wallet_store.create_wallet(make_wallet("w1", sealed_key=b"other"))
    assert wallet_store.get_wallet("w1").sealed_key == b"sealed-blob"
    with pytest.raises(NotFound, match="wallet w9 not found"):
        wallet_store.get_wallet("w9")
    with pytest.raises(NotFound, match="wallet w9 not found"):
        wallet_store.set_frozen("w9", True, "x")


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"wallet_id": "bad id"}, "wallet_id: must be"),
        ({"wallet_id": "."}, "wallet_id: must be"),  # the URL dot segments: the API's and the enclave's rule
        ({"wallet_id": ".."}, "wallet_id: must be"),
        ({"agent_pubkey": b"\x01" * 31}, "agent_pubkey: must be 32 bytes"),
        ({"owner_pubkey": "not bytes"}, "owner_pubkey: must be 32 bytes"),
        ({"sealed_key": b""}, "sealed_key: must not be empty"),
        ({"frozen": True}, "frozen_reason: must be a non-blank string"),
        ({"frozen_reason": "why"}, "frozen_reason: must be None"),
        ({"policy_sequence": -1}, "policy_sequence: must be an integer"),
        ({"order_sequence": 1, "last_order": OwnerOrder("yes", b"order")}, "last_order: must be an OwnerOrder"),  # type: ignore[arg-type]
        ({"order_sequence": 1, "last_order": (True, b"order")}, "last_order: must be an OwnerOrder"),
        ({"order_sequence": -1}, "order_sequence: must be an integer"),
        ({"order_sequence": 2**53 + 1}, "order_sequence: must be an integer"),
        ({"policy_document": "text"}, "policy_document: must be bytes"),
        ({"policy_document": b"x" * (64 * 1024 + 1)}, "policy_document: is 65537 bytes"),
    ],
)
def test_bad_wallet_is_refused_and_nothing_stored(store: Store, overrides: dict[str, object], match: str) -> None:
    wallet = make_wallet(**{"wallet_id": "w1", **overrides})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=match):
        store.create_wallet(wallet)
    if wallet.wallet_id == "bad id":  # the lookup refuses the id itself: no store can be asked about it
        with pytest.raises(InvalidInput, match="wallet_id: must be"):
            store.get_wallet(wallet.wallet_id)
    else:  # lookups take any id of the old rule (a wallet made before "." and ".." were refused), and find none
        with pytest.raises(NotFound, match=f"wallet {re.escape(wallet.wallet_id)} not found"):
            store.get_wallet(wallet.wallet_id)


def test_policy_sequence_must_increase(wallet_store: Store) -> None:
    wallet_store.install_policy("w1", b"policy-3", 3)
    with pytest.raises(StalePolicySequence, match="policy sequence 3 is not greater than 3"):
        wallet_store.install_policy("w1", b"replayed", 3)
    with pytest.raises(StalePolicySequence, match="policy sequence 2 is not greater than 3"):
        wallet_store.install_policy("w1", b"older", 2)
    w = wallet_store.get_wallet("w1")
    assert (w.policy_document, w.policy_sequence) == (b"policy-3", 3)
    wallet_store.install_policy("w1", b"policy-4", 4)
    assert wallet_store.get_wallet("w1").policy_sequence == 4
    with pytest.raises(InvalidInput, match="sequence: must be an integer in \\[1"):
        wallet_store.install_policy("w1", b"zero", 0)
    with pytest.raises(NotFound, match="wallet w9 not found"):
        wallet_store.install_policy("w9", b"p", 1)


# -- period limits --------------------------------------------------------------------------------------------
LIMITS = {("SOL", DAY): 1_000, ("SOL", 3600): 600, ("USDC", DAY): 50}


def test_reserve_commit_release_and_window_accounting(wallet_store: Store) -> None:
    s = wallet_store
    r1 = s.reserve("w1", "req-1", {"SOL": 400}, LIMITS, T0)
    assert r1.amounts == (("SOL", 400),)
    r2 = s.reserve("w1", "req-2", {"SOL": 200, "USDC": 50}, LIMITS, T0 + 10)
    assert s.spent_in_window("w1", "SOL", 3600, T0 + 10) == 600
    with pytest.raises(LimitExceeded, match=r"SOL/3600s: 601 > 600") as info:
        s.reserve("w1", "req-3", {"SOL": 1}, LIMITS, T0 + 20)
    assert info.value.excess == {("SOL", 3600): (601, 600)}
    with pytest.raises(NotFound, match="reservation req-3 not found"):
        s.reservation_status("w1", "req-3")  # nothing recorded on refusal
    s.commit(r1)
    s.commit(r1)  # idempotent
    s.release(r2)
    s.release(r2)  # idempotent
    assert s.reservation_status("w1", "req-1") == ReservationStatus.COMMITTED
    assert s.reservation_status("w1", "req-2") == ReservationStatus.RELEASED
    assert s.spent_in_window("w1", "SOL", DAY, T0 + 20) == 400
    assert s.spent_in_window("w1", "USDC", DAY, T0 + 20) == 0
    with pytest.raises(Conflict, match="req-1 is committed, cannot become released"):
        s.release(r1)
    with pytest.raises(Conflict, match="req-2 is released, cannot become committed"):
        s.commit(r2)
    # The hourly window rolls: at exactly T0 + 3600 the first reservation no longer counts in it.
    assert s.spent_in_window("w1", "SOL", 3600, T0 + 3599.999) == 400
    assert s.spent_in_window("w1", "SOL", 3600, T0 + 3600) == 0
    s.reserve("w1", "req-4", {"SOL": 600}, LIMITS, T0 + 3600)
    with pytest.raises(LimitExceeded, match=r"SOL/86400s: 1001 > 1000"):
        s.reserve("w1", "req-5", {"SOL": 1}, LIMITS, T0 + 7200)
    assert s.spent_in_window("w1", "SOL", DAY, T0 + DAY + 1) == 600
    # Other wallets are independent; limits on assets not being spent do not apply.
    s.reserve("w2", "req-1", {"SOL": 600}, LIMITS, T0)
    s.reserve("w2", "req-2", {"BONK": 10**19}, LIMITS, T0)


def test_reserve_refusals_record_nothing(wallet_store: Store) -> None:
    s = wallet_store
    s.reserve("w1", "dup", {"SOL": 1}, LIMITS, T0)
    with pytest.raises(Conflict, match="reservation dup already exists"):
        s.reserve("w1", "dup", {"SOL": 1}, LIMITS, T0)
    with pytest.raises(LimitExceeded, match=r"USDC/86400s: 51 > 50"):
        s.reserve("w1", "multi", {"SOL": 1, "USDC": 51}, LIMITS, T0)  # one asset over: nothing held
    assert s.spent_in_window("w1", "SOL", DAY, T0) == 1
    with pytest.raises(NotFound, match="wallet w9 not found"):
        s.reserve("w9", "r", {"SOL": 1}, LIMITS, T0)
    bad_inputs: list[tuple[dict[str, object], object, str]] = [
        ({"SOL": 0}, LIMITS, r"amounts\[SOL\]: must be an integer in \[1,"),
        ({"SOL": -5}, LIMITS, r"amounts\[SOL\]"),
        ({"SOL": True}, LIMITS, r"amounts\[SOL\]"),
        ({"SOL": 2**64}, LIMITS, r"amounts\[SOL\]"),
        ({"bad asset": 1}, LIMITS, "amounts.asset"),
        ({"SOL": 1}, {("SOL", 0): 5}, "window_seconds"),
        ({"SOL": 1}, {("SOL", 40 * DAY): 5}, "window_seconds"),
        ({"SOL": 1}, {"SOL": 5}, r"limits: keys must be"),
        ({"SOL": 1}, {("SOL", DAY): -1}, r"limits\[SOL, 86400\]"),
    ]
    for amounts, limits, match in bad_inputs:
        with pytest.raises(InvalidInput, match=match):
            s.reserve("w1", "bad", amounts, limits, T0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="now: must be a finite"):
        s.reserve("w1", "bad", {"SOL": 1}, LIMITS, float("nan"))
    assert s.spent_in_window("w1", "SOL", DAY, T0) == 1


def test_reservation_pending_counts_until_it_ages_out(wallet_store: Store) -> None:
    """A reservation never committed nor released (a crash) keeps counting: fail-safe, never lost."""
    wallet_store.reserve("w1", "crashed", {"SOL": 900}, {("SOL", DAY): 1_000}, T0)
    with pytest.raises(LimitExceeded, match="SOL/86400s"):
        wallet_store.reserve("w1", "next", {"SOL": 200}, {("SOL", DAY): 1_000}, T0 + DAY - 1)
    wallet_store.reserve("w1", "next", {"SOL": 200}, {("SOL", DAY): 1_000}, T0 + DAY)


def test_u64_amounts_do_not_overflow(wallet_store: Store) -> None:
    big = 2**64 - 1
    limits = {("MINT", DAY): big}
    wallet_store.reserve("w1", "a", {"MINT": big - 1}, limits, T0)
    wallet_store.reserve("w1", "b", {"MINT": 1}, limits, T0)
    with pytest.raises(LimitExceeded, match=f"MINT/86400s: {big + 1} > {big}"):
        wallet_store.reserve("w1", "c", {"MINT": 1}, limits, T0)
    assert wallet_store.spent_in_window("w1", "MINT", DAY, T0) == big


# -- request and denial timestamps ----------------------------------------------------------------------------
def test_request_and_denial_timestamps(wallet_store: Store) -> None:
    for t in (T0, T0 + 1, T0 + 2.5):
        wallet_store.record_request("w1", t)
    wallet_store.record_denial("w1", T0 + 2)
    wallet_store.record_request("w2", T0 + 3)
    assert wallet_store.recent_requests("w1", T0 + 1) == [T0 + 1, T0 + 2.5]
    assert wallet_store.recent_denials("w1", T0) == [T0 + 2]
    assert wallet_store.recent_denials("w1", T0 + 2.000001) == []
    assert wallet_store.recent_requests("w2", 0) == [T0 + 3]
    assert wallet_store.count_requests("w1", T0 + 1) == 2
    assert wallet_store.count_requests("w1", T0 + 2.5) == 1
    assert wallet_store.count_denials("w1", T0) == 1
    assert wallet_store.count_denials("w1", T0 + 2.000001) == 0
    assert wallet_store.count_requests("w2", 0) == 1
    with pytest.raises(NotFound, match="wallet w9 not found"):
        wallet_store.record_denial("w9", T0)
    with pytest.raises(InvalidInput, match="since: must be a finite"):
        wallet_store.recent_requests("w1", -1)


def test_event_counts_are_exact_at_integral_and_fractional_boundaries(wallet_store: Store) -> None:
    """An undercount fails open (rate limit, denial-burst freeze): every count equals a count of what was recorded,
    with ``since`` on, just before and just after integral and fractional times."""
    times = [T0 - 1, T0, T0, T0 + 1e-6, T0 + 0.5, T0 + 1, T0 + 59, T0 + 59.999, T0 + 60]
    for i, t in enumerate(times):
        wallet_store.record_request("w1", t)
        if i % 3 == 0:
            wallet_store.record_denial("w1", t)
    denials = times[::3]
    for since in sorted({*times, *(math.nextafter(t, math.inf) for t in times), *(t - 0.5 for t in times)}):
        assert wallet_store.count_requests("w1", since) == sum(1 for t in times if t >= since), since
        assert wallet_store.count_denials("w1", since) == sum(1 for t in denials if t >= since), since
        assert wallet_store.recent_requests("w1", since) == sorted(t for t in times if t >= since), since
    assert wallet_store.count_requests("w2", 0) == 0


# -- idempotency ----------------------------------------------------------------------------------------------
def test_idempotency_begin_complete_replay(wallet_store: Store) -> None:
    s = wallet_store
    assert s.begin_idempotent("w1", "key-1", H1, T0) is None
    with pytest.raises(IdempotencyInProgress, match="'key-1': the first request has not completed"):
        s.begin_idempotent("w1", "key-1", H1, T0 + 1)
    with pytest.raises(IdempotencyMismatch, match="'key-1' was used for a different request"):
        s.begin_idempotent("w1", "key-1", H2, T0 + 1)
    with pytest.raises(Conflict, match="not in progress for this request"):
        s.complete_idempotent("w1", "key-1", H2, b"other")
    s.complete_idempotent("w1", "key-1", H1, b'{"signed": true}')
    replay = s.begin_idempotent("w1", "key-1", H1, T0 + 2)
    assert replay is not None
    assert (replay.status, replay.response, replay.created_at) == (IdempotencyStatus.COMPLETED, b'{"signed": true}', T0)
    with pytest.raises(Conflict, match="not in progress"):
        s.complete_idempotent("w1", "key-1", H1, b"again")
    with pytest.raises(IdempotencyMismatch, match="different request"):
        s.begin_idempotent("w1", "key-1", H2, T0 + 3)
    assert s.begin_idempotent("w2", "key-1", H2, T0) is None  # keys are per wallet


def test_idempotency_replace_only_a_completed_answer(wallet_store: Store) -> None:
    """`replace_idempotent`: a completed key's response of the same request, nothing else (a ``submit`` answer's
    broadcast outcome); its time stays, so it expires when the first answer would have."""
    s = wallet_store
    with pytest.raises(NotFound, match="idempotency key 'k' not found"):
        s.replace_idempotent("w1", "k", H1, b"late")
    assert s.begin_idempotent("w1", "k", H1, T0) is None
    with pytest.raises(Conflict, match="'k' is not completed for this request"):
        s.replace_idempotent("w1", "k", H1, b"late")  # still in progress: nothing was answered yet
    s.complete_idempotent("w1", "k", H1, b"first")
    with pytest.raises(Conflict, match="'k' is not completed for this request"):
        s.replace_idempotent("w1", "k", H2, b"other")  # another request's hash
    for bad in ("", "k" * 1000):
        with pytest.raises(InvalidInput):
            s.replace_idempotent("w1", bad, H1, b"x")
    with pytest.raises(InvalidInput):
        s.replace_idempotent("w1", "k", b"short", b"x")
    s.replace_idempotent("w1", "k", H1, b"second")
    s.replace_idempotent("w1", "k", H1, b"third")  # again: the last one stays
    replay = s.begin_idempotent("w1", "k", H1, T0 + 5)
    assert replay is not None
    assert (replay.status, replay.response, replay.created_at) == (IdempotencyStatus.COMPLETED, b"third", T0)
    assert s.begin_idempotent("w1", "k", H1, T0 + DAY + 1) is None  # expired as the first answer would have


def test_idempotency_abandon_and_bad_input(wallet_store: Store) -> None:
    s = wallet_store
    assert s.begin_idempotent("w1", "k", H1, T0) is None
    s.abandon_idempotent("w1", "k", H1)
    assert s.begin_idempotent("w1", "k", H2, T0) is None  # the key is free again
    with pytest.raises(NotFound, match="idempotency key 'zz' not found"):
        s.abandon_idempotent("w1", "zz", H1)
    with pytest.raises(InvalidInput, match="key: must be 1-255 printable"):
        s.begin_idempotent("w1", "has space", H1, T0)
    with pytest.raises(InvalidInput, match="request_hash: must be a 32-byte digest"):
        s.begin_idempotent("w1", "k2", b"short", T0)
    with pytest.raises(NotFound, match="wallet w9 not found"):
        s.begin_idempotent("w9", "k", H1, T0)
    with pytest.raises(IdempotencyInProgress, match="'k'"):
        s.begin_idempotent("w1", "k", H2, T0)


# -- approvals ------------------------------------------------------------------------------------------------
def test_approval_lifecycle(wallet_store: Store) -> None:
    s = wallet_store
    s.create_approval(Approval("ap-1", "w1", b"tx-bytes", ApprovalStatus.PENDING, T0))
    s.create_approval(Approval("ap-2", "w1", b"tx-2", ApprovalStatus.PENDING, T0 + 1))
    with pytest.raises(Conflict, match="approval ap-1 already exists"):
        s.create_approval(Approval("ap-1", "w1", b"other", ApprovalStatus.PENDING, T0))
    assert [a.approval_id for a in s.pending_approvals("w1")] == ["ap-1", "ap-2"]
    with pytest.raises(InvalidInput, match="signing: an approval names the signing that follows it"):
        s.decide_approval("ap-1", ApprovalStatus.APPROVED, b"owner-sig", T0 + 5)
    decided = s.decide_approval("ap-1", ApprovalStatus.APPROVED, b"owner-sig", T0 + 5, "r1")
    assert (decided.status, decided.decision, decided.decided_at, decided.signing) == (
        ApprovalStatus.APPROVED,
        b"owner-sig",
        T0 + 5,
        "r1",
    )
    with pytest.raises(AlreadyDecided, match="approval ap-1 is already approved"):
        s.decide_approval("ap-1", ApprovalStatus.REJECTED, None, T0 + 6)
    assert s.get_approval("ap-1") == decided
    s.decide_approval("ap-2", ApprovalStatus.EXPIRED, None, T0 + 7)
    assert s.pending_approvals("w1") == []
    with pytest.raises(InvalidInput, match="status: must be approved, rejected or expired"):
        s.decide_approval("ap-2", ApprovalStatus.PENDING, None, T0)
    with pytest.raises(NotFound, match="approval nope not found"):
        s.decide_approval("nope", ApprovalStatus.REJECTED, None, T0)
    with pytest.raises(NotFound, match="wallet w9 not found"):
        s.create_approval(Approval("ap-9", "w9", b"x", ApprovalStatus.PENDING, T0))
    with pytest.raises(InvalidInput, match="a new approval must be pending"):
        s.create_approval(Approval("ap-3", "w1", b"x", ApprovalStatus.APPROVED, T0))


def test_reopen_returns_only_an_approval_approved_by_that_decision(wallet_store: Store) -> None:
    s = wallet_store
    s.create_approval(Approval("ap-1", "w1", b"tx-bytes", ApprovalStatus.PENDING, T0))
    with pytest.raises(AlreadyDecided, match="approval ap-1 is pending, not approved by this decision"):
        s.reopen_approval("ap-1", b"owner-sig", "r1")
    s.decide_approval("ap-1", ApprovalStatus.APPROVED, b"owner-sig", T0 + 5, "r1")
    with pytest.raises(AlreadyDecided, match="approval ap-1 is approved, not approved by this decision"):
        s.reopen_approval("ap-1", b"another-sig", "r1")
    with pytest.raises(AlreadyDecided, match="approval ap-1 is approved, not approved by this decision"):
        s.reopen_approval("ap-1", b"owner-sig", "r2")
    with pytest.raises(InvalidInput, match="signing: must be"):
        s.reopen_approval("ap-1", b"owner-sig", None)  # type: ignore[arg-type]
    assert s.get_approval("ap-1").status is ApprovalStatus.APPROVED  # a refused reopen changes nothing
    reopened = s.reopen_approval("ap-1", b"owner-sig", "r1")
    assert reopened == Approval("ap-1", "w1", b"tx-bytes", ApprovalStatus.PENDING, T0)
    assert s.get_approval("ap-1") == reopened and s.pending_approvals("w1") == [reopened]
    with pytest.raises(AlreadyDecided, match="ap-1 is pending"):
        s.reopen_approval("ap-1", b"owner-sig", "r1")  # once
    s.decide_approval("ap-1", ApprovalStatus.REJECTED, None, T0 + 9)
    with pytest.raises(AlreadyDecided, match="ap-1 is rejected"):
        s.reopen_approval("ap-1", b"owner-sig", "r1")
    with pytest.raises(NotFound, match="approval nope not found"):
        s.reopen_approval("nope", b"owner-sig", "r1")
    with pytest.raises(InvalidInput, match="approval_id"):
        s.reopen_approval("", b"owner-sig", "r1")
