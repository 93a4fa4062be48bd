"""The webhook and audit half of `DynamoStore`: webhook settings, the persistent outbox, the delivery log and
the audit chain (a HEAD item moved forward by a conditional transaction, so appends are serialised). The outbox is
claimed through one head per wallet in its due index (`dynamodb_outbox_heads`), never by reading it whole nor any
wallet's backlog. Finished items and delivery-log lines carry the table's TTL attribute: DynamoDB deletes them
`validation.OUTBOX_RETENTION_SECONDS` after the attempt that finished the item (a log line: after its attempt)."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from parent_proxy.errors import Conflict, InvalidInput, LeaseLost, NotFound, StoreOutcomeUnknown, StoreUnavailable
from parent_proxy.store import validation as v
from parent_proxy.store.dynamodb_attributes import (
    b,
    get_b,
    get_f,
    get_i,
    get_opt_b,
    get_opt_s,
    get_s,
    n,
    opt_b,
    opt_n,
    opt_s,
    s,
)
from parent_proxy.store.dynamodb_base import (
    CONDITION_FAILED,
    TTL_ATTRIBUTE,
    WRITE_ID,
    ConditionFailed,
    Item,
    new_write_id,
    translate,
)
from parent_proxy.store.dynamodb_outbox_heads import (
    OUTBOX_PK,
    Head,
    due_key,
    parse_outbox,
    pointer_due,
    pointer_item,
    pointer_key,
)
from parent_proxy.store.dynamodb_outbox_layout import DynamoOutboxLayout
from parent_proxy.store.model import (
    GENESIS_PREV_HASH,
    AuditRecord,
    DeliveryAttempt,
    OutboxItem,
    OutboxStatus,
    WebhookConfig,
)
from parent_proxy.store.validation_outbox import (
    check_outbox_item,
    check_webhook,
    delivered_attempt,
    failed_attempt,
    wallet_pause_until,
)

AUDIT_PK = "AUDIT"
FINISH_ATTEMPTS = 5
"""Sends of one finish whose only refusal was the wallet's head, moved by another claim or finish of the wallet."""


def webhook_item(c: WebhookConfig) -> Item:
    """A wallet's webhook configuration as stored (``W#<wallet>/WEBHOOK``)."""
    return {"pk": s(f"W#{c.wallet_id}"), "sk": s("WEBHOOK"), "url": s(c.url), "secret": b(c.secret)}


def _outbox_item(item: OutboxItem) -> Item:
    """An item as stored: pending under ``OUTBOX``, finished under ``O#<event>/ITEM`` (see `_finish_actions`)."""
    return {
        "pk": s(OUTBOX_PK),
        "sk": s(item.event_id),
        "wallet_id": s(item.wallet_id),
        "event_type": s(item.event_type),
        "body": b(item.body),
        "created_at": n(item.created_at),
        "status": s(item.status),
        "attempts": n(item.attempts),
        "next_attempt_at": n(item.next_attempt_at),
        "lease_id": opt_s(item.lease_id),
        "lease_until": opt_n(item.lease_until),
    }


def expiry(at: float) -> Any:
    """The TTL of a finished item or a delivery-log line whose attempt was at ``at``: the first whole second after
    `validation.OUTBOX_RETENTION_SECONDS` have passed, so DynamoDB deletes it only once that retention is over."""
    return n(math.floor(at + v.OUTBOX_RETENTION_SECONDS) + 1)


def _audit_key(seq: int) -> str:
    return f"R#{seq:020d}"


def _parse_audit(i: Item) -> AuditRecord:
    return AuditRecord(
        get_i(i, "seq"),
        get_f(i, "time"),
        get_opt_s(i, "wallet_id"),
        get_s(i, "event_type"),
        get_b(i, "payload"),
        get_opt_b(i, "receipt"),
        get_b(i, "prev_hash"),
        get_b(i, "hash"),
    )


class DynamoOutboxAudit(DynamoOutboxLayout):
    """Webhooks, outbox and audit log over one DynamoDB table."""

    # -- webhooks -------------------------------------------------------------------------------------------
    def set_webhook(self, config: WebhookConfig) -> None:
        c = check_webhook(config)
        self._require_wallet(c.wallet_id)
        with translate():
            self._client.put_item(TableName=self._table, Item=webhook_item(c))

    def get_webhook(self, wallet_id: str) -> WebhookConfig | None:
        v.check_id("wallet_id", wallet_id)
        item = self._get(f"W#{wallet_id}", "WEBHOOK")
        return None if item is None else WebhookConfig(wallet_id, get_s(item, "url"), get_b(item, "secret"))

    def enqueue_webhook(self, item: OutboxItem) -> None:
        i = check_outbox_item(item)
        self._require_wallet(i.wallet_id)
        try:
            self._transact(self._enqueue_actions(i))
        except ConditionFailed as exc:
            raise Conflict(f"outbox item {i.event_id} already exists") from exc

    def _enqueue_actions(self, item: OutboxItem) -> list[Any]:
        """The four transaction actions that enqueue a new item: refused if its event id was ever enqueued (and
        its finished item is still kept), whether the item is still pending (``OUTBOX/<event>``) or finished
        (``O#<event>/ITEM``), as on SQLite; its pointer and its wallet's newcomer mark (`dynamodb_outbox_heads`),
        written unconditionally, so that they never refuse the transaction they join."""
        new = "attribute_not_exists(pk)"
        finished = {"pk": s(f"O#{item.event_id}"), "sk": s("ITEM")}
        pointer = pointer_item(item.wallet_id, item.event_id, item.next_attempt_at)
        return [
            {"ConditionCheck": {"TableName": self._table, "Key": finished, "ConditionExpression": new}},
            {"Put": {"TableName": self._table, "Item": _outbox_item(item), "ConditionExpression": new}},
            {"Put": {"TableName": self._table, "Item": pointer}},
            self._mark_action(item.wallet_id, due_key(min(item.created_at, item.next_attempt_at), item.event_id)),
        ]

    def claim_webhooks(
        self, now: float, lease_seconds: float, limit: int, *, skip_wallets: Collection[str] = ()
    ) -> list[OutboxItem]:
        now = v.check_time("now", now)
        lease_seconds = v.check_time("lease_seconds", lease_seconds)
        v.check_count("limit", limit, minimum=1, maximum=1000)
        skip = v.check_ids("skip_wallets", skip_wallets)
        self._ready_heads(now)
        return self._claim(now, lease_seconds, limit, skip)

    def _finish(
        self,
        event_id: str,
        lease_id: str,
        attempt: DeliveryAttempt,
        status: OutboxStatus,
        next_attempt_at: float | None,
    ) -> None:
        """Record ``attempt`` and finish or reschedule the item, in one transaction with its pointer and its wallet's
        head (`dynamodb_outbox_heads`); sent again from fresh reads while only the head moved meanwhile."""
        for _ in range(FINISH_ATTEMPTS):
            current = self._get(OUTBOX_PK, event_id)
            if current is None:
                if self._get(f"O#{event_id}", "ITEM") is None:
                    raise NotFound(f"outbox item {event_id} not found")
                raise LeaseLost(f"outbox item {event_id}: lease lost")
            done = parse_outbox(current, event_id)
            head, _ = self._wallet_heads(done.wallet_id)
            try:
                self._transact(
                    self._finish_actions(
                        done, lease_id, attempt=attempt, status=status, next_attempt_at=next_attempt_at, head=head
                    )
                )
            except ConditionFailed as exc:
                if exc.reasons[0] == CONDITION_FAILED:
                    raise LeaseLost(f"outbox item {event_id}: lease lost") from exc
                continue  # the wallet's head moved (another claim or finish of the wallet): read it again
            return
        raise StoreUnavailable(f"dynamodb store unavailable: outbox item {event_id}: the wallet's head kept moving")

    def _finish_actions(
        self,
        done: OutboxItem,
        lease_id: str,
        *,
        attempt: DeliveryAttempt,
        status: OutboxStatus,
        next_attempt_at: float | None,
        head: Head,
    ) -> list[Any]:
        """The finish's actions: the item's (first: guarded by the lease and the attempt count read), its pointer's,
        the delivery-log line, and the head's (last, if it changes: the lease cleared if it is this one, the head
        moved to the wallet's earliest item left, or deleted with the last)."""
        event_id, wallet_id = done.event_id, done.wallet_id
        guard: dict[str, Any] = {
            "ConditionExpression": "lease_id = :l AND attempts = :a",
            "ExpressionAttributeValues": {":l": s(lease_id), ":a": n(done.attempts)},
        }
        key = {"pk": s(OUTBOX_PK), "sk": s(event_id)}
        old = due_key(done.next_attempt_at, event_id)
        left = [k for k in (pointer_due(p) for p in self._first_pointers(wallet_id, 2)) if k != old][:1]
        actions: list[Any]
        if status == OutboxStatus.PENDING and next_attempt_at is not None:
            update = {
                "TableName": self._table,
                "Key": key,
                **guard,
                "UpdateExpression": "SET lease_id = :none, lease_until = :none, next_attempt_at = :n",
                "ExpressionAttributeValues": {
                    **guard["ExpressionAttributeValues"],
                    ":none": {"NULL": True},
                    ":n": n(next_attempt_at),
                },
            }
            actions = [{"Update": update}]
            new = due_key(next_attempt_at, event_id)
            left.append(new)
            if new != old:
                pointer = pointer_item(wallet_id, event_id, next_attempt_at)
                actions.append({"Put": {"TableName": self._table, "Item": pointer}})
                actions.append({"Delete": {"TableName": self._table, "Key": pointer_key(wallet_id, old)}})
        else:
            archived = _outbox_item(replace(done, status=status, lease_id=None, lease_until=None))
            archived.update({"pk": s(f"O#{event_id}"), "sk": s("ITEM"), TTL_ATTRIBUTE: expiry(attempt.at)})
            actions = [
                {"Delete": {"TableName": self._table, "Key": key, **guard}},
                {"Put": {"TableName": self._table, "Item": archived}},
                {"Delete": {"TableName": self._table, "Key": pointer_key(wallet_id, old)}},
            ]
        log = {
            "pk": s(f"O#{event_id}"),
            "sk": s(f"D#{done.attempts:06d}"),
            "at": n(attempt.at),
            "delivered": {"BOOL": attempt.delivered},
            "status_code": opt_n(attempt.status_code),
            "error": opt_s(attempt.error),
            TTL_ATTRIBUTE: expiry(attempt.at),
        }
        actions.append({"Put": {"TableName": self._table, "Item": log}})
        lease = None if head.lease_id in (None, lease_id) else (head.lease_id, head.lease_until or 0.0)
        paused = wallet_pause_until(attempt.at, next_attempt_at if status == OutboxStatus.PENDING else None)
        move = self._head_action(wallet_id, head, min(left, default=None), lease, paused)
        return [*actions, *([] if move is None else [move])]

    def mark_delivered(self, event_id: str, lease_id: str, *, now: float, status_code: int) -> None:
        attempt = delivered_attempt(event_id, now=now, status_code=status_code)
        self._finish(event_id, lease_id, attempt, OutboxStatus.DELIVERED, None)

    def mark_failed(
        self,
        event_id: str,
        lease_id: str,
        *,
        now: float,
        error: str,
        status_code: int | None,
        next_attempt_at: float | None,
    ) -> None:
        attempt, status = failed_attempt(
            event_id, now=now, error=error, status_code=status_code, next_attempt_at=next_attempt_at
        )
        self._finish(event_id, lease_id, attempt, status, next_attempt_at)

    def get_outbox_item(self, event_id: str) -> OutboxItem:
        item = self._get(OUTBOX_PK, event_id) or self._get(f"O#{event_id}", "ITEM")
        if item is None:
            raise NotFound(f"outbox item {event_id} not found")
        return parse_outbox(item, event_id)

    def delivery_log(self, event_id: str) -> list[DeliveryAttempt]:
        return [
            DeliveryAttempt(
                event_id,
                int(get_s(i, "sk")[2:]),
                get_f(i, "at"),
                bool(i["delivered"]["BOOL"]),
                None if "NULL" in i["status_code"] else get_i(i, "status_code"),
                get_opt_s(i, "error"),
            )
            for i in self._query(f"O#{event_id}", prefix="D#")
        ]

    # -- audit log ------------------------------------------------------------------------------------------
    def _audit_actions(self, r: AuditRecord, write_id: str) -> list[Any]:
        """The two transaction actions that append ``r``: move the HEAD (only from ``r``'s predecessor), put ``r``
        (with ``write_id``: `_transact_recorded` tells its own record by it)."""
        head_key = {"pk": s(AUDIT_PK), "sk": s("HEAD")}
        if r.seq == 1:
            if r.prev_hash != GENESIS_PREV_HASH:
                raise Conflict("audit record 1 does not extend the head (expected seq 1)")
            head: dict[str, Any] = {
                "Put": {
                    "TableName": self._table,
                    "ConditionExpression": "attribute_not_exists(pk)",
                    "Item": {**head_key, "seq": n(1), "hash": b(r.hash)},
                }
            }
        else:
            head = {
                "Update": {
                    "TableName": self._table,
                    "Key": head_key,
                    "UpdateExpression": "SET seq = :s, #h = :h",
                    "ConditionExpression": "seq = :prev AND #h = :ph",
                    "ExpressionAttributeNames": {"#h": "hash"},
                    "ExpressionAttributeValues": {
                        ":s": n(r.seq),
                        ":h": b(r.hash),
                        ":prev": n(r.seq - 1),
                        ":ph": b(r.prev_hash),
                    },
                }
            }
        item = {
            "pk": s(AUDIT_PK),
            "sk": s(_audit_key(r.seq)),
            "seq": n(r.seq),
            "time": n(r.time),
            "wallet_id": opt_s(r.wallet_id),
            "event_type": s(r.event_type),
            "payload": b(r.payload),
            "receipt": opt_b(r.receipt),
            "prev_hash": b(r.prev_hash),
            "hash": b(r.hash),
            WRITE_ID: s(write_id),
        }
        put = {"Put": {"TableName": self._table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}
        return [head, put]

    def _audit_conflict(self, r: AuditRecord) -> Conflict:
        head_item = self._get(AUDIT_PK, "HEAD")
        expected = 1 if head_item is None else get_i(head_item, "seq") + 1
        return Conflict(f"audit record {r.seq} does not extend the head (expected seq {expected})")

    def _transact_recorded(self, actions: list[Any], record: AuditRecord) -> None:
        """`_transact` of ``actions`` and `_audit_actions` of ``record``, whose item carries a fresh write id. An
        unknown outcome (`StoreOutcomeUnknown`) is settled by the log itself: if the record at ``record.seq``
        carries that id, the transaction was applied (this returns); if it is another write's, the head has moved
        past the predecessor the transaction requires and it can never be applied (`StoreUnavailable`: nothing
        was written); if there is none yet, or it cannot be read, the outcome stays unknown (re-raised)."""
        write_id = new_write_id()
        try:
            self._transact([*actions, *self._audit_actions(record, write_id)])
        except StoreOutcomeUnknown as unknown:
            recorded = self._written(AUDIT_PK, _audit_key(record.seq), write_id)
            if recorded is None:
                raise
            if not recorded:
                taken = f"dynamodb store unavailable: audit record {record.seq} is another write's"
                raise StoreUnavailable(taken) from unknown

    def append_audit(self, record: AuditRecord, webhook: OutboxItem | None = None) -> None:
        if not isinstance(record, AuditRecord):
            raise InvalidInput("record", "must be an AuditRecord")
        enqueue = [] if webhook is None else self._enqueue_actions(check_outbox_item(webhook))
        if webhook is not None:
            self._require_wallet(webhook.wallet_id)  # wallets are never deleted, so a prior read suffices
        try:
            self._transact_recorded(enqueue, record)
        except ConditionFailed as exc:
            if webhook is not None and CONDITION_FAILED in exc.reasons[: len(enqueue)]:
                raise Conflict(f"outbox item {webhook.event_id} already exists") from exc
            raise self._audit_conflict(record) from exc

    def audit_head(self) -> AuditRecord | None:
        head = self._get(AUDIT_PK, "HEAD")
        if head is None:
            return None
        item = self._get(AUDIT_PK, _audit_key(get_i(head, "seq")))
        return None if item is None else _parse_audit(item)

    def audit_records(self, after_seq: int, limit: int) -> list[AuditRecord]:
        v.check_count("after_seq", after_seq)
        v.check_count("limit", limit, minimum=1, maximum=10_000)
        items = self._query(AUDIT_PK, between=(_audit_key(after_seq + 1), "R#~"), limit=limit)
        return [_parse_audit(i) for i in items]
