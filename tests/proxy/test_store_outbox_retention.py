"""Finished webhook outbox items (delivered or dead) and their delivery-log lines are kept for
`OUTBOX_RETENTION_SECONDS` after the attempt that finished them, then deleted: by `Store.prune` on SQLite, by the
table's TTL on DynamoDB (each item and log line carries ``expires_at``). Pending items are never deleted. Before,
both adapters kept them, bodies and all, for ever."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from parent_proxy.errors import NotFound
from parent_proxy.store.model import OutboxItem, OutboxStatus
from parent_proxy.store.protocol import Store
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.store.validation import OUTBOX_RETENTION_SECONDS
from tests.proxy.conftest import make_wallet, moto_dynamo_store

T0 = 1_700_000_000.0
LEASE = 30.0
TABLE = "waiaas-test"
FAR = T0 + 100 * 86_400  # a retry far beyond the retention: the item stays pending all along


def _history(s: Store) -> None:
    """``done``: failed at T0, delivered at T0 + 100; ``dead``: given up at T0 + 200; ``late``: delivered at
    T0 + 10 days; ``waiting``: failed at T0 and still pending. One wallet each (a claim takes one item per wallet)."""
    for n, event_id in enumerate(("done", "dead", "late", "waiting")):
        s.create_wallet(make_wallet(f"w{n}"))
        s.enqueue_webhook(OutboxItem(event_id, f"w{n}", "decision", b'{"x":1}', created_at=T0, next_attempt_at=T0))
    leases = {c.event_id: c.lease_id or "" for c in s.claim_webhooks(T0, 1000.0, 10)}
    for event_id in ("done", "waiting"):
        again = FAR if event_id == "waiting" else T0 + 100
        s.mark_failed(event_id, leases[event_id], now=T0, error="HTTP 500", status_code=500, next_attempt_at=again)
    [done] = s.claim_webhooks(T0 + 100, LEASE, 10)
    s.mark_delivered("done", done.lease_id or "", now=T0 + 100, status_code=200)
    s.mark_failed("dead", leases["dead"], now=T0 + 200, error="gave up", status_code=None, next_attempt_at=None)
    s.mark_delivered("late", leases["late"], now=T0 + 10 * 86_400, status_code=204)


def test_sqlite_prunes_finished_items_and_their_log_once_the_retention_is_over(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "state.db")
    _history(s)
    s.prune(T0 + 100 + OUTBOX_RETENTION_SECONDS)  # exactly the retention after ``done`` finished: kept
    assert s.get_outbox_item("done").status == OutboxStatus.DELIVERED and len(s.delivery_log("done")) == 2
    s.prune(math.nextafter(T0 + 100 + OUTBOX_RETENTION_SECONDS, math.inf))
    with pytest.raises(NotFound, match="outbox item done not found"):
        s.get_outbox_item("done")
    assert s.delivery_log("done") == []
    assert s.get_outbox_item("dead").status == OutboxStatus.DEAD
    s.prune(T0 + 10 * 365 * 86_400)  # ten years on: the pending item and its log line stay
    assert [e for e in ("dead", "late", "waiting") if _kept(s, e)] == ["waiting"]
    assert [a.error for a in s.delivery_log("waiting")] == ["HTTP 500"]
    [waiting] = s.claim_webhooks(FAR, LEASE, 10)
    assert (waiting.event_id, waiting.attempts) == ("waiting", 2)
    s.close()


def _kept(s: Store, event_id: str) -> bool:
    try:
        s.get_outbox_item(event_id)
    except NotFound:
        return False
    return True


def test_dynamodb_finished_items_and_log_lines_carry_the_ttl(aws_env: None) -> None:
    """DynamoDB deletes an item once its ``expires_at`` (whole seconds) has passed: the first whole second after
    the retention, counted from the attempt that finished the item (a log line: from its own attempt)."""
    with moto_dynamo_store(lambda client: client) as (store, client):
        _history(store)

        def ttl(pk: str, sk: str) -> Any:
            item = client.get_item(TableName=TABLE, Key={"pk": {"S": pk}, "sk": {"S": sk}})["Item"]
            return None if "expires_at" not in item else float(item["expires_at"]["N"])

        def expiry(at: float) -> float:
            return math.floor(at + OUTBOX_RETENTION_SECONDS) + 1

        assert ttl("O#done", "ITEM") == expiry(T0 + 100)
        assert ttl("O#dead", "ITEM") == expiry(T0 + 200)
        assert ttl("O#late", "ITEM") == expiry(T0 + 10 * 86_400)
        assert [ttl("O#done", f"D#{n:06d}") for n in (1, 2)] == [expiry(T0), expiry(T0 + 100)]
        assert ttl("O#waiting", "D#000001") == expiry(T0)
        assert ttl("OUTBOX", "waiting") is None  # pending: never expires
        items = client.scan(TableName=TABLE)["Items"]
        outbox = [i for i in items if i["pk"]["S"] in ("OUTBOX", "OUTBOX_WALLETS") or "OUTBOX#" in i["sk"]["S"]]
        assert outbox and not [i for i in outbox if "expires_at" in i]  # nor its pointer and its wallet's head
