"""The sweep of stalled approvals (`stalled_approvals.reopen_stalled`) as mutation testing found it untested
(twenty-fourth session): its count of approvals reopened, its warning and its record (the wallet's) for each, and
its batches -- a sweep goes on while a batch comes back full, and stops at a full batch of approvals it could not
reopen (it never spins on them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from parent_proxy import stalled_approvals
from parent_proxy.stalled_approvals import STALLED_APPROVAL_SECONDS, reopen_stalled
from tests.proxy.api_harness import Harness, pending_approval_ids, provisioned_harness, refused_records
from tests.proxy.harness_calls import escalate, records


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with provisioned_harness(tmp_path) as (harness, _, _):
        yield harness


def stalled(h: Harness, count: int) -> list[str]:
    """``count`` approvals approved whose signing died (nothing reserved, never reopened): their ids."""
    ids = []
    h.store.failing = {"reserve"}
    with refused_records(h, "approval.reopened"):
        for _ in range(count):
            approval_id, body, path = escalate(h)
            assert h.owner_call("POST", path, body).status_code == 503
            ids.append(approval_id)
    h.store.failing = set()
    assert pending_approval_ids(h) == []
    return ids


def sweep_later(h: Harness) -> int:
    h.clock.offset = STALLED_APPROVAL_SECONDS + 1
    try:
        return reopen_stalled(h.services)
    finally:
        h.clock.offset = 0.0


def test_a_sweep_counts_and_warns_of_each_approval_it_reopens(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    (approval_id,) = stalled(h, 1)
    caplog.clear()

    with caplog.at_level(logging.WARNING, logger=stalled_approvals.__name__):
        assert sweep_later(h) == 1

    assert pending_approval_ids(h) == [approval_id]
    warned = [r.getMessage() for r in caplog.records if r.name == stalled_approvals.__name__]
    assert [w.startswith(f"approval {approval_id}: its signing") for w in warned] == [True]
    (record,) = [r for r in records(h) if r.event_type == "approval.reopened"]
    assert record.wallet_id == h.wallet_id
    assert sweep_later(h) == 0  # nothing left to reopen


def test_a_sweep_goes_on_while_a_batch_comes_back_full(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = stalled(h, 3)
    monkeypatch.setattr(stalled_approvals, "SWEEP_BATCH", 2)

    assert sweep_later(h) == 3

    assert sorted(pending_approval_ids(h)) == sorted(ids)


@pytest.mark.timeout(120)
def test_a_sweep_stops_at_a_full_batch_it_cannot_reopen(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    stalled(h, 2)
    monkeypatch.setattr(stalled_approvals, "SWEEP_BATCH", 2)

    with refused_records(h, "approval.reopened"):
        assert sweep_later(h) == 0  # each skipped once, then the sweep ends (the next one tries them again)

    assert pending_approval_ids(h) == []
    assert sweep_later(h) == 2
