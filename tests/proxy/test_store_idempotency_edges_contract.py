"""Contract tests of the idempotency records' edges on every adapter, left by the twenty-fourth session's mutation
testing of the DynamoDB adapter (each survived there): a claim is stale only *after* `IDEMPOTENCY_STALE_SECONDS`, a
replacement naming the answer it replaces refuses an unfinished key as unfinished, and an audited completion of a key
completed already is refused whole.
"""

from __future__ import annotations

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import Conflict, IdempotencyInProgress
from parent_proxy.store.model import IdempotencyStatus, IdempotentAnswer
from parent_proxy.store.protocol import Store
from parent_proxy.store.state_changes import CompleteIdempotent
from parent_proxy.store.validation import IDEMPOTENCY_STALE_SECONDS
from tests.proxy.conftest import FakeClock

T0 = 1_700_000_000.0
H1 = bytes(range(32))
FIRST = b'{"status_code":200,"first":true}'


def test_a_claim_is_stale_only_after_the_stale_time(wallet_store: Store) -> None:
    s = wallet_store
    assert s.begin_idempotent("w1", "k1", H1, T0) is None
    with pytest.raises(IdempotencyInProgress, match="has not completed"):
        s.begin_idempotent("w1", "k1", H1, T0 + IDEMPOTENCY_STALE_SECONDS)  # exactly then: still the first's
    with pytest.raises(IdempotencyInProgress):
        s.lookup_idempotent("w1", "k1", H1, T0 + IDEMPOTENCY_STALE_SECONDS)
    assert s.begin_idempotent("w1", "k1", H1, T0 + IDEMPOTENCY_STALE_SECONDS + 0.5) is None  # then free: claimed anew
    with pytest.raises(IdempotencyInProgress):
        s.begin_idempotent("w1", "k1", H1, T0 + IDEMPOTENCY_STALE_SECONDS + 1)  # the new claim holds it


def test_a_replacement_naming_its_answer_refuses_an_unfinished_key(wallet_store: Store) -> None:
    s = wallet_store
    assert s.begin_idempotent("w1", "k1", H1, T0) is None
    with pytest.raises(Conflict, match="idempotency key 'k1' is not completed for this request"):
        s.replace_idempotent("w1", "k1", H1, b'{"status_code":200}', previous=FIRST)
    with pytest.raises(IdempotencyInProgress):
        s.lookup_idempotent("w1", "k1", H1, T0)  # nothing written: still in progress


def test_an_audited_completion_of_a_completed_key_is_refused_whole(wallet_store: Store, clock: FakeClock) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    assert s.begin_idempotent("w1", "k1", H1, T0) is None
    s.complete_idempotent("w1", "k1", H1, FIRST)
    head = s.audit_head()
    again = CompleteIdempotent(IdempotentAnswer("w1", "k1", H1, b'{"status_code":403,"second":true}'))
    with pytest.raises(Conflict, match="idempotency key 'k1' is not in progress for this request"):
        s.apply_audited([again], log.sealer("transaction.denied", {}, wallet_id="w1"))
    stored = s.lookup_idempotent("w1", "k1", H1, T0)
    assert stored is not None and (stored.status, stored.response) == (IdempotencyStatus.COMPLETED, FIRST)
    assert s.audit_head() == head  # nor its record
