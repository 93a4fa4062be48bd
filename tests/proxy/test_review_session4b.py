"""Review of the DynamoDB reservations keyed by time (532a17c): each test failed on the code as reviewed."""

from __future__ import annotations

import hashlib

import pytest

from parent_proxy.errors import Conflict
from parent_proxy.store.protocol import Store

T0 = 1_700_000_000.0
HOUR = 3600
LIMITS = {("SOL", HOUR): 600}


def test_a_reused_request_id_is_a_conflict_even_when_the_limit_is_reached(wallet_store: Store) -> None:
    """Request ids are unique on both adapters, whatever the amounts. Before: SQLite checked the id first
    (`Conflict`), while DynamoDB, whose id check moved into the write, checked the caps first and answered
    `LimitExceeded` for a reused id whose amount no longer fitted (the signing path then claims, records and audits a
    refusal "by concurrent requests" that never happened)."""
    s = wallet_store
    s.reserve("w1", "dup", {"SOL": 600}, LIMITS, T0)
    with pytest.raises(Conflict, match="reservation dup already exists"):
        s.reserve("w1", "dup", {"SOL": 1}, LIMITS, T0 + 1)
    with pytest.raises(Conflict, match="reservation dup already exists"):
        s.begin_signing("w1", "key-1", hashlib.sha256(b"r").digest(), request_id="dup", amounts={"SOL": 1},
                        limits=LIMITS, now=T0 + 2)  # fmt: skip
    assert s.spent_in_window("w1", "SOL", HOUR, T0 + 2) == 600
