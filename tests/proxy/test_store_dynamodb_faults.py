"""DynamoDB faults that moto does not produce by itself, injected at the botocore seam (the real adapter above it,
moto's table below): transactions cancelled for transient reasons, and writes resent by botocore after a lost
response.

A ``TransactionCanceledException`` is a refusal of the stored state only when a reason is
``ConditionalCheckFailed``. Cancelled for ``TransactionConflict`` or throttling only, nothing was written and the same
transaction may succeed when sent again: it is resent after a short jittered pause, then reported as the store being
unavailable (503). Before, every cancellation was a ``Conflict``: a signed request given up with 409 on transient
contention for the audit head, a free idempotency key reported "in progress", a new approval "already exists".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError

from parent_proxy.audit import AuditLog
from parent_proxy.errors import Conflict, IdempotencyInProgress, StoreUnavailable
from parent_proxy.store.dynamodb_base import TRANSACT_ATTEMPTS, ConditionFailed, Contended, translate
from parent_proxy.store.model import Approval, ApprovalStatus, IdempotentAnswer, ReservationStatus
from tests.proxy.conftest import FakeClock, make_wallet

T0 = 1_700_000_000.0
H = b"\x11" * 32
Hook = Callable[..., Any]


@dataclass
class Hooked:
    """The boto3 client, with ``hooks[method](real_method, **kwargs)`` run instead of the named methods."""

    inner: Any
    hooks: dict[str, Hook] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.inner, name)
        hook = self.hooks.get(name)
        return real if hook is None else (lambda **kwargs: hook(real, **kwargs))


@pytest.fixture
def dynamo(aws_env: None) -> Iterator[tuple[Any, Hooked]]:
    import boto3
    from moto import mock_aws

    from parent_proxy.store.dynamodb import DynamoStore, create_table

    with mock_aws():
        client = Hooked(boto3.client("dynamodb", region_name="us-east-1"))
        create_table(client.inner, "waiaas-test")
        store = DynamoStore(client, "waiaas-test")  # type: ignore[arg-type]
        store.create_wallet(make_wallet("w1"))
        yield store, client
        store.close()


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
    with pytest.raises(IdempotencyInProgress):
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
