"""The webhook and audit half of `DynamoStore`: webhook settings, the persistent outbox, the delivery log and
the audit chain (a HEAD item moved forward by a conditional transaction, so appends are serialised). The outbox is
claimed through its due index and per-wallet lease items (`dynamodb_outbox_due`), never by reading it whole."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Any

from parent_proxy.errors import Conflict, InvalidInput, LeaseLost, NotFound, StoreOutcomeUnknown, StoreUnavailable
from parent_proxy.store import validation as v
from parent_proxy.store.dynamodb_base import (
    CONDITION_FAILED,
    DUE_ATTRIBUTE,
    WRITE_ID,
    ConditionFailed,
    Item,
    b,
    get_b,
    get_f,
    get_i,
    get_opt_b,
    get_opt_f,
    get_opt_s,
    get_s,
    n,
    new_write_id,
    opt_b,
    opt_n,
    opt_s,
    s,
    translate,
)
from parent_proxy.store.dynamodb_outbox_due import OUTBOX_PK, DynamoOutboxDue, due_key
from parent_proxy.store.model import (
    GENESIS_PREV_HASH,
    AuditRecord,
    DeliveryAttempt,
    OutboxItem,
    OutboxStatus,
    WebhookConfig,
)

AUDIT_PK = "AUDIT"


def webhook_item(c: WebhookConfig) -> Item:
    """A wallet's webhook configuration as stored (``W#<wallet>/WEBHOOK``)."""
    return {"pk": s(f"W#{c.wallet_id}"), "sk": s("WEBHOOK"), "url": s(c.url), "secret": b(c.secret)}


def _outbox_item(item: OutboxItem) -> Item:
    """A pending item as stored under ``OUTBOX`` (a finished one is stored without ``due_key``)."""
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
        DUE_ATTRIBUTE: s(due_key(item.next_attempt_at, item.event_id)),
    }


def _parse_outbox(i: Item, event_id: str) -> OutboxItem:
    return OutboxItem(
        event_id,
        get_s(i, "wallet_id"),
        get_s(i, "event_type"),
        get_b(i, "body"),
        get_f(i, "created_at"),
        OutboxStatus(get_s(i, "status")),
        get_i(i, "attempts"),
        get_f(i, "next_attempt_at"),
        get_opt_s(i, "lease_id"),
        get_opt_f(i, "lease_until"),
    )


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


class DynamoOutboxAudit(DynamoOutboxDue):
    """Webhooks, outbox and audit log over one DynamoDB table."""

    # -- webhooks -------------------------------------------------------------------------------------------
    def set_webhook(self, config: WebhookConfig) -> None:
        c = v.check_webhook(config)
        self._require_wallet(c.wallet_id)
        with translate():
            self._client.put_item(TableName=self._table, Item=webhook_item(c))

    def get_webhook(self, wallet_id: str) -> WebhookConfig | None:
        v.check_id("wallet_id", wallet_id)
        item = self._get(f"W#{wallet_id}", "WEBHOOK")
        return None if item is None else WebhookConfig(wallet_id, get_s(item, "url"), get_b(item, "secret"))

    def enqueue_webhook(self, item: OutboxItem) -> None:
        i = v.check_outbox_item(item)
        self._require_wallet(i.wallet_id)
        try:
            self._transact(self._enqueue_actions(i))
        except ConditionFailed as exc:
            raise Conflict(f"outbox item {i.event_id} already exists") from exc

    def _enqueue_actions(self, item: OutboxItem) -> list[Any]:
        """The two transaction actions that enqueue a new item: refused if its event id was ever enqueued, whether
        the item is still pending (``OUTBOX/<event>``) or finished (``O#<event>/ITEM``), as on SQLite."""
        new = "attribute_not_exists(pk)"
        finished = {"pk": s(f"O#{item.event_id}"), "sk": s("ITEM")}
        return [
            {"ConditionCheck": {"TableName": self._table, "Key": finished, "ConditionExpression": new}},
            {"Put": {"TableName": self._table, "Item": _outbox_item(item), "ConditionExpression": new}},
        ]

    def claim_webhooks(
        self, now: float, lease_seconds: float, limit: int, *, skip_wallets: Collection[str] = ()
    ) -> list[OutboxItem]:
        now = v.check_time("now", now)
        lease_seconds = v.check_time("lease_seconds", lease_seconds)
        v.check_count("limit", limit, minimum=1, maximum=1000)
        skip = v.check_ids("skip_wallets", skip_wallets)
        self._index_older_items()
        claimed: list[OutboxItem] = []
        seen = set(skip)  # wallets skipped, claimed, found in flight, or tried in this claim: one try each
        try:
            for i in self._due_items(now, limit):
                item = _parse_outbox(i, get_s(i, "sk"))
                if item.wallet_id in seen:
                    continue
                seen.add(item.wallet_id)
                if item.lease_until is not None and item.lease_until > now:
                    continue  # in flight as the index saw it (the lease condition below would refuse it too)
                lease_id = new_write_id()
                try:
                    self._lease(item, lease_id, now, now + lease_seconds)
                except ConditionFailed:
                    continue  # claimed, finished or rescheduled since the index read it, or its wallet in flight
                claimed.append(
                    replace(item, attempts=item.attempts + 1, lease_id=lease_id, lease_until=now + lease_seconds)
                )
                if len(claimed) == limit:
                    break
        except StoreUnavailable:
            if not claimed:
                raise
            # Hand over what is leased already (else it would sit leased, unsent, until the lease ends).
        return claimed

    def _finish(
        self,
        event_id: str,
        lease_id: str,
        attempt: DeliveryAttempt,
        status: OutboxStatus,
        next_attempt_at: float | None,
    ) -> None:
        current = self._get(OUTBOX_PK, event_id)
        if current is None:
            if self._get(f"O#{event_id}", "ITEM") is None:
                raise NotFound(f"outbox item {event_id} not found")
            raise LeaseLost(f"outbox item {event_id}: lease lost")
        number = get_i(current, "attempts")
        log = {
            "pk": s(f"O#{event_id}"),
            "sk": s(f"D#{number:06d}"),
            "at": n(attempt.at),
            "delivered": {"BOOL": attempt.delivered},
            "status_code": opt_n(attempt.status_code),
            "error": opt_s(attempt.error),
        }
        guard: dict[str, Any] = {
            "ConditionExpression": "lease_id = :l AND attempts = :a",
            "ExpressionAttributeValues": {":l": s(lease_id), ":a": n(number)},
        }
        key = {"pk": s(OUTBOX_PK), "sk": s(event_id)}
        first: dict[str, Any]
        if status == OutboxStatus.PENDING and next_attempt_at is not None:
            first = {
                "Update": {
                    "TableName": self._table,
                    "Key": key,
                    **guard,
                    "UpdateExpression": "SET lease_id = :none, lease_until = :none, next_attempt_at = :n, #due = :k",
                    "ExpressionAttributeNames": {"#due": DUE_ATTRIBUTE},
                    "ExpressionAttributeValues": {
                        **guard["ExpressionAttributeValues"],
                        ":none": {"NULL": True},
                        ":n": n(next_attempt_at),
                        ":k": s(due_key(next_attempt_at, event_id)),
                    },
                }
            }
            actions = [first]
        else:
            done = _parse_outbox(current, event_id)
            archived = _outbox_item(
                OutboxItem(
                    event_id,
                    done.wallet_id,
                    done.event_type,
                    done.body,
                    done.created_at,
                    status,
                    done.attempts,
                    done.next_attempt_at,
                    None,
                    None,
                )
            )
            archived.update(pk=s(f"O#{event_id}"), sk=s("ITEM"))
            del archived[DUE_ATTRIBUTE]  # out of the due index
            actions = [
                {"Delete": {"TableName": self._table, "Key": key, **guard}},
                {"Put": {"TableName": self._table, "Item": archived}},
            ]
        actions.append({"Put": {"TableName": self._table, "Item": log}})
        release = self._release_action(get_s(current, "wallet_id"), lease_id)
        try:
            try:
                self._transact([*actions, release])
            except ConditionFailed as exc:
                if exc.reasons[0] == CONDITION_FAILED:
                    raise
                # The wallet's lease item is not this lease's (this lease ended and another claim of the wallet holds
                # it, or the item was leased by a build without lease items): leave it.
                self._transact(actions)
        except ConditionFailed as exc:
            raise LeaseLost(f"outbox item {event_id}: lease lost") from exc

    def mark_delivered(self, event_id: str, lease_id: str, *, now: float, status_code: int) -> None:
        attempt = v.delivered_attempt(event_id, now=now, status_code=status_code)
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
        attempt, status = v.failed_attempt(
            event_id, now=now, error=error, status_code=status_code, next_attempt_at=next_attempt_at
        )
        self._finish(event_id, lease_id, attempt, status, next_attempt_at)

    def get_outbox_item(self, event_id: str) -> OutboxItem:
        item = self._get(OUTBOX_PK, event_id) or self._get(f"O#{event_id}", "ITEM")
        if item is None:
            raise NotFound(f"outbox item {event_id} not found")
        return _parse_outbox(item, event_id)

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
        enqueue = [] if webhook is None else self._enqueue_actions(v.check_outbox_item(webhook))
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
