"""Contract tests (SQLite and DynamoDB) for several `ReplaceAnswer` changes in one `apply_audited`: each is dropped
on its own when its key holds another answer, the others are written with the rest of the transaction (found
missing by mutation testing of `DynamoAudited._transact_sealed`, which drops the failed ones by their index among
the optional actions)."""

from __future__ import annotations

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.store.model import IdempotentAnswer
from parent_proxy.store.protocol import Store
from parent_proxy.store.state_changes import RecordEvent, ReplaceAnswer
from tests.proxy.conftest import FakeClock

T0 = 1_700_000_000.0
H1 = b"\x01" * 32
PENDING = b'{"body":{"approval_id":"a1","status":"pending_approval"},"status_code":202}'
OTHER = b'{"body":{"status":"denied"},"status_code":403}'
SIGNED = b'{"body":{"status":"signed"},"status_code":200}'
KEYS = ("k1", "k2", "k3")


def answer_of(s: Store, key: str) -> bytes | None:
    record = s.lookup_idempotent("w1", key, H1, T0 + 1)
    return None if record is None else record.response


@pytest.mark.parametrize(
    "held",
    [
        (PENDING, OTHER, PENDING),
        (OTHER, PENDING, PENDING),
        (PENDING, PENDING, OTHER),
        (OTHER, OTHER, PENDING),
        (OTHER, PENDING, OTHER),
    ],
    ids=["middle-left", "first-left", "last-left", "two-left", "first-and-last-left"],
)
def test_each_replacement_that_does_not_hold_is_left_and_the_rest_written(
    wallet_store: Store, clock: FakeClock, held: tuple[bytes, bytes, bytes]
) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    for key, response in zip(KEYS, held, strict=True):
        assert s.begin_idempotent("w1", key, H1, T0) is None
        s.complete_idempotent("w1", key, H1, response)
    replacements = [ReplaceAnswer(IdempotentAnswer("w1", key, H1, SIGNED), PENDING) for key in KEYS]
    record = s.apply_audited(
        [RecordEvent("w1", "request", T0), *replacements], log.sealer("test.replaced", {}, wallet_id="w1")
    )
    assert s.audit_head() == record
    assert [answer_of(s, key) for key in KEYS] == [SIGNED if h == PENDING else h for h in held]
