"""Contract tests for `Store.claim_creation_nonce` on every adapter: a wallet creation's owner nonce, held in the
shared store (not in one process's memory) until the request it came with can no longer be accepted.

Before, these nonces lived in the memory of the process that accepted the creation: another process on the same
store, or the same one restarted, took a replay within the skew window (tests/proxy/test_api_creation_replay.py
shows it through the API). Here: a claim holds against any store opened on the same backend, until its time and
not after; bad input changes nothing; SQLite claims cannot interleave, its schema moves to version 8 and prune
drops expired claims; a DynamoDB claim resent by botocore after a lost answer is the claim, and its item expires
by TTL.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from parent_proxy.errors import InvalidInput, NonceUsed
from parent_proxy.store.creation_nonces import MAX_HOLD_SECONDS
from parent_proxy.store.protocol import Store
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.store.sqlite_schema import SCHEMA_VERSION
from tests.proxy.conftest import make_wallet, moto_dynamo_store
from tests.proxy.hooked_client import Hooked, first_answer_lost

T0 = 1_700_000_000.0
OWNER = b"\x02" * 32
OTHER_OWNER = b"\x04" * 32
NONCE = "n" * 32
UNTIL = T0 + 900  # a timestamp of T0 + 450 under the largest skew (`parent_proxy.owner_auth.MAX_SKEW_SECONDS`)


def test_a_claimed_nonce_is_refused_until_its_time(store: Store) -> None:
    store.claim_creation_nonce(OWNER, NONCE, T0, UNTIL)
    for now in (T0, T0 + 1, UNTIL):  # held up to and including its time
        with pytest.raises(NonceUsed, match="creation nonce already used"):
            store.claim_creation_nonce(OWNER, NONCE, now, UNTIL + 10)
    # The key is the owner key and the nonce: another owner's same nonce, or the owner's next one, is new.
    store.claim_creation_nonce(OTHER_OWNER, NONCE, T0, UNTIL)
    store.claim_creation_nonce(OWNER, "m" * 32, T0, UNTIL)
    with pytest.raises(NonceUsed, match="creation nonce already used"):
        store.claim_creation_nonce(OTHER_OWNER, NONCE, T0 + 2, UNTIL)


def test_an_expired_claim_is_replaced_by_the_next(store: Store) -> None:
    store.claim_creation_nonce(OWNER, NONCE, T0, UNTIL)
    store.claim_creation_nonce(OWNER, NONCE, UNTIL + 0.001, UNTIL + 900)  # free just after its time
    with pytest.raises(NonceUsed, match="creation nonce already used"):  # and the new claim holds for its own time
        store.claim_creation_nonce(OWNER, NONCE, UNTIL + 900, UNTIL + 1000)
    store.claim_creation_nonce(OWNER, NONCE, UNTIL + 901, UNTIL + 901)


def test_a_claim_holds_against_every_store_on_the_backend(reopen_store: Callable[[], Store]) -> None:
    first, second = reopen_store(), reopen_store()
    first.claim_creation_nonce(OWNER, NONCE, T0, UNTIL)
    with pytest.raises(NonceUsed, match="creation nonce already used"):  # another process
        second.claim_creation_nonce(OWNER, NONCE, T0 + 1, UNTIL)
    first.close()
    with pytest.raises(NonceUsed, match="creation nonce already used"):  # a restart
        reopen_store().claim_creation_nonce(OWNER, NONCE, UNTIL, UNTIL)
    second.claim_creation_nonce(OWNER, NONCE, UNTIL + 1, UNTIL + 1)


@pytest.mark.parametrize(
    ("claim", "match"),
    [
        ((b"\x02" * 31, NONCE, T0, UNTIL), "owner: must be 32 bytes"),
        (("02" * 32, NONCE, T0, UNTIL), "owner: must be 32 bytes"),
        ((OWNER, "", T0, UNTIL), "nonce: must be 1-64 of"),
        ((OWNER, "n" * 65, T0, UNTIL), "nonce: must be 1-64 of"),
        ((OWNER, "n n", T0, UNTIL), "nonce: must be 1-64 of"),
        ((OWNER, "n#n", T0, UNTIL), "nonce: must be 1-64 of"),
        ((OWNER, 12345, T0, UNTIL), "nonce: must be 1-64 of"),
        ((OWNER, NONCE, float("nan"), UNTIL), "now: must be a finite"),
        ((OWNER, NONCE, -1.0, UNTIL), "now: must be a finite"),
        ((OWNER, NONCE, T0, float("inf")), "held_until: must be a finite"),
        ((OWNER, NONCE, T0, T0 - 0.5), "held_until: must be from now to 3600 s after it"),
        ((OWNER, NONCE, T0, T0 + MAX_HOLD_SECONDS + 0.5), "held_until: must be from now to 3600 s after it"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(store: Store, claim: tuple[Any, ...], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        store.claim_creation_nonce(*claim)
    store.claim_creation_nonce(OWNER, NONCE, T0, UNTIL)  # nothing was held
    store.claim_creation_nonce(OWNER, "n" * 64, T0, T0 + MAX_HOLD_SECONDS)  # the bounds themselves are fine
    store.claim_creation_nonce(OWNER, "-_09azAZ", T0, T0)


def test_claims_need_no_wallet_and_touch_none(store: Store) -> None:
    store.claim_creation_nonce(OWNER, NONCE, T0, UNTIL)
    store.create_wallet(make_wallet("w1"))  # the owner key (make_wallet's) has nonces and may create wallets
    store.claim_creation_nonce(OWNER, "m" * 32, T0, UNTIL)
    assert store.get_wallet("w1") == make_wallet("w1")
    assert store.audit_head() is None


# -- SQLite ------------------------------------------------------------------------------------------------------------
def test_sqlite_claims_of_one_nonce_from_many_processes_let_one_through(tmp_path: Path) -> None:
    """Each thread has its own store on the file (its own connection, as a process has): the check and the write
    of a claim are one ``BEGIN IMMEDIATE`` transaction, so exactly one claim of a nonce succeeds."""
    SqliteStore(tmp_path / "state.db").close()
    stores = [SqliteStore(tmp_path / "state.db") for _ in range(6)]
    start = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def claim(store: SqliteStore) -> None:
        start.wait()
        try:
            store.claim_creation_nonce(OWNER, NONCE, T0, UNTIL)
            outcomes.append("claimed")
        except NonceUsed:
            outcomes.append("refused")

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert sorted(outcomes) == ["claimed"] + ["refused"] * (len(stores) - 1)


def test_sqlite_prune_drops_expired_claims_only(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    sqlite_store.claim_creation_nonce(OWNER, "a" * 16, T0, T0 + 10)
    sqlite_store.claim_creation_nonce(OWNER, "b" * 16, T0, T0 + 20)
    sqlite_store.prune(T0 + 15)
    with sqlite3.connect(tmp_path / "state.db") as conn:
        assert conn.execute("SELECT nonce, held_until FROM creation_nonces").fetchall() == [("b" * 16, T0 + 20)]
    with pytest.raises(NonceUsed, match="creation nonce already used"):
        sqlite_store.claim_creation_nonce(OWNER, "b" * 16, T0 + 15, T0 + 20)


def test_a_version_7_database_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.create_wallet(make_wallet("w1"))
    store.close()
    with sqlite3.connect(path) as conn:  # version 7: no creation nonces
        conn.execute("DROP TABLE creation_nonces")
        conn.execute("PRAGMA user_version = 7")
    migrated = SqliteStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 13
    assert migrated.get_wallet("w1") == make_wallet("w1")
    migrated.claim_creation_nonce(OWNER, NONCE, T0, UNTIL)
    migrated.close()
    again = SqliteStore(path)  # opening a migrated database again changes nothing
    with pytest.raises(NonceUsed, match="creation nonce already used"):
        again.claim_creation_nonce(OWNER, NONCE, T0, UNTIL)
    again.close()


# -- DynamoDB ----------------------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("aws_env")
def test_a_dynamodb_claim_is_one_item_that_expires_by_ttl() -> None:
    with moto_dynamo_store(lambda client: client) as (store, client):
        store.claim_creation_nonce(OWNER, NONCE, T0, T0 + 899.5)
        (item,) = client.scan(TableName="waiaas-test")["Items"]
        assert (item["pk"], item["sk"]) == ({"S": "CN#" + OWNER.hex()}, {"S": "N#" + NONCE})
        # The TTL is the first whole second after the hold: DynamoDB may delete it only once it has expired.
        assert (item["held_until"], item["expires_at"]) == ({"N": "1700000899.5"}, {"N": "1700000900"})


@pytest.mark.usefixtures("aws_env")
def test_a_resent_dynamodb_claim_is_this_claim() -> None:
    """botocore resends a put whose answer was lost; the resend fails its condition against the first send. That
    is this call's own claim (its write id), not a replay: the owner's request must not be refused as one."""
    with moto_dynamo_store(Hooked) as (store, client):
        with first_answer_lost(client, "PutItem") as resent:
            store.claim_creation_nonce(OWNER, NONCE, T0, UNTIL)
        assert resent
        with pytest.raises(NonceUsed, match="creation nonce already used"):  # a real second claim is still refused
            store.claim_creation_nonce(OWNER, NONCE, T0 + 1, UNTIL)
