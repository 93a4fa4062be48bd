"""DynamoDB transactions whose answer never came (the connection dropped, a read timeout, a 5xx, past botocore's own
retries), at the botocore seam (`RequestTokens`: DynamoDB's rule for request tokens, which moto does not keep).

Before: such a transaction raised a plain `StoreUnavailable`, which every caller reads as "nothing was written".
When it had been applied, a signing answered 503 while the log said ``transaction.signed`` (and the caller gave the
reservation and the key back: the retry reserved again), and an owner's approval stayed approved with nothing
signed (a second approve 409, a reject refused). Now each transaction carries a request token of its own and a
send that may have been applied is sent again under it (DynamoDB applies a token once); a transaction with an
audit record settles a still unknown outcome by that record; only then is it `StoreOutcomeUnknown`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, ParamValidationError, ReadTimeoutError

from parent_proxy.audit import AuditLog
from parent_proxy.errors import AlreadyDecided, IdempotencyInProgress, StoreOutcomeUnknown, StoreUnavailable
from parent_proxy.store import dynamodb_base
from parent_proxy.store.dynamodb import DynamoStore
from parent_proxy.store.dynamodb_base import UNANSWERED_RESENDS
from parent_proxy.store.model import Approval, ApprovalStatus, IdempotentAnswer, ReservationStatus, SigningClaim
from parent_proxy.store.state_changes import DecideApproval
from tests.proxy.conftest import FakeClock, make_wallet, moto_dynamo_store
from tests.proxy.hooked_client import ENDPOINT, Hooked, RequestTokens, connection_lost

T0 = 1_700_000_000.0
H = b"\x11" * 32
LIMITS = {("SOL", 86_400): 8}
ALL_SENDS = 1 + UNANSWERED_RESENDS


@pytest.fixture
def dynamo(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[DynamoStore, Hooked]]:
    monkeypatch.setattr(dynamodb_base, "UNANSWERED_BACKOFF_SECONDS", 0.0)
    with moto_dynamo_store(Hooked) as (store, client):
        store.create_wallet(make_wallet("w1"))
        yield store, client


def client_error(code: str, status: int, retries: int = 0) -> Callable[[], Exception]:
    return lambda: ClientError(
        {
            "Error": {"Code": code, "Message": "x"},
            "ResponseMetadata": {
                "RequestId": "",
                "HostId": "",
                "HTTPStatusCode": status,
                "HTTPHeaders": {},
                "RetryAttempts": retries,
            },
        },
        "X",
    )


UNANSWERED: dict[str, Callable[[], Exception]] = {
    "connection lost": connection_lost,
    "read timeout": lambda: ReadTimeoutError(endpoint_url=ENDPOINT),
    "connection closed": lambda: ConnectionClosedError(endpoint_url=ENDPOINT),
    "internal server error": client_error("InternalServerError", 500),
    "another 5xx": client_error("SomethingElse", 503),
    "in progress": client_error("TransactionInProgressException", 400),
    "throttled after botocore's retries": client_error("ThrottlingException", 400, retries=9),
}
ANSWERED: dict[str, Callable[[], Exception]] = {
    "throttled at once": client_error("ThrottlingException", 400),
    "validation": client_error("ValidationException", 400),
    "never sent": lambda: ParamValidationError(report="x"),
}


def begin(store: DynamoStore, log: AuditLog) -> SigningClaim:
    """A claimed key and a pending reservation of 5 SOL (request ``r1``), after one audit record."""
    log.append("setup", {})
    return store.begin_signing("w1", "k1", H, request_id="r1", amounts={"SOL": 5}, limits=LIMITS, now=T0)


def finish(store: DynamoStore, log: AuditLog, claim: SigningClaim) -> Any:
    answer = IdempotentAnswer("w1", "k1", H, b'{"status_code": 200}')
    return store.finish_signing(claim.reservation, log.sealer("transaction.signed", {"request_id": "r1"}), None, answer)


def events(store: DynamoStore) -> list[str]:
    return [r.event_type for r in store.audit_records(0, 100)]


def test_only_a_send_that_may_have_been_applied_is_sent_again(dynamo: tuple[DynamoStore, Hooked]) -> None:
    store, client = dynamo
    for i, (name, error) in enumerate(ANSWERED.items()):  # nothing was written: raised at once, as before
        client.hooks["transact_write_items"] = tokens = RequestTokens(["lost"], error=error)
        sample = error()
        named = sample.response["Error"]["Code"] if isinstance(sample, ClientError) else type(sample).__name__
        with pytest.raises(StoreUnavailable, match=f"^dynamodb store unavailable: {named}$") as info:
            store.create_approval(Approval(f"a{i}", "w1", b"{}", ApprovalStatus.PENDING, T0))
        assert not isinstance(info.value, StoreOutcomeUnknown) and len(tokens.sends) == 1, name
    for i, (name, error) in enumerate(UNANSWERED.items()):  # applied, answer lost: sent again under its token
        client.hooks["transact_write_items"] = tokens = RequestTokens(["applied"], error=error)
        store.create_approval(Approval(f"b{i}", "w1", b"{}", ApprovalStatus.PENDING, T0))
        assert len(tokens.sends) == 2 and len(set(tokens.sends)) == 1, name
    del client.hooks["transact_write_items"]
    assert len(store.pending_approvals("w1")) == len(UNANSWERED)
    count = client.inner.get_item(TableName="waiaas-test", Key={"pk": {"S": "W#w1"}, "sk": {"S": "APPROVALS"}})
    assert count["Item"]["pending"] == {"N": str(len(UNANSWERED))}  # each counted once


def test_a_reservation_whose_answers_are_all_lost_is_settled_by_what_it_wrote(
    dynamo: tuple[DynamoStore, Hooked],
) -> None:
    """A reservation (alone, or with a key's claim) is settled by its pointer ``R#<request>``, which only its own
    transaction can write; a claim without a reservation by the claim's write id. Never arrived: unknown."""
    store, client = dynamo

    def all_answers_lost(write: Callable[[], Any]) -> Any:
        client.hooks["transact_write_items"] = RequestTokens(["applied"], then="lost")
        try:
            return write()
        finally:
            del client.hooks["transact_write_items"]

    claim = all_answers_lost(
        lambda: store.begin_signing("w1", "k1", H, request_id="r1", amounts={"SOL": 5}, limits=LIMITS, now=T0)
    )
    reserved = all_answers_lost(lambda: store.reserve("w1", "r2", {"SOL": 1}, LIMITS, T0))
    bare = all_answers_lost(lambda: store.begin_signing("w1", "k2", H, request_id="r3", amounts={}, limits={}, now=T0))
    assert claim.reservation is not None and reserved.amounts == (("SOL", 1),) and bare.reservation is None
    assert store.spent_in_window("w1", "SOL", 86_400, T0) == 6
    for key in ("k1", "k2"):
        with pytest.raises(
            IdempotencyInProgress, match=f"idempotency key {key!r}: the first request has not completed"
        ):
            store.lookup_idempotent("w1", key, H, T0)
    client.hooks["transact_write_items"] = RequestTokens(then="lost")
    with pytest.raises(StoreOutcomeUnknown, match="dynamodb store unavailable: unanswered"):
        store.begin_signing("w1", "k3", H, request_id="r4", amounts={"SOL": 1}, limits=LIMITS, now=T0)
    with pytest.raises(StoreOutcomeUnknown, match="dynamodb store unavailable: unanswered"):
        store.begin_signing("w1", "k4", H, request_id="r5", amounts={}, limits={}, now=T0)
    del client.hooks["transact_write_items"]
    assert store.lookup_idempotent("w1", "k3", H, T0) is None and store.lookup_idempotent("w1", "k4", H, T0) is None
    assert store.spent_in_window("w1", "SOL", 86_400, T0) == 6


def test_a_finish_whose_answers_are_all_lost_is_settled_by_its_audit_record(
    dynamo: tuple[DynamoStore, Hooked],
) -> None:
    """The repro's case: the first send commits, every answer is lost. The store finds its own record at its seq:
    the transaction was applied, and `finish_signing` returns it."""
    store, client = dynamo
    log = AuditLog(store, FakeClock(T0))
    claim = begin(store, log)
    client.hooks["transact_write_items"] = tokens = RequestTokens(["applied"], then="lost")
    record = finish(store, log, claim)
    assert len(tokens.sends) == ALL_SENDS and len(set(tokens.sends)) == 1
    del client.hooks["transact_write_items"]
    assert store.audit_head() == record and events(store) == ["setup", "transaction.signed"]
    assert store.reservation_status("w1", "r1") == ReservationStatus.COMMITTED
    stored = store.lookup_idempotent("w1", "k1", H, T0)
    assert stored is not None and stored.response == b'{"status_code": 200}'


def test_a_finish_that_never_arrived_is_unknown_and_wrote_nothing(dynamo: tuple[DynamoStore, Hooked]) -> None:
    store, client = dynamo
    log = AuditLog(store, FakeClock(T0))
    claim = begin(store, log)
    head = store.audit_head()
    client.hooks["transact_write_items"] = tokens = RequestTokens(then="lost")
    with pytest.raises(StoreOutcomeUnknown, match="dynamodb store unavailable: unanswered"):
        finish(store, log, claim)
    assert len(tokens.sends) == ALL_SENDS and len(set(tokens.sends)) == 1
    del client.hooks["transact_write_items"]
    assert store.audit_head() == head
    assert store.reservation_status("w1", "r1") == ReservationStatus.PENDING
    with pytest.raises(IdempotencyInProgress, match="idempotency key 'k1': the first request has not completed"):
        store.lookup_idempotent("w1", "k1", H, T0)


def test_a_seq_taken_by_another_write_means_nothing_was_written(dynamo: tuple[DynamoStore, Hooked]) -> None:
    """Another instance appends while every send of this one is lost: this transaction's head condition can never
    hold again, so it is a plain `StoreUnavailable` (nothing written), not an unknown outcome."""
    store, client = dynamo
    other = AuditLog(DynamoStore(client.inner, "waiaas-test"), FakeClock(T0))
    log = AuditLog(store, FakeClock(T0))
    claim = begin(store, log)

    def lost_while_another_appends() -> Exception:
        if events(store) == ["setup"]:
            other.append("other", {})
        return connection_lost()

    client.hooks["transact_write_items"] = RequestTokens(then="lost", error=lost_while_another_appends)
    with pytest.raises(StoreUnavailable, match="audit record 2 is another write's") as info:
        finish(store, log, claim)
    assert not isinstance(info.value, StoreOutcomeUnknown)
    del client.hooks["transact_write_items"]
    assert events(store) == ["setup", "other"]
    assert store.reservation_status("w1", "r1") == ReservationStatus.PENDING


def test_a_cancelled_send_takes_a_new_token_a_lost_one_keeps_its_own(dynamo: tuple[DynamoStore, Hooked]) -> None:
    """Lost (token 1), resent and cancelled (nothing written under token 1), sent again under token 2, which is
    applied with its answer lost, then resent: one write."""
    store, client = dynamo
    log = AuditLog(store, FakeClock(T0))
    claim = begin(store, log)
    client.hooks["transact_write_items"] = tokens = RequestTokens(["lost", "conflict", "applied"])
    finish(store, log, claim)
    first, again, second, resent = tokens.sends
    assert first == again and second == resent and first != second
    del client.hooks["transact_write_items"]
    assert events(store) == ["setup", "transaction.signed"]


def test_a_refusal_after_a_cancelled_send_is_not_read_as_unanswered(dynamo: tuple[DynamoStore, Hooked]) -> None:
    """Cancelled (nothing written), sent again under a new token and refused outright (a `ValidationException`):
    nothing was written under either token, so a plain `StoreUnavailable` at once, not resends of the refused send
    and an unknown outcome (the count of resends starts again with the new token)."""
    store, client = dynamo
    refused = client_error("ValidationException", 400)
    client.hooks["transact_write_items"] = tokens = RequestTokens(["conflict"], then="lost", error=refused)
    with pytest.raises(StoreUnavailable, match=r"^dynamodb store unavailable: ValidationException$") as info:
        store.create_approval(Approval("a1", "w1", b"{}", ApprovalStatus.PENDING, T0))
    assert not isinstance(info.value, StoreOutcomeUnknown)
    cancelled, sent_again = tokens.sends
    assert cancelled != sent_again
    del client.hooks["transact_write_items"]
    assert store.pending_approvals("w1") == []


def test_after_a_send_that_may_have_been_applied_only_an_answer_settles_it(dynamo: tuple[DynamoStore, Hooked]) -> None:
    """A resend refused for another reason (here: credentials expired between sends) says nothing about the first
    send, which was applied: the outcome stays unknown, never a plain `StoreUnavailable` read as nothing written."""
    store, client = dynamo
    errors = iter([connection_lost(), *(client_error("ExpiredTokenException", 400)() for _ in range(ALL_SENDS))])
    client.hooks["transact_write_items"] = RequestTokens(["applied"], then="lost", error=lambda: next(errors))
    with pytest.raises(StoreOutcomeUnknown, match=r"unanswered \(ExpiredTokenException\)"):
        store.create_approval(Approval("a1", "w1", b"{}", ApprovalStatus.PENDING, T0))
    del client.hooks["transact_write_items"]
    assert store.get_approval("a1").status == ApprovalStatus.PENDING  # it was written


def test_an_approval_whose_answers_are_all_lost_is_decided_once(dynamo: tuple[DynamoStore, Hooked]) -> None:
    """The repro's second case: the owner's approve (the decision and its record, one transaction) was applied and
    every answer lost. Before: 503, the approval approved with nothing reserved or signed, a reject refused."""
    store, client = dynamo
    log = AuditLog(store, FakeClock(T0))
    store.create_approval(Approval("a1", "w1", b"{}", ApprovalStatus.PENDING, T0))
    client.hooks["transact_write_items"] = RequestTokens(["applied"], then="lost")
    approved = DecideApproval("a1", ApprovalStatus.APPROVED, b"envelope", T0 + 1, "r1")
    record = log.append("approval.approved", {"approval_id": "a1"}, wallet_id="w1", changes=[approved])
    del client.hooks["transact_write_items"]
    assert store.audit_head() == record and events(store) == ["approval.approved"]
    assert store.get_approval("a1").status == ApprovalStatus.APPROVED and store.pending_approvals("w1") == []
    with pytest.raises(AlreadyDecided, match="approval a1 is already approved"):
        store.decide_approval("a1", ApprovalStatus.REJECTED, None, T0 + 2)
