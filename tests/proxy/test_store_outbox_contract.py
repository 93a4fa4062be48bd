"""Contract tests for the webhook outbox, delivery log and audit table, on every `Store` adapter."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, replace

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import Conflict, InvalidInput, LeaseLost, NotFound
from parent_proxy.store.model import GENESIS_PREV_HASH, AuditRecord, OutboxItem, OutboxStatus, WebhookConfig
from parent_proxy.store.protocol import Store
from parent_proxy.store.validation_outbox import WALLET_PAUSE_CAP_SECONDS
from tests.proxy.conftest import FakeClock, make_wallet

T0 = 1_700_000_000.0
SECRET = b"s" * 32


def item(event_id: str, wallet_id: str = "w1", due: float = T0) -> OutboxItem:
    return OutboxItem(event_id, wallet_id, "decision", b'{"x":1}', created_at=T0, next_attempt_at=due)


def test_webhook_config_roundtrip_and_validation(wallet_store: Store) -> None:
    assert wallet_store.get_webhook("w1") is None
    wallet_store.set_webhook(WebhookConfig("w1", "https://example.test/hook", SECRET))
    wallet_store.set_webhook(WebhookConfig("w1", "https://example.test/v2", SECRET))
    config = wallet_store.get_webhook("w1")
    assert config == WebhookConfig("w1", "https://example.test/v2", SECRET)
    assert "sss" not in repr(config)
    with pytest.raises(InvalidInput, match="secret: must be 16-256 bytes"):
        wallet_store.set_webhook(WebhookConfig("w1", "https://x.test", b"short"))
    with pytest.raises(InvalidInput, match="url: must be an http"):
        wallet_store.set_webhook(WebhookConfig("w1", "ftp://x.test", SECRET))
    with pytest.raises(NotFound, match="wallet w9 not found"):
        wallet_store.set_webhook(WebhookConfig("w9", "https://x.test", SECRET))


def test_outbox_claim_lease_deliver(wallet_store: Store) -> None:
    s = wallet_store
    s.enqueue_webhook(item("e1"))
    s.enqueue_webhook(item("e2", due=T0 + 100))
    with pytest.raises(Conflict, match="outbox item e1 already exists"):
        s.enqueue_webhook(item("e1"))
    claimed = s.claim_webhooks(T0, 30, 10)
    assert [(c.event_id, c.attempts) for c in claimed] == [("e1", 1)]
    assert claimed[0].lease_id is not None and claimed[0].lease_until == T0 + 30
    assert s.claim_webhooks(T0 + 29, 30, 10) == []  # leased, and e2 not due yet
    with pytest.raises(LeaseLost, match="outbox item e1: lease lost"):
        s.mark_delivered("e1", "not-my-lease", now=T0 + 1, status_code=200)
    s.mark_delivered("e1", claimed[0].lease_id, now=T0 + 1, status_code=204)
    done = s.get_outbox_item("e1")
    assert (done.status, done.attempts, done.lease_id) == (OutboxStatus.DELIVERED, 1, None)
    assert [(a.attempt, a.delivered, a.status_code) for a in s.delivery_log("e1")] == [(1, True, 204)]
    with pytest.raises(LeaseLost, match="lease lost"):
        s.mark_delivered("e1", claimed[0].lease_id, now=T0 + 2, status_code=200)
    assert s.claim_webhooks(T0 + 1000, 30, 10)[0].event_id == "e2"
    with pytest.raises(NotFound, match="outbox item nope not found"):
        s.get_outbox_item("nope")
    with pytest.raises(NotFound, match="wallet w9 not found"):
        s.enqueue_webhook(item("e9", wallet_id="w9"))


def test_outbox_failure_retry_expiry_and_dead(wallet_store: Store) -> None:
    s = wallet_store
    s.enqueue_webhook(item("e1"))
    first = s.claim_webhooks(T0, 30, 1)[0]
    s.mark_failed("e1", first.lease_id or "", now=T0 + 1, error="HTTP 500", status_code=500, next_attempt_at=T0 + 60)
    assert s.claim_webhooks(T0 + 59, 30, 1) == []
    second = s.claim_webhooks(T0 + 60, 30, 1)[0]
    assert second.attempts == 2
    # The worker holding the lease "crashes": the lease expires and another claim takes the item over.
    third = s.claim_webhooks(T0 + 90, 30, 1)[0]
    assert third.attempts == 3 and third.lease_id != second.lease_id
    with pytest.raises(LeaseLost, match="lease lost"):
        s.mark_failed("e1", second.lease_id or "", now=T0 + 91, error="late", status_code=None, next_attempt_at=None)
    s.mark_failed("e1", third.lease_id or "", now=T0 + 92, error="gave up", status_code=None, next_attempt_at=None)
    assert s.get_outbox_item("e1").status == OutboxStatus.DEAD
    assert s.claim_webhooks(T0 + 10_000, 30, 10) == []
    log = s.delivery_log("e1")
    assert [(a.attempt, a.delivered, a.status_code, a.error) for a in log] == [
        (1, False, 500, "HTTP 500"),
        (3, False, None, "gave up"),
    ]
    with pytest.raises(InvalidInput, match="error: must be a non-blank"):
        s.mark_failed("e1", "x", now=T0, error="", status_code=None, next_attempt_at=None)


def test_a_finish_of_an_item_never_enqueued_is_not_found(wallet_store: Store) -> None:
    """Not a lost lease: there is no item (pending or finished) under that event id."""
    s = wallet_store
    with pytest.raises(NotFound, match="outbox item nope not found"):
        s.mark_delivered("nope", "a-lease", now=T0, status_code=200)
    with pytest.raises(NotFound, match="outbox item nope not found"):
        s.mark_failed("nope", "a-lease", now=T0, error="HTTP 500", status_code=500, next_attempt_at=T0 + 60)


def test_a_claim_takes_one_item_per_wallet_and_none_of_a_wallet_in_flight(wallet_store: Store) -> None:
    """Before: a claim took the first ``limit`` due items whatever their wallet, so one wallet's backlog filled a
    batch, and a worker (or a second lane) took the next item of a wallet whose last delivery was still hanging."""
    s = wallet_store
    s.create_wallet(make_wallet("w3"))
    for n in range(4):
        s.enqueue_webhook(item(f"a{n}", "w1", due=T0 + n))
    s.enqueue_webhook(item("b0", "w2", due=T0 + 10))
    s.enqueue_webhook(item("c0", "w3", due=T0 + 20))
    now = T0 + 100
    assert [c.event_id for c in s.claim_webhooks(now, 30, 2)] == ["a0", "b0"]  # due order, one per wallet
    [a0, b0] = [s.get_outbox_item(e) for e in ("a0", "b0")]
    assert [c.event_id for c in s.claim_webhooks(now, 30, 10)] == ["c0"]  # w1 and w2 are in flight
    assert s.claim_webhooks(now + 1, 30, 10) == []
    s.mark_delivered("a0", a0.lease_id or "", now=now + 1, status_code=200)
    s.mark_failed("b0", b0.lease_id or "", now=now + 1, error="HTTP 500", status_code=500, next_attempt_at=now + 5)
    assert [c.event_id for c in s.claim_webhooks(now + 1, 30, 10)] == ["a1"]  # w2's only item is not due yet
    # A lease that ends (its worker died) frees the wallet: its earliest due item is claimed again, not the next.
    claimed = s.claim_webhooks(now + 31, 30, 10)
    assert [(c.event_id, c.attempts) for c in claimed] == [("a1", 2), ("c0", 2), ("b0", 2)]


def test_a_claim_leases_nothing_of_the_wallets_it_skips(wallet_store: Store) -> None:
    """The worker skips its slow receivers' wallets when their lanes are full (`parent_proxy.webhook_lanes`): their
    items are passed over whatever their due time, and stay claimable by a claim that does not skip them."""
    s = wallet_store
    s.create_wallet(make_wallet("w3"))
    for n, (event_id, wallet_id) in enumerate((("a0", "w1"), ("a1", "w1"), ("b0", "w2"), ("c0", "w3"))):
        s.enqueue_webhook(item(event_id, wallet_id, due=T0 + n))
    assert [c.event_id for c in s.claim_webhooks(T0 + 10, 30, 1, skip_wallets={"w1", "w2"})] == ["c0"]
    assert [s.get_outbox_item(e).attempts for e in ("a0", "a1", "b0")] == [0, 0, 0]
    assert [c.event_id for c in s.claim_webhooks(T0 + 10, 30, 10, skip_wallets=["w2"])] == ["a0"]
    assert [c.event_id for c in s.claim_webhooks(T0 + 10, 30, 10, skip_wallets=())] == ["b0"]
    with pytest.raises(InvalidInput, match="skip_wallets: must be a collection of ids"):
        s.claim_webhooks(T0 + 10, 30, 10, skip_wallets="w1")
    with pytest.raises(InvalidInput, match="skip_wallets: must be 1-128 characters"):
        s.claim_webhooks(T0 + 10, 30, 10, skip_wallets=["w 1"])


def test_a_failed_attempt_pauses_its_wallet_up_to_the_cap(wallet_store: Store) -> None:
    """A failed attempt that reschedules its item holds back its wallet's next claim (any of its items, new ones too)
    until the item's retry time, at most `WALLET_PAUSE_CAP_SECONDS` after the attempt; other wallets are not held
    back; a claim after the pause, a delivery and a give-up leave the wallet unpaused. Before: the backoff was the
    item's alone, so the wallet's next item was claimable at once and a receiver that failed at once was sent each
    queued event back to back."""
    s, cap = wallet_store, WALLET_PAUSE_CAP_SECONDS
    for n in range(4):
        s.enqueue_webhook(item(f"a{n}", "w1"))
    s.enqueue_webhook(item("b0", "w2"))
    a0, b0 = s.claim_webhooks(T0, 30, 10)
    # An item with a long backoff (an hour): the wallet waits the cap, not the hour.
    s.mark_failed("a0", a0.lease_id or "", now=T0 + 1, error="HTTP 500", status_code=500, next_attempt_at=T0 + 3601)
    assert s.claim_webhooks(T0 + 1, 30, 10) == []  # w1 is paused, w2 in flight
    s.mark_delivered("b0", b0.lease_id or "", now=T0 + 2, status_code=200)
    s.enqueue_webhook(item("b1", "w2", due=T0 + 2))
    s.enqueue_webhook(item("a9", "w1", due=T0 + 2))  # queued during the pause: it waits too
    [b1] = s.claim_webhooks(T0 + 2, 30, 10)  # another wallet is not held back
    assert b1.event_id == "b1"
    s.mark_delivered("b1", b1.lease_id or "", now=T0 + 3, status_code=200)
    assert s.claim_webhooks(T0 + 1 + cap - 0.001, 30, 10) == []
    [a1] = s.claim_webhooks(T0 + 1 + cap, 30, 10)  # the wallet's earliest due item, not the one that failed
    assert (a1.event_id, s.get_outbox_item("a0").attempts) == ("a1", 1)
    # An item with a short backoff: the wallet waits that backoff.
    t = T0 + 100
    s.mark_failed("a1", a1.lease_id or "", now=t, error="HTTP 503", status_code=503, next_attempt_at=t + 5)
    assert s.claim_webhooks(t + 4.999, 30, 10) == []
    [a2] = s.claim_webhooks(t + 5, 30, 10)
    assert a2.event_id == "a2"
    # A delivery leaves the wallet unpaused: its next item goes at once; so does a give-up (no retry, no pause).
    s.mark_delivered("a2", a2.lease_id or "", now=t + 6, status_code=200)
    [a3] = s.claim_webhooks(t + 6, 30, 10)
    s.mark_failed("a3", a3.lease_id or "", now=t + 7, error="gave up", status_code=None, next_attempt_at=None)
    assert [c.event_id for c in s.claim_webhooks(t + 7, 30, 10)] == ["a9"]


def test_a_paused_wallet_comes_in_due_order_at_the_end_of_its_pause(wallet_store: Store) -> None:
    """A wallet paused until ``t`` is due at ``t`` with its earliest item's event id: at an equal time, an item of
    another wallet with a lower event id goes first, as it would against that item due at ``t``."""
    s = wallet_store
    s.enqueue_webhook(item("e_b", "w1", due=T0))
    s.enqueue_webhook(item("e_c", "w1", due=T0))
    [e_b] = s.claim_webhooks(T0, 30, 10)
    s.mark_failed("e_b", e_b.lease_id or "", now=T0 + 1, error="HTTP 500", status_code=500, next_attempt_at=T0 + 5)
    s.enqueue_webhook(replace(item("e_a", "w2", due=T0 + 5), created_at=T0 + 5))
    assert [c.event_id for c in s.claim_webhooks(T0 + 5, 30, 1)] == ["e_a"]
    assert [c.event_id for c in s.claim_webhooks(T0 + 5, 30, 1)] == ["e_c"]


def _record(seq: int, prev: bytes) -> AuditRecord:
    digest = hashlib.sha256(prev + seq.to_bytes(8, "big")).digest()
    return AuditRecord(seq, T0 + seq, "w1", "decision", b"{}", None, prev, digest)


def test_audit_append_only_extends_head(store: Store) -> None:
    assert store.audit_head() is None
    with pytest.raises(Conflict, match="audit record 2 does not extend the head \\(expected seq 1\\)"):
        store.append_audit(_record(2, GENESIS_PREV_HASH))
    with pytest.raises(Conflict, match="expected seq 1"):
        store.append_audit(_record(1, b"\x01" * 32))
    r1 = _record(1, GENESIS_PREV_HASH)
    store.append_audit(r1)
    r2 = _record(2, r1.hash)
    with pytest.raises(Conflict, match="audit record 1 does not extend the head \\(expected seq 2\\)"):
        store.append_audit(r1)
    with pytest.raises(Conflict, match="expected seq 2"):
        store.append_audit(_record(2, b"\x09" * 32))  # wrong prev_hash
    with pytest.raises(Conflict, match="audit record 3 does not extend the head \\(expected seq 2\\)"):
        store.append_audit(_record(3, r1.hash))  # the head's hash, a sequence number skipped
    store.append_audit(r2)
    store.append_audit(r3 := AuditRecord(3, T0, None, "boot", b"[]", b"receipt", r2.hash, b"\x07" * 32))
    assert store.audit_head() == r3
    assert store.audit_records(0, 100) == [r1, r2, r3]
    assert store.audit_records(1, 1) == [r2]
    assert store.audit_records(3, 10) == []


@pytest.mark.parametrize(
    ("after_seq", "limit", "refused"),
    [
        (0, 0, "limit: must be an integer in \\[1, 10000\\]"),
        (0, 10_001, "limit"),
        (-1, 10, "after_seq"),
        (0, True, "limit"),
    ],
)
def test_audit_records_refuses_a_bad_page(store: Store, after_seq: int, limit: int, refused: str) -> None:
    """A page of at most 10,000 records (the audit export's), after a sequence number."""
    store.append_audit(_record(1, GENESIS_PREV_HASH))
    with pytest.raises(InvalidInput, match=refused):
        store.audit_records(after_seq, limit)


def test_append_audit_refuses_what_is_not_an_audit_record(wallet_store: Store) -> None:
    s = wallet_store
    record = _record(1, GENESIS_PREV_HASH)
    with pytest.raises(InvalidInput, match="record: must be an AuditRecord"):
        s.append_audit(asdict(record), item("e1"))  # type: ignore[arg-type]
    assert s.audit_head() is None
    with pytest.raises(NotFound, match="outbox item e1 not found"):
        s.get_outbox_item("e1")


def test_append_audit_with_its_webhook_is_all_or_nothing(wallet_store: Store) -> None:
    """An audited event and its notification are one transaction: neither exists without the other."""
    s = wallet_store
    r1 = _record(1, GENESIS_PREV_HASH)
    s.append_audit(r1, item("e1"))
    assert s.audit_head() == r1
    assert s.get_outbox_item("e1").status == OutboxStatus.PENDING
    r2 = _record(2, r1.hash)
    # A record that does not extend the head: the webhook is not queued either.
    with pytest.raises(Conflict, match="audit record 1 does not extend the head"):
        s.append_audit(r1, item("e2"))
    with pytest.raises(NotFound, match="outbox item e2 not found"):
        s.get_outbox_item("e2")
    # A webhook that cannot be queued (its event id exists; its wallet does not): the record is not appended.
    with pytest.raises(Conflict, match="outbox item e1 already exists"):
        s.append_audit(r2, item("e1"))
    with pytest.raises(NotFound, match="wallet w9 not found"):
        s.append_audit(r2, item("e3", wallet_id="w9"))
    with pytest.raises(InvalidInput, match="event_id"):
        s.append_audit(r2, item(""))
    assert s.audit_head() == r1
    assert s.claim_webhooks(T0, 30, 10)[0].event_id == "e1"  # e1 is unchanged and the only item
    s.append_audit(r2, item("e2"))
    assert s.audit_records(0, 10) == [r1, r2]
    assert s.get_outbox_item("e2").status == OutboxStatus.PENDING


def test_an_event_id_once_delivered_is_never_queued_again(wallet_store: Store, clock: FakeClock) -> None:
    """Through every write that queues an item: enqueue_webhook, append_audit and finish_signing."""
    s = wallet_store
    s.enqueue_webhook(item("e1"))
    [claimed] = s.claim_webhooks(T0, 30, 10)
    s.mark_delivered("e1", claimed.lease_id or "", now=T0 + 1, status_code=200)
    log = AuditLog(s, clock)
    with pytest.raises(Conflict, match="outbox item e1 already exists"):
        s.enqueue_webhook(item("e1"))
    with pytest.raises(Conflict, match="outbox item e1 already exists"):
        log.append("wallet.frozen", {}, wallet_id="w1", webhook=item("e1"))
    with pytest.raises(Conflict, match="outbox item"):
        s.finish_signing(None, log.sealer("transaction.signed", {}, wallet_id="w1"), item("e1"), None)
    assert s.audit_head() is None
    assert s.get_outbox_item("e1").status == OutboxStatus.DELIVERED
    assert s.claim_webhooks(T0 + 1000, 30, 10) == []
