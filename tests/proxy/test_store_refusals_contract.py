"""Contract tests of the refusals the other contract modules leave out (found by mutation testing of the SQLite
adapter): each call refuses bad input or an unknown target with its own error, and writes nothing. The `store`
fixture runs each test on SQLite and on DynamoDB (moto)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import AlreadyDecided, Conflict, IdempotencyInProgress, InvalidInput, NotFound
from parent_proxy.store.model import (
    Approval,
    ApprovalStatus,
    IdempotencyRecord,
    IdempotencyStatus,
    IdempotentAnswer,
    Reservation,
    ReservationStatus,
)
from parent_proxy.store.protocol import Store
from tests.proxy.conftest import FakeClock

T0 = 1_700_000_000.0
DAY = 86_400
LIMITS = {("SOL", DAY): 1_000}


@pytest.mark.parametrize(
    ("wallet_id", "request_id", "match"),
    [("bad id", "r1", "wallet_id"), ("", "r1", "wallet_id"), ("w1", "bad id", "request_id"), ("w1", "", "request_id")],
)
def test_reserve_refuses_bad_ids_and_holds_nothing(
    wallet_store: Store, wallet_id: str, request_id: str, match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        wallet_store.reserve(wallet_id, request_id, {"SOL": 5}, LIMITS, T0)
    assert wallet_store.spent_in_window("w1", "SOL", DAY, T0) == 0


@pytest.mark.parametrize("first", ["pending", "commit", "release"])
def test_a_reused_request_id_is_a_conflict_even_over_the_limit(wallet_store: Store, first: str) -> None:
    """A reused request id is a `Conflict` whatever the amounts: also when the new amounts would be refused by a
    cap (the refusal comes first and never reaches the write's uniqueness condition), and whatever became of the
    first reservation. The first one is untouched."""
    reservation = wallet_store.reserve("w1", "r1", {"SOL": 5}, LIMITS, T0)
    if first != "pending":
        getattr(wallet_store, first)(reservation)
    status = wallet_store.reservation_status("w1", "r1")
    with pytest.raises(Conflict, match="reservation r1 already exists"):
        wallet_store.reserve("w1", "r1", {"SOL": 5_000}, LIMITS, T0 + 1)
    assert wallet_store.reservation_status("w1", "r1") == status
    assert wallet_store.spent_in_window("w1", "SOL", DAY, T0 + 1) == (0 if first == "release" else 5)


@pytest.mark.parametrize("at", [T0, T0 + 1])
def test_a_reused_request_id_within_the_limit_is_a_conflict_at_any_time(wallet_store: Store, at: float) -> None:
    """Within the caps the refusal comes from the write: on DynamoDB a reservation's item is keyed by its time, so
    at another time only the request id's pointer refuses it; that is a `Conflict` too, not a contention to resend
    (which would end in 503 after every attempt)."""
    wallet_store.reserve("w1", "r1", {"SOL": 5}, LIMITS, T0)
    with pytest.raises(Conflict, match="reservation r1 already exists"):
        wallet_store.reserve("w1", "r1", {"SOL": 5}, LIMITS, at)
    assert wallet_store.spent_in_window("w1", "SOL", DAY, T0 + 1) == 5


@pytest.mark.parametrize("now", [-1.0, math.nan, math.inf, "1", None, True])
def test_prune_refuses_a_bad_time(wallet_store: Store, now: object) -> None:
    with pytest.raises(InvalidInput, match=r"^now: "):
        wallet_store.prune(now)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["commit", "release"])
def test_a_reservation_never_made_is_not_found_and_stays_unmade(wallet_store: Store, target: str) -> None:
    ghost = Reservation(wallet_id="w1", request_id="ghost", amounts=(("SOL", 5),), created_at=T0)
    with pytest.raises(NotFound, match="reservation ghost not found"):
        getattr(wallet_store, target)(ghost)
    with pytest.raises(NotFound, match="reservation ghost not found"):
        wallet_store.reservation_status("w1", "ghost")
    assert wallet_store.spent_in_window("w1", "SOL", DAY, T0) == 0


@pytest.mark.parametrize("target", ["commit", "release"])
@pytest.mark.parametrize("not_a_reservation", [("w1", "r1"), {"wallet_id": "w1", "request_id": "r1"}, None])
def test_commit_and_release_refuse_what_is_not_a_reservation(
    wallet_store: Store, target: str, not_a_reservation: Any
) -> None:
    held = wallet_store.reserve("w1", "r1", {"SOL": 5}, LIMITS, T0)
    with pytest.raises(InvalidInput, match="reservation: must be a Reservation"):
        getattr(wallet_store, target)(not_a_reservation)
    assert wallet_store.reservation_status("w1", "r1") == ReservationStatus.PENDING
    wallet_store.release(held)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("bad id", "SOL", DAY, T0), "wallet_id"),
        (("w1", "bad asset", DAY, T0), "asset"),
        (("w1", "SOL", 0, T0), "window_seconds"),
        (("w1", "SOL", 31 * DAY + 1, T0), "window_seconds"),
        (("w1", "SOL", DAY, -1.0), "now"),
    ],
)
def test_spent_in_window_refuses_bad_arguments(wallet_store: Store, args: tuple[Any, ...], match: str) -> None:
    wallet_store.reserve("w1", "r1", {"SOL": 5}, LIMITS, T0)
    with pytest.raises(InvalidInput, match=match):
        wallet_store.spent_in_window(*args)


@pytest.mark.parametrize("kind", ["request", "denial"])
@pytest.mark.parametrize(
    ("wallet_id", "now", "match"),
    [("bad id", T0, "wallet_id"), ("", T0, "wallet_id"), ("w1", math.nan, "now"), ("w1", -1.0, "now")],
)
def test_recording_an_event_refuses_bad_arguments_and_records_nothing(
    wallet_store: Store, kind: str, wallet_id: str, now: float, match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        getattr(wallet_store, f"record_{kind}")(wallet_id, now)
    assert getattr(wallet_store, f"count_{kind}s")("w1", 0.0) == 0
    assert getattr(wallet_store, f"recent_{kind}s")("w1", 0.0) == []


@pytest.mark.parametrize("read", ["count_requests", "count_denials", "recent_requests", "recent_denials"])
@pytest.mark.parametrize(
    ("wallet_id", "since", "match"),
    [("bad id", T0, "wallet_id"), ("w1", -1.0, "since"), ("w1", math.inf, "since"), ("w1", "0", "since")],
)
def test_event_reads_refuse_bad_arguments(
    wallet_store: Store, read: str, wallet_id: str, since: object, match: str
) -> None:
    wallet_store.record_request("w1", T0)
    wallet_store.record_denial("w1", T0)
    with pytest.raises(InvalidInput, match=match):
        getattr(wallet_store, read)(wallet_id, since)


def test_get_approval_refuses_a_bad_id_and_does_not_find_an_unknown_one(wallet_store: Store) -> None:
    wallet_store.create_approval(Approval("ap-1", "w1", b"tx", ApprovalStatus.PENDING, T0))
    with pytest.raises(InvalidInput, match=r"^approval_id: "):
        wallet_store.get_approval("bad id")
    with pytest.raises(NotFound, match="approval ap-2 not found"):
        wallet_store.get_approval("ap-2")
    assert wallet_store.get_approval("ap-1").status is ApprovalStatus.PENDING


@pytest.mark.parametrize("wallet_id", ["bad id", "", None])
def test_pending_approvals_refuses_a_bad_wallet_id(wallet_store: Store, wallet_id: object) -> None:
    wallet_store.create_approval(Approval("ap-1", "w1", b"tx", ApprovalStatus.PENDING, T0))
    with pytest.raises(InvalidInput, match=r"^wallet_id: "):
        wallet_store.pending_approvals(wallet_id)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED])
def test_a_closed_approval_is_not_reopened_by_its_own_decision(wallet_store: Store, status: ApprovalStatus) -> None:
    """A rejection (or an expiry) that carries the owner's answer is a decision too: reopening with it is refused."""
    wallet_store.create_approval(Approval("ap-1", "w1", b"tx", ApprovalStatus.PENDING, T0))
    closed = wallet_store.decide_approval("ap-1", status, b"owner-no", T0 + 1)
    with pytest.raises(AlreadyDecided, match=f"approval ap-1 is {status.value}, not approved by this decision"):
        wallet_store.reopen_approval("ap-1", b"owner-no", "r1")
    assert wallet_store.get_approval("ap-1") == closed and wallet_store.pending_approvals("w1") == []


# -- idempotency and the signing path ----------------------------------------------------------------------------
H1 = bytes(range(32))


@pytest.mark.parametrize("call", ["begin_idempotent", "lookup_idempotent"])
@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("bad id", "k1", H1, T0), "wallet_id"),
        (("w1", "has space", H1, T0), "key"),
        (("w1", "k1", H1[:31], T0), "request_hash"),
        (("w1", "k1", H1, math.nan), "now"),
        (("w1", "k1", H1, -1.0), "now"),
        (("w1", "k1", H1, "later"), "now"),
    ],
)
def test_idempotency_claims_and_lookups_refuse_bad_arguments(
    wallet_store: Store, call: str, args: tuple[Any, ...], match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        getattr(wallet_store, call)(*args)
    assert wallet_store.begin_idempotent("w1", "k1", H1, T0) is None  # nothing claimed: the key is free


@pytest.mark.parametrize(
    ("response", "match"), [("text", "response: must be bytes"), (b"x" * (64 * 1024 + 1), "response: is")]
)
def test_a_bad_answer_is_refused_and_the_claim_stays_in_progress(
    wallet_store: Store, response: object, match: str
) -> None:
    wallet_store.begin_idempotent("w1", "k1", H1, T0)
    with pytest.raises(InvalidInput, match=match):
        wallet_store.complete_idempotent("w1", "k1", H1, response)  # type: ignore[arg-type]
    with pytest.raises(IdempotencyInProgress):
        wallet_store.lookup_idempotent("w1", "k1", H1, T0)
    wallet_store.complete_idempotent("w1", "k1", H1, b"{}")
    replay = wallet_store.lookup_idempotent("w1", "k1", H1, T0)
    assert replay is not None and replay.response == b"{}"


@pytest.mark.parametrize("request_id", ["bad id", "", None])
def test_begin_signing_refuses_a_bad_request_id_and_writes_nothing(wallet_store: Store, request_id: object) -> None:
    with pytest.raises(InvalidInput, match=r"^request_id: "):
        wallet_store.begin_signing(
            "w1",
            "k1",
            H1,
            request_id=request_id,  # type: ignore[arg-type]  # deliberately not always a str: refused
            amounts={"SOL": 5},
            limits=LIMITS,
            now=T0,
        )
    assert wallet_store.lookup_idempotent("w1", "k1", H1, T0) is None
    assert (wallet_store.count_requests("w1", 0.0), wallet_store.spent_in_window("w1", "SOL", DAY, T0)) == (0, 0)


# -- approvals --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"approval_id": "bad id"}, "approval_id"),
        ({"approval_id": ""}, "approval_id"),
        ({"wallet_id": "bad id"}, "wallet_id"),
        ({"request_payload": "text"}, "request_payload"),
        ({"created_at": math.inf}, "created_at"),
        ({"message_hash": b"short"}, "message_hash"),
    ],
)
def test_a_bad_approval_is_refused_and_nothing_created(wallet_store: Store, fields: dict[str, Any], match: str) -> None:
    bad = replace(Approval("ap-1", "w1", b"tx", ApprovalStatus.PENDING, T0), **fields)
    with pytest.raises(InvalidInput, match=match):
        wallet_store.create_approval(bad)
    assert wallet_store.pending_approvals("w1") == []


@pytest.mark.parametrize(("key", "digest", "match"), [("has space", H1, "key"), ("k1", H1[:31], "request_hash")])
def test_abandon_refuses_bad_arguments_and_keeps_the_claim(
    wallet_store: Store, key: str, digest: bytes, match: str
) -> None:
    wallet_store.begin_idempotent("w1", "k1", H1, T0)
    with pytest.raises(InvalidInput, match=match):
        wallet_store.abandon_idempotent("w1", key, digest)
    with pytest.raises(IdempotencyInProgress):
        wallet_store.lookup_idempotent("w1", "k1", H1, T0)


def test_an_answer_of_exactly_the_largest_size_is_kept(wallet_store: Store) -> None:
    largest = b"a" * (64 * 1024)
    wallet_store.begin_idempotent("w1", "k1", H1, T0)
    wallet_store.complete_idempotent("w1", "k1", H1, largest)
    replay = wallet_store.lookup_idempotent("w1", "k1", H1, T0)
    assert replay is not None and replay.response == largest


@pytest.mark.parametrize("amounts", [["SOL"], "SOL", None, (("SOL", 5),)])
def test_reserve_refuses_amounts_that_are_not_a_mapping(wallet_store: Store, amounts: object) -> None:
    with pytest.raises(InvalidInput, match="amounts: must be a mapping"):
        wallet_store.reserve("w1", "r1", amounts, LIMITS, T0)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        wallet_store.reservation_status("w1", "r1")


def test_a_freeze_reason_of_the_longest_length_is_kept_and_one_longer_refused(wallet_store: Store) -> None:
    longest = "r" * 500
    wallet_store.set_frozen("w1", True, longest)
    assert wallet_store.get_wallet("w1").frozen_reason == longest
    with pytest.raises(InvalidInput, match="frozen_reason: must be a non-blank string of at most 500"):
        wallet_store.set_frozen("w2", True, longest + "r")
    assert not wallet_store.get_wallet("w2").frozen


def test_a_replay_is_the_whole_completed_record(wallet_store: Store) -> None:
    wallet_store.begin_idempotent("w1", "k1", H1, T0)
    wallet_store.complete_idempotent("w1", "k1", H1, b'{"done": 1}')
    expected = IdempotencyRecord("w1", "k1", H1, IdempotencyStatus.COMPLETED, b'{"done": 1}', T0)
    assert wallet_store.lookup_idempotent("w1", "k1", H1, T0 + 5) == expected
    assert wallet_store.begin_idempotent("w1", "k1", H1, T0 + 5) == expected
    claim = wallet_store.begin_signing("w1", "k1", H1, request_id="r1", amounts={"SOL": 1}, limits=LIMITS, now=T0 + 5)
    assert (claim.replay, claim.reservation) == (expected, None)


def test_issue_token_refuses_a_bad_wallet_id(wallet_store: Store) -> None:
    with pytest.raises(InvalidInput, match=r"^wallet_id: "):
        wallet_store.issue_token("bad id", T0)


def test_install_policy_and_retired_keys_refuse_a_bad_wallet_id(wallet_store: Store) -> None:
    with pytest.raises(InvalidInput, match=r"^wallet_id: "):
        wallet_store.install_policy("bad id", b"{}", 1)
    with pytest.raises(InvalidInput, match=r"^wallet_id: "):
        wallet_store.retired_agent_keys("bad id")


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (IdempotentAnswer("w1", "k1", H1, "text"), "response: must be bytes"),  # type: ignore[arg-type]
        (IdempotentAnswer("w1", "k1", H1[:31], b"{}"), "request_hash"),
        (("w1", "k1", H1, b"{}"), "answer: must be an IdempotentAnswer"),
    ],
)
def test_finish_signing_refuses_a_bad_answer_before_writing_anything(
    wallet_store: Store, clock: FakeClock, answer: object, match: str
) -> None:
    s = wallet_store
    claim = s.begin_signing("w1", "k1", H1, request_id="r1", amounts={"SOL": 5}, limits=LIMITS, now=T0)
    assert claim.reservation is not None
    head = s.audit_head()
    seal = AuditLog(s, clock).sealer("transaction.signed", {}, wallet_id="w1")
    with pytest.raises(InvalidInput, match=match):
        s.finish_signing(claim.reservation, seal, None, answer)  # type: ignore[arg-type]
    assert (s.audit_head(), s.reservation_status("w1", "r1")) == (head, ReservationStatus.PENDING)
    with pytest.raises(IdempotencyInProgress):
        s.lookup_idempotent("w1", "k1", H1, T0)


@pytest.mark.parametrize(
    ("limits", "match"),
    [
        ([(("SOL", DAY), 5)], "limits: must be a mapping"),
        (None, "limits: must be a mapping"),
        ({("SOL", DAY, 1): 5}, "limits: keys must be"),
        ({("SOL",): 5}, "limits: keys must be"),
    ],
)
def test_reserve_refuses_limits_that_are_not_a_mapping_of_pairs(
    wallet_store: Store, limits: object, match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        wallet_store.reserve("w1", "r1", {"SOL": 5}, limits, T0)  # type: ignore[arg-type]
    assert wallet_store.spent_in_window("w1", "SOL", DAY, T0) == 0


@pytest.mark.parametrize("frozen", ["yes", 1, None])
def test_set_frozen_refuses_a_frozen_flag_that_is_not_a_bool(wallet_store: Store, frozen: object) -> None:
    with pytest.raises(InvalidInput, match="frozen: must be a bool"):
        wallet_store.set_frozen("w1", frozen, "reason")  # type: ignore[arg-type]
    assert not wallet_store.get_wallet("w1").frozen


def test_set_frozen_refuses_a_malformed_wallet_id_naming_it(wallet_store: Store) -> None:
    with pytest.raises(InvalidInput, match=r"^wallet_id: must be 1-128 characters") as refused:
        wallet_store.set_frozen("w 1", True, "reason")
    assert refused.value.field == "wallet_id"


@pytest.mark.parametrize("now", [math.nan, -1.0, "now"])
def test_revoke_token_refuses_a_bad_time_and_the_token_still_works(wallet_store: Store, now: object) -> None:
    issued = wallet_store.issue_token("w1", T0)
    with pytest.raises(InvalidInput, match="now: must be a finite"):
        wallet_store.revoke_token(issued.token_id, now)  # type: ignore[arg-type]
    assert wallet_store.authenticate_token(issued.token) == "w1"


def test_finish_signing_refuses_what_is_not_a_reservation_before_writing(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    claim = s.begin_signing("w1", "k1", H1, request_id="r1", amounts={"SOL": 5}, limits=LIMITS, now=T0)
    head = s.audit_head()
    seal = AuditLog(s, clock).sealer("transaction.signed", {}, wallet_id="w1")
    with pytest.raises(InvalidInput, match="reservation: must be a Reservation"):
        s.finish_signing(("w1", "r1"), seal, None, IdempotentAnswer("w1", "k1", H1, b"{}"))  # type: ignore[arg-type]
    assert (s.audit_head(), s.reservation_status("w1", "r1")) == (head, ReservationStatus.PENDING)
    assert claim.reservation is not None
    with pytest.raises(IdempotencyInProgress):
        s.lookup_idempotent("w1", "k1", H1, T0)
