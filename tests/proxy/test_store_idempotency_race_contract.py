"""Contract tests, on every adapter: two claims of one idempotency key racing between the claim's read of the key
(free) and its write (`Store.begin_signing`). Exactly one claim wins; the other gets what a later claim would get
(`IdempotencyInProgress`, the stored answer as a replay, or `IdempotencyMismatch` for another request), and
nothing of it is written: no request counted, nothing reserved, its request id free.

The hook sits at each adapter's read of the key, right after it answered "free", and lets another process's claim
of the same key (a second store on the same backend) run there. What the adapters do about it differs:

- SQLite reads and writes in one ``BEGIN IMMEDIATE`` transaction: the rival cannot land in between, it waits for
  the write lock (here its store does not wait and is refused at once as unavailable; it claims again after), so the
  first claim wins and the rival finds the key taken;
- DynamoDB locks nothing: the rival lands, and the first claim's conditional write (``attribute_not_exists``, in the
  transaction with the request record and any reservation) fails; the first reads the key again and loses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from parent_proxy.errors import IdempotencyInProgress, IdempotencyMismatch, NotFound, StoreUnavailable
from parent_proxy.store.model import IdempotencyStatus, SigningClaim
from parent_proxy.store.protocol import Store
from parent_proxy.store.sqlite import SqliteStore
from tests.proxy.conftest import make_wallet, moto_dynamo_store
from tests.proxy.hooked_client import Hook, Hooked

T0 = 1_700_000_000.0
H1 = hashlib.sha256(b"request one").digest()
H2 = hashlib.sha256(b"request two").digest()
RIVAL_ANSWER = b'{"status_code":200,"rival":true}'

Outcome = SigningClaim | Exception


@dataclass
class Racing:
    """A store holding wallet ``w1``, another process's store on the same backend, and ``after_read(fn)``: run
    ``fn`` once, right after ``store``'s next claim has read key ``k1``."""

    store: Store
    rival: Store
    after_read: Callable[[Callable[[], None]], None]


@pytest.fixture(params=["sqlite", "dynamodb"])
def racing(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Racing]:
    if request.param == "sqlite":
        store = SqliteStore(tmp_path / "state.db")
        rival = SqliteStore(tmp_path / "state.db", busy_timeout=0)  # refused at once where it would wait for the lock
        read = store._existing

        def sqlite_after_read(fn: Callable[[], None]) -> None:
            def existing(*args: Any) -> Any:
                found = read(*args)
                del store._existing
                fn()
                return found

            store._existing = existing  # type: ignore[method-assign, assignment]

        store.create_wallet(make_wallet("w1"))
        yield Racing(store, rival, sqlite_after_read)
        rival.close()
        store.close()
        return
    import boto3

    from parent_proxy.store.dynamodb import DynamoStore

    request.getfixturevalue("aws_env")
    with moto_dynamo_store(Hooked) as (dynamo, client):

        def dynamo_after_read(fn: Callable[[], None]) -> None:
            def get_item(real: Hook, **kwargs: Any) -> Any:
                found = real(**kwargs)
                if kwargs["Key"]["sk"]["S"] == "I#k1":
                    del client.hooks["get_item"]
                    fn()
                return found

            client.hooks["get_item"] = get_item

        dynamo.create_wallet(make_wallet("w1"))
        other = DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), "waiaas-test")
        yield Racing(dynamo, other, dynamo_after_read)
        other.close()


def attempt(claim: Callable[[], SigningClaim]) -> Outcome:
    try:
        return claim()
    except (IdempotencyInProgress, IdempotencyMismatch, StoreUnavailable) as exc:
        return exc


def begin(s: Store, digest: bytes, request_id: str, amounts: Mapping[str, int]) -> Callable[[], SigningClaim]:
    return lambda: s.begin_signing("w1", "k1", digest, request_id=request_id, amounts=amounts, limits={}, now=T0)


@pytest.mark.parametrize("reserving", [False, True], ids=["nothing-reserved", "reserving"])
@pytest.mark.parametrize(
    ("rival_hash", "rival_completes"),
    [(H1, False), (H1, True), (H2, False)],
    ids=["rival-in-progress", "rival-completed", "rival-other-request"],
)
def test_two_claims_of_one_key_between_read_and_write_one_wins(
    racing: Racing, reserving: bool, rival_hash: bytes, rival_completes: bool
) -> None:
    s, rival = racing.store, racing.rival
    amounts = {"first": {"SOL": 5} if reserving else {}, "rival": {"SOL": 7} if reserving else {}}
    outcomes: dict[str, Outcome] = {}

    def rival_claims() -> None:
        outcomes["rival"] = attempt(begin(rival, rival_hash, "r-rival", amounts["rival"]))
        if rival_completes and isinstance(outcomes["rival"], SigningClaim):
            rival.complete_idempotent("w1", "k1", rival_hash, RIVAL_ANSWER)

    racing.after_read(rival_claims)
    outcomes["first"] = attempt(begin(s, H1, "r-first", amounts["first"]))
    held_off = isinstance(outcomes["rival"], StoreUnavailable)  # it could not land between the read and the write
    if held_off:
        outcomes["rival"] = attempt(begin(rival, rival_hash, "r-rival", amounts["rival"]))

    won = [who for who, o in outcomes.items() if isinstance(o, SigningClaim) and o.replay is None]
    assert won == (["first"] if held_off else ["rival"]), outcomes  # exactly one claim, the one that wrote first
    (winner,) = won
    lost = outcomes["rival" if winner == "first" else "first"]
    winner_hash, answered = (H1, False) if winner == "first" else (rival_hash, rival_completes)
    if rival_hash != H1:
        assert isinstance(lost, IdempotencyMismatch), lost
    elif answered:
        assert isinstance(lost, SigningClaim) and lost.replay is not None, lost  # the stored answer, replayed
        assert (lost.replay.response, lost.reservation) == (RIVAL_ANSWER, None)
    else:
        assert isinstance(lost, IdempotencyInProgress), lost
    # Nothing of the loser's: one request counted, the winner's reservation alone, the loser's request id free.
    assert s.count_requests("w1", 0.0) == 1
    assert s.spent_in_window("w1", "SOL", 60, T0) == sum(amounts[winner].values())
    with pytest.raises(NotFound):
        s.reservation_status("w1", "r-rival" if winner == "first" else "r-first")
    if answered:
        kept = s.lookup_idempotent("w1", "k1", winner_hash, T0)
        assert kept is not None and (kept.status, kept.response) == (IdempotencyStatus.COMPLETED, RIVAL_ANSWER)
    else:
        with pytest.raises(IdempotencyInProgress):  # the winner's claim, still in progress
            s.lookup_idempotent("w1", "k1", winner_hash, T0)
