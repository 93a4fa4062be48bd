"""The webhook checks shared by every store adapter (as in `validation`: each raises `InvalidInput` naming the
field, before the backend is touched): a receiver's configuration, a new outbox item, and the checked outcome of a
delivery attempt with the pause of its wallet it brings."""

from __future__ import annotations

import re

from parent_proxy.errors import InvalidInput
from parent_proxy.store.model import DeliveryAttempt, OutboxItem, OutboxStatus, WebhookConfig
from parent_proxy.store.validation import check_blob, check_count, check_id, check_reason, check_time

WALLET_PAUSE_CAP_SECONDS = 60.0
"""Longest a failed webhook attempt holds back its wallet's next attempt (`wallet_pause_until`): a receiver that
fails at once is sent one attempt per pause, not each queued event back to back, and one event it always rejects
(whose own backoff grows to an hour) delays the wallet's other events by at most this much per retry."""


def check_webhook(config: object) -> WebhookConfig:
    if not isinstance(config, WebhookConfig):
        raise InvalidInput("config", "must be a WebhookConfig")
    check_id("wallet_id", config.wallet_id)
    if not isinstance(config.url, str) or not re.fullmatch(r"https?://[^\s]{1,2000}", config.url):
        raise InvalidInput("url", "must be an http(s) URL")
    if not isinstance(config.secret, bytes) or not 16 <= len(config.secret) <= 256:
        raise InvalidInput("secret", "must be 16-256 bytes")  # the value itself is never echoed
    return config


def check_outbox_item(item: object) -> OutboxItem:
    if not isinstance(item, OutboxItem):
        raise InvalidInput("item", "must be an OutboxItem")
    check_id("event_id", item.event_id)
    check_id("wallet_id", item.wallet_id)
    check_id("event_type", item.event_type)
    check_blob("body", item.body)
    check_time("created_at", item.created_at)
    check_time("next_attempt_at", item.next_attempt_at)
    if item.status != "pending" or item.attempts != 0 or item.lease_id is not None or item.lease_until is not None:
        raise InvalidInput("item", "a new outbox item must be pending, unleased and unattempted")
    return item


def delivered_attempt(event_id: str, *, now: float, status_code: int) -> DeliveryAttempt:
    """The checked log entry of a successful webhook delivery (both adapters' ``mark_delivered``)."""
    now = check_time("now", now)
    check_count("status_code", status_code, minimum=100, maximum=599)
    return DeliveryAttempt(event_id, 0, now, True, status_code, None)


def failed_attempt(
    event_id: str, *, now: float, error: str, status_code: int | None, next_attempt_at: float | None
) -> tuple[DeliveryAttempt, OutboxStatus]:
    """The checked log entry of a failed delivery and the item's next status: DEAD when no further attempt is
    scheduled (``next_attempt_at`` None), PENDING otherwise (both adapters' ``mark_failed``)."""
    now = check_time("now", now)
    check_reason("error", error)
    if status_code is not None:
        check_count("status_code", status_code, minimum=100, maximum=599)
    if next_attempt_at is not None:
        check_time("next_attempt_at", next_attempt_at)
    status = OutboxStatus.DEAD if next_attempt_at is None else OutboxStatus.PENDING
    return DeliveryAttempt(event_id, 0, now, False, status_code, error), status


def wallet_pause_until(now: float, next_attempt_at: float | None) -> float | None:
    """Until when a failed attempt at ``now`` holds back its wallet's next claim (any of its items): the item's
    retry time (``now`` plus its backoff), at most `WALLET_PAUSE_CAP_SECONDS` after ``now``; None (no pause) when
    the item was given up (``next_attempt_at`` None) or delivered. Both adapters' finishes write it on the wallet's
    head in the attempt's transaction (checked arguments)."""
    return None if next_attempt_at is None else min(next_attempt_at, now + WALLET_PAUSE_CAP_SECONDS)
