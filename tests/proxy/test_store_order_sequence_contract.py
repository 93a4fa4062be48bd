"""Contract tests for the owner's freeze-order sequence on every adapter: a `SetFrozen` carrying an owner order is
written only if its sequence is above the wallet's last accepted one, which it becomes; a freeze of the parent's own
(no order) keeps it. A refused order changes nothing, its audit record included. The order's envelope is kept with
its sequence (`Wallet.last_order`, schema 9), so every host's enclave can be sent it (`parent_proxy.enclave_relay`).

Before: the store kept no sequence, so an older, still unexpired unfreeze sent after a newer freeze unfroze the
wallet at the proxy (the enclave refused it, until a restart made it forget its own count); and it kept no order, so
another host's enclave holding the wallet was never sent it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import InvalidInput, NotFound, StaleOrderSequence
from parent_proxy.store.model import AuditRecord, OwnerOrder
from parent_proxy.store.protocol import Store
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.store.sqlite_schema import SCHEMA_VERSION
from parent_proxy.store.state_changes import CreateWallet, SetFrozen
from parent_proxy.store.validation import MAX_ORDER_BYTES, MAX_ORDER_SEQUENCE
from policies.orders import MAX_SEQUENCE
from tests.proxy.conftest import FakeClock, make_wallet, moto_dynamo_store


def order(s: Store, clock: FakeClock, change: SetFrozen) -> AuditRecord:
    return s.apply_audited([change], AuditLog(s, clock).sealer("wallet.frozen", {}, wallet_id=change.wallet_id))


def test_a_new_wallet_has_accepted_no_order(wallet_store: Store) -> None:
    assert wallet_store.get_wallet("w1").order_sequence == 0


def test_each_order_must_be_above_the_last_accepted(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    order(s, clock, SetFrozen("w1", True, "owner freeze order 5", order_sequence=5))
    assert (s.get_wallet("w1").frozen, s.get_wallet("w1").order_sequence) == (True, 5)
    head = s.audit_head()
    for stale in (5, 4, 1):  # the same order again, and older ones (an unfreeze signed before the freeze)
        with pytest.raises(StaleOrderSequence, match=f"order sequence {stale} is not greater than 5") as refused:
            order(s, clock, SetFrozen("w1", False, None, order_sequence=stale))
        assert (refused.value.offered, refused.value.current) == (stale, 5)
    assert s.get_wallet("w1").frozen and s.audit_head() == head  # nothing written, no record
    order(s, clock, SetFrozen("w1", False, None, order_sequence=6))
    assert (s.get_wallet("w1").frozen, s.get_wallet("w1").order_sequence) == (False, 6)
    assert s.get_wallet("w2").order_sequence == 0  # per wallet


def test_a_freeze_of_the_parents_own_keeps_the_sequence(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    order(s, clock, SetFrozen("w1", False, None, order_sequence=3))
    order(s, clock, SetFrozen("w1", True, "freeze.denials"))  # a denial burst: no owner order
    assert (s.get_wallet("w1").frozen, s.get_wallet("w1").order_sequence) == (True, 3)
    s.set_frozen("w1", True, "authority change")  # the direct write, likewise
    assert s.get_wallet("w1").order_sequence == 3
    with pytest.raises(StaleOrderSequence, match="wallet w1: order sequence 3 is not greater than 3"):
        order(s, clock, SetFrozen("w1", False, None, order_sequence=3))  # the owner's last unfreeze, replayed
    order(s, clock, SetFrozen("w1", False, None, order_sequence=4))
    assert not s.get_wallet("w1").frozen


def test_the_last_order_is_kept_with_its_sequence(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    assert s.get_wallet("w1").last_order is None  # a new wallet: no order yet
    order(s, clock, SetFrozen("w1", True, "owner freeze order 5", order_sequence=5, order=b'{"freeze": 5}'))
    assert s.get_wallet("w1").last_order == OwnerOrder(True, b'{"freeze": 5}')
    with pytest.raises(StaleOrderSequence):
        order(s, clock, SetFrozen("w1", False, None, order_sequence=4, order=b'{"unfreeze": 4}'))
    assert s.get_wallet("w1").last_order == OwnerOrder(True, b'{"freeze": 5}')  # a refused order is not kept
    order(s, clock, SetFrozen("w1", False, None, order_sequence=6, order=b'{"unfreeze": 6}'))
    assert s.get_wallet("w1").last_order == OwnerOrder(False, b'{"unfreeze": 6}')
    order(s, clock, SetFrozen("w1", True, "freeze.denials"))  # the parent's own freeze: the owner's order stays
    s.set_frozen("w1", True, "authority change")
    wallet = s.get_wallet("w1")
    assert (wallet.frozen, wallet.order_sequence, wallet.last_order) == (True, 6, OwnerOrder(False, b'{"unfreeze": 6}'))
    order(s, clock, SetFrozen("w1", False, None, order_sequence=7))  # an order without its envelope keeps none
    assert (s.get_wallet("w1").order_sequence, s.get_wallet("w1").last_order) == (7, None)
    assert s.get_wallet("w2").last_order is None  # per wallet


def test_a_created_wallet_keeps_the_order_it_carries(store: Store, clock: FakeClock) -> None:
    kept = make_wallet("w1", frozen=True, frozen_reason="r", order_sequence=3, last_order=OwnerOrder(True, b"{}"))
    store.apply_audited([CreateWallet(kept)], AuditLog(store, clock).sealer("wallet.created", {}, wallet_id="w1"))
    assert store.get_wallet("w1") == kept
    with pytest.raises(InvalidInput, match="last_order: an order envelope goes with its order sequence"):
        store.create_wallet(make_wallet("w2", last_order=OwnerOrder(True, b"{}")))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (SetFrozen("w1", True, "r", order=b"{}"), "order: an order envelope goes with its order sequence"),
        (SetFrozen("w1", True, "r", order_sequence=1, order=b""), "order: must not be empty"),
        (SetFrozen("w1", True, "r", order_sequence=1, order=b"x" * (MAX_ORDER_BYTES + 1)), "order: is 4097 bytes"),
        (SetFrozen("w1", True, "r", order_sequence=1, order="{}"), "order: must be bytes"),  # type: ignore[arg-type]
    ],
)
def test_a_malformed_order_is_refused(wallet_store: Store, clock: FakeClock, change: SetFrozen, message: str) -> None:
    head = wallet_store.audit_head()
    with pytest.raises(InvalidInput, match=message):
        order(wallet_store, clock, change)
    wallet = wallet_store.get_wallet("w1")
    assert (wallet.frozen, wallet.order_sequence, wallet.last_order) == (False, 0, None)
    assert wallet_store.audit_head() == head


def test_an_order_for_an_unknown_wallet_is_not_found(wallet_store: Store, clock: FakeClock) -> None:
    with pytest.raises(NotFound, match="wallet w9 not found"):
        order(wallet_store, clock, SetFrozen("w9", True, "owner freeze order 1", order_sequence=1))


@pytest.mark.parametrize("sequence", [0, -1, True, 1.5, MAX_ORDER_SEQUENCE + 1])
def test_a_malformed_sequence_is_refused(wallet_store: Store, clock: FakeClock, sequence: object) -> None:
    head = wallet_store.audit_head()
    with pytest.raises(InvalidInput, match="order_sequence"):
        order(wallet_store, clock, SetFrozen("w1", True, "owner freeze order", order_sequence=sequence))  # type: ignore[arg-type]
    assert wallet_store.get_wallet("w1").order_sequence == 0 and wallet_store.audit_head() == head


def test_the_largest_sequence_is_the_orders_own() -> None:
    assert MAX_ORDER_SEQUENCE == MAX_SEQUENCE


def test_a_version_6_database_gains_the_column(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:  # the version-6 wallets table, with one wallet in it
        conn.execute("DROP TABLE wallets")
        conn.execute(
            "CREATE TABLE wallets (wallet_id TEXT PRIMARY KEY, agent_pubkey BLOB NOT NULL, owner_pubkey BLOB NOT NULL,"
            " vault_address BLOB NOT NULL, sealed_key BLOB NOT NULL, frozen INTEGER NOT NULL, frozen_reason TEXT,"
            " policy_document BLOB, policy_sequence INTEGER NOT NULL)"
        )
        w = make_wallet("w1")
        conn.execute(
            "INSERT INTO wallets VALUES (?, ?, ?, ?, ?, 1, 'owner freeze order 4', NULL, 0)",
            (w.wallet_id, w.agent_pubkey, w.owner_pubkey, w.vault_address, w.sealed_key),
        )
        conn.execute("PRAGMA user_version = 6")
    store = SqliteStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 13
    migrated = store.get_wallet("w1")
    assert (migrated.frozen, migrated.order_sequence) == (True, 0)  # nothing was kept: the first order counts
    order(store, clock, SetFrozen("w1", False, None, order_sequence=1))
    assert store.get_wallet("w1").order_sequence == 1
    store.close()
    assert SqliteStore(path).get_wallet("w1").order_sequence == 1  # opening again migrates nothing more


def test_a_version_8_database_gains_the_order_columns(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:  # the version-8 wallets table, with one wallet in it
        conn.execute("DROP TABLE wallets")
        conn.execute(
            "CREATE TABLE wallets (wallet_id TEXT PRIMARY KEY, agent_pubkey BLOB NOT NULL, owner_pubkey BLOB NOT NULL,"
            " vault_address BLOB NOT NULL, sealed_key BLOB NOT NULL, frozen INTEGER NOT NULL, frozen_reason TEXT,"
            " policy_document BLOB, policy_sequence INTEGER NOT NULL, order_sequence INTEGER NOT NULL DEFAULT 0)"
        )
        w = make_wallet("w1")
        conn.execute(
            "INSERT INTO wallets VALUES (?, ?, ?, ?, ?, 1, 'owner freeze order 4', NULL, 0, 4)",
            (w.wallet_id, w.agent_pubkey, w.owner_pubkey, w.vault_address, w.sealed_key),
        )
        conn.execute("PRAGMA user_version = 8")
    store = SqliteStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 13
    migrated = store.get_wallet("w1")
    assert (migrated.frozen, migrated.order_sequence, migrated.last_order) == (True, 4, None)  # the order not kept
    order(store, clock, SetFrozen("w1", False, None, order_sequence=5, order=b"{}"))
    assert store.get_wallet("w1").last_order == OwnerOrder(False, b"{}")
    store.close()
    assert SqliteStore(path).get_wallet("w1").last_order == OwnerOrder(False, b"{}")  # nothing more migrated


@pytest.mark.usefixtures("aws_env")
def test_a_dynamodb_wallet_item_written_before_the_sequence_reads_zero(clock: FakeClock) -> None:
    with moto_dynamo_store(lambda client: client) as (store, client):
        store.create_wallet(make_wallet("w1"))
        key = {"pk": {"S": "W#w1"}, "sk": {"S": "WALLET"}}
        removed = "REMOVE order_sequence, order_envelope, order_freeze"
        client.update_item(TableName="waiaas-test", Key=key, UpdateExpression=removed)
        assert "order_sequence" not in client.get_item(TableName="waiaas-test", Key=key)["Item"]
        assert (store.get_wallet("w1").order_sequence, store.get_wallet("w1").last_order) == (0, None)
        order(store, clock, SetFrozen("w1", True, "owner freeze order 1", order_sequence=1, order=b"{}"))
        assert (store.get_wallet("w1").order_sequence, store.get_wallet("w1").last_order) == (
            1,
            OwnerOrder(True, b"{}"),
        )
        with pytest.raises(StaleOrderSequence, match="order sequence 1 is not greater than 1"):
            order(store, clock, SetFrozen("w1", False, None, order_sequence=1))
