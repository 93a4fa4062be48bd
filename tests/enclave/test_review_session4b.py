"""Review of the enclave ledger archive (3119574): each test failed on the code as reviewed."""

from __future__ import annotations

import pytest

from enclave_app.errors import StateError
from enclave_app.ledger import ARCHIVE_BUCKET_SECONDS, Ledger
from policies.decision import Reservation


def test_archive_buckets_count_against_the_ledger_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """`MAX_LEDGER_ENTRIES` bounds a wallet's ledger memory. Before: amounts moved into the archive stopped counting
    against it, and the archive is bounded per asset only (4465 buckets), so an agent whose policy allows many mints
    could fill enclave memory: one outflow per allowed mint (257 assets) every 10 minutes for 31 days held 1.15
    million buckets, about 110 MB for one wallet, while check_room saw an empty ledger."""
    monkeypatch.setattr("enclave_app.ledger.MAX_LEDGER_ENTRIES", 10)
    ledger = Ledger()
    for i in range(10):  # ten assets, one amount each, in separate requests
        ledger.record(float(i), denied=False, signed=(Reservation(f"M{i}", 1),))
    ledger.prune(float(ARCHIVE_BUCKET_SECONDS), 60)  # all past the horizon: ten buckets, nothing exact
    assert ledger.count(ledger.requests, 60, float(ARCHIVE_BUCKET_SECONDS)) == 0
    assert ledger.spent("M3", 3600, float(ARCHIVE_BUCKET_SECONDS)) == 1  # still counted, from the archive
    with pytest.raises(StateError, match="per-boot counters are full"):
        ledger.check_room(1)
