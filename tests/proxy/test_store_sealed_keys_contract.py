"""Contract tests for `Store.replace_sealed_keys` on every adapter: the replaced blobs and the audit record that
names them are written together or not at all, each blob only if it is still the one the caller read.

Its one caller is ``waiaas selfhost reseal`` (tests/selfhost/test_reseal*.py); a partial write there would leave
some wallets sealed under the old unseal secret and some under the new one.
"""

from __future__ import annotations

from typing import Any

import pytest

from parent_proxy.audit import AuditLog, iter_audit_records, verify_audit_chain
from parent_proxy.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from parent_proxy.store.dynamodb_sealed_keys import MAX_REPLACEMENTS
from parent_proxy.store.model import AuditRecord
from parent_proxy.store.protocol import Store
from parent_proxy.store.sealed_keys import SealedKeyReplacement as R
from tests.proxy.conftest import FakeClock, make_wallet

OLD = b"sealed-blob"  # make_wallet's blob


def state(s: Store) -> tuple[Any, ...]:
    return s.get_wallet("w1"), s.get_wallet("w2"), s.audit_head()


def test_replace_sealed_keys_writes_every_blob_and_the_record(wallet_store: Store, clock: FakeClock) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    log.append("before", {}, wallet_id=None)
    w1_before = s.get_wallet("w1")
    sealer = log.sealer("wallets.resealed", {"wallets": ["w1", "w2"]})
    record = s.replace_sealed_keys([R("w1", OLD, b"new-1"), R("w2", OLD, b"new-2")], sealer)
    assert (record.seq, record.event_type, record.wallet_id) == (2, "wallets.resealed", None)
    assert s.audit_head() == record
    verify_audit_chain(iter_audit_records(s))
    assert (s.get_wallet("w1").sealed_key, s.get_wallet("w2").sealed_key) == (b"new-1", b"new-2")
    # Only the blob changes.
    assert s.get_wallet("w1") == type(w1_before)(**{**w1_before.__dict__, "sealed_key": b"new-1"})


@pytest.mark.parametrize(
    ("replacements", "error", "match"),
    [
        ([R("w1", OLD, b"new-1"), R("w2", b"another blob", b"new-2")], Conflict, "wallet w2: its sealed key is no"),
        ([R("w1", OLD, b"new-1"), R("w9", OLD, b"new-9")], NotFound, "wallet w9 not found"),
        ([R("w1", OLD, b"new-1"), R("w1", OLD, b"new-2")], InvalidInput, "wallet w1 named twice"),
        ([R("w1", OLD, b"new-1"), R("w2", OLD, b"")], InvalidInput, r"replacements\[1\].new_sealed_key: must not"),
        ([R("w1", b"", b"new-1")], InvalidInput, r"replacements\[0\].old_sealed_key: must not be empty"),
        ([R("w1", OLD, OLD)], InvalidInput, "is the old sealed key"),
        ([R("w1", OLD, b"x" * 70_000)], InvalidInput, "more than"),
        ([R("bad id!", OLD, b"new")], InvalidInput, "wallet_id"),
        ([], InvalidInput, "non-empty sequence"),
        (["w1"], InvalidInput, "must be a SealedKeyReplacement"),
    ],
    ids=["blob-changed", "unknown-wallet", "twice", "empty-new", "empty-old", "unchanged", "too-large", "bad-id",
         "none", "not-a-replacement"],
)  # fmt: skip
def test_a_refused_replacement_writes_nothing(
    wallet_store: Store, clock: FakeClock, replacements: list[R], error: type[Exception], match: str
) -> None:
    s, log = wallet_store, AuditLog(wallet_store, clock)
    before = state(s)
    with pytest.raises(error, match=match):
        s.replace_sealed_keys(replacements, log.sealer("wallets.resealed", {}))
    assert state(s) == before


def _raising(_head: AuditRecord | None) -> AuditRecord:
    raise StoreUnavailable("the clock could not be read")


def _stale(_head: AuditRecord | None) -> AuditRecord:
    return AuditRecord(7, 1.0, None, "t", b"{}", None, b"\x01" * 32, b"\x02" * 32)


@pytest.mark.parametrize(
    ("sealer", "error", "match"),
    [(_raising, StoreUnavailable, "clock"), (_stale, Conflict, "does not extend the head")],
    ids=["sealer-fails", "stale-record"],
)
def test_a_failing_audit_record_writes_no_blob(
    wallet_store: Store, sealer: Any, error: type[Exception], match: str
) -> None:
    s = wallet_store
    before = state(s)
    with pytest.raises(error, match=match):
        s.replace_sealed_keys([R("w1", OLD, b"new-1"), R("w2", OLD, b"new-2")], sealer)
    assert state(s) == before


def test_a_replacement_after_another_writes_against_the_new_blob(wallet_store: Store, clock: FakeClock) -> None:
    """Compare-and-swap: a second caller that read the blob before the first wrote is refused."""
    s, log = wallet_store, AuditLog(wallet_store, clock)
    s.replace_sealed_keys([R("w1", OLD, b"new-1")], log.sealer("wallets.resealed", {}))
    head = s.audit_head()
    with pytest.raises(Conflict, match="wallet w1: its sealed key is no longer the one read"):
        s.replace_sealed_keys([R("w1", OLD, b"other")], log.sealer("wallets.resealed", {}))
    assert s.get_wallet("w1").sealed_key == b"new-1" and s.audit_head() == head
    s.replace_sealed_keys([R("w1", b"new-1", b"newer")], log.sealer("wallets.resealed", {}))
    assert s.get_wallet("w1").sealed_key == b"newer"


def test_as_many_replacements_as_one_dynamodb_transaction_holds(store: Store, clock: FakeClock) -> None:
    """Both adapters take `MAX_REPLACEMENTS` in one call; DynamoDB refuses one more up front (SQLite has no such
    bound), rather than splitting it into transactions that could leave some wallets replaced and others not."""
    s, log = store, AuditLog(store, clock)
    ids = [f"w{i:03d}" for i in range(MAX_REPLACEMENTS + 1)]
    for wallet_id in ids:
        s.create_wallet(make_wallet(wallet_id))
    first = [R(wallet_id, OLD, f"new-{wallet_id}".encode()) for wallet_id in ids[:-1]]
    s.replace_sealed_keys(first, log.sealer("wallets.resealed", {}))
    assert [s.get_wallet(w).sealed_key for w in ids] == [*(r.new_sealed_key for r in first), OLD]
    every = [R(wallet_id, s.get_wallet(wallet_id).sealed_key, b"again") for wallet_id in ids]
    if type(s).__name__ == "DynamoStore":
        with pytest.raises(InvalidInput, match=f"{MAX_REPLACEMENTS + 1} sealed keys, more than the {MAX_REPLACEMENTS}"):
            s.replace_sealed_keys(every, log.sealer("wallets.resealed", {}))
        assert s.get_wallet(ids[-1]).sealed_key == OLD
    else:
        s.replace_sealed_keys(every, log.sealer("wallets.resealed", {}))
        assert {s.get_wallet(w).sealed_key for w in ids} == {b"again"}
