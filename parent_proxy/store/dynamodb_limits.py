"""The period-limit and rate part of `DynamoStore`: reservations by optimistic concurrency (see `dynamodb`),
request and denial timestamps, and pruning (the table's TTL does it).

A reservation is keyed by its time (``RT#<sortable time>#<request id>``), so that checking the caps reads the
reservations of the longest window only, not every reservation of the last month; a pointer ``R#<request id>``
holds its time, makes request ids unique (a conditional put in the same transaction) and finds it by id."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import Any

from parent_proxy.errors import (
    Conflict,
    InvalidInput,
    LimitExceeded,
    NotFound,
    StoreOutcomeUnknown,
    StoreUnavailable,
)
from parent_proxy.store import limits as lim
from parent_proxy.store import validation as v
from parent_proxy.store.dynamodb_attributes import get_f, get_i, get_s, n, s, sortable_time
from parent_proxy.store.dynamodb_base import CONDITION_FAILED, TTL_ATTRIBUTE, ConditionFailed, translate
from parent_proxy.store.dynamodb_outbox import DynamoOutboxAudit
from parent_proxy.store.model import Reservation, ReservationStatus
from parent_proxy.store.protocol import Limits


def _reservation_key(request_id: str, created_at: float) -> str:
    return f"RT#{sortable_time(created_at)}#{request_id}"


MAX_RESERVE_ATTEMPTS = 25
"""Optimistic retries before a contended reservation reports the store unavailable (503; the caller decides)."""
RETRY_BASE_SECONDS = 0.002


class DynamoLimits(DynamoOutboxAudit):
    """Reservations, rate/denial events and pruning over one table (see `dynamodb_base` for its layout)."""

    # -- period limits --------------------------------------------------------------------------------------
    def _live_entries(self, wallet_id: str, longest: int, now: float) -> list[lim.Entry]:
        """The unreleased reservations inside the ``longest`` window ending at ``now`` (a range read of that window:
        the key's time is rounded monotonically, so the range misses nothing; the exact test drops the extras)."""
        entries: list[lim.Entry] = []
        window = (f"RT#{sortable_time(max(0.0, now - longest))}", "RT#~")
        for item in self._query(f"W#{wallet_id}", between=window):
            created = get_f(item, "created_at")
            if get_s(item, "status") != ReservationStatus.RELEASED and lim.in_window(created, longest, now):
                entries.append((lim.decode_amounts(get_s(item, "amounts")), created))
        return entries

    def reserve(
        self, wallet_id: str, request_id: str, amounts: Mapping[str, int], limits: Limits, now: float
    ) -> Reservation:
        v.check_id("wallet_id", wallet_id)
        v.check_id("request_id", request_id)
        wanted = v.check_amounts(amounts)
        caps = v.check_limits(limits)
        now = v.check_time("now", now)
        return self._reserve_with(wallet_id, request_id, wanted, caps, now=now, extra=[])

    def _reserve_with(
        self,
        wallet_id: str,
        request_id: str,
        wanted: tuple[tuple[str, int], ...],
        caps: dict[tuple[str, int], int],
        *,
        now: float,
        extra: list[Any],
    ) -> Reservation:
        """Reserve (the module docstring's steps) in one transaction with the ``extra`` actions. A failed condition
        of an extra action is re-raised as `ConditionFailed` (reasons: version, pointer, reservation, then
        ``extra``). An unknown outcome (`StoreOutcomeUnknown`) is settled by the pointer, which only this
        transaction can have written: there, it was applied; else it stays unknown."""
        longest = max((w for (_, w) in caps), default=0)
        expires = n(int(now) + v.MAX_WINDOW_SECONDS + 1)
        item = {
            "pk": s(f"W#{wallet_id}"),
            "sk": s(_reservation_key(request_id, now)),
            "amounts": s(lim.encode_amounts(wanted)),
            "created_at": n(now),
            "status": s(ReservationStatus.PENDING),
            TTL_ATTRIBUTE: expires,
        }
        pointer = {"pk": s(f"W#{wallet_id}"), "sk": s(f"R#{request_id}"), "created_at": n(now), TTL_ATTRIBUTE: expires}
        for attempt in range(MAX_RESERVE_ATTEMPTS):
            # 1. Read the version first: any reservation committed after this read will change it.
            version = get_i(self._require_wallet(wallet_id), "ledger_version")
            # 2. Read the reservations of the longest window (strongly consistent) and check the caps.
            entries = self._live_entries(wallet_id, longest, now)
            try:
                lim.check_reservation(wallet_id, entries, wanted, caps, now)
            except LimitExceeded:
                # A reused id is a `Conflict` whatever the amounts (as on SQLite): the write's condition would
                # have said so, but a refusal never gets that far.
                if self._get(f"W#{wallet_id}", f"R#{request_id}") is not None:
                    raise Conflict(f"reservation {request_id} already exists") from None
                raise
            # 3. Write the reservation only if the version is unchanged, and bump it.
            bump: Any = {
                "Update": {
                    "TableName": self._table,
                    "Key": {"pk": s(f"W#{wallet_id}"), "sk": s("WALLET")},
                    "UpdateExpression": "SET ledger_version = :next",
                    "ConditionExpression": "ledger_version = :seen",
                    "ExpressionAttributeValues": {":seen": n(version), ":next": n(version + 1)},
                }
            }
            new = "attribute_not_exists(pk)"
            put: Any = {"Put": {"TableName": self._table, "Item": pointer, "ConditionExpression": new}}
            put_item: Any = {"Put": {"TableName": self._table, "Item": item, "ConditionExpression": new}}
            try:
                self._transact([bump, put, put_item, *extra])
            except ConditionFailed as exc:
                if CONDITION_FAILED in exc.reasons[1:3]:
                    raise Conflict(f"reservation {request_id} already exists") from exc
                if CONDITION_FAILED in exc.reasons[3:]:
                    raise
                time.sleep(random.uniform(0, RETRY_BASE_SECONDS * (attempt + 1)))  # noqa: S311 - jitter only
                continue
            except StoreOutcomeUnknown:
                if not self._written(f"W#{wallet_id}", f"R#{request_id}"):  # request ids are new: it is this one
                    raise
            return Reservation(wallet_id=wallet_id, request_id=request_id, amounts=wanted, created_at=now)
        raise StoreUnavailable(f"wallet {wallet_id}: reservation contended {MAX_RESERVE_ATTEMPTS} times")

    def _transition_action(self, reservation: Reservation, target: ReservationStatus) -> Any:
        if not isinstance(reservation, Reservation):
            raise InvalidInput("reservation", "must be a Reservation")
        return {
            "Update": {
                "TableName": self._table,
                "Key": {
                    "pk": s(f"W#{reservation.wallet_id}"),
                    "sk": s(_reservation_key(reservation.request_id, reservation.created_at)),
                },
                "UpdateExpression": "SET #st = :t",
                "ConditionExpression": "attribute_exists(pk) AND (#st = :p OR #st = :t)",
                "ExpressionAttributeNames": {"#st": "status"},
                "ExpressionAttributeValues": {":t": s(target), ":p": s(ReservationStatus.PENDING)},
            }
        }

    def _transition_conflict(self, reservation: Reservation, target: ReservationStatus) -> Conflict:
        current = self.reservation_status(reservation.wallet_id, reservation.request_id)
        return Conflict(f"reservation {reservation.request_id} is {current}, cannot become {target}")

    def _transition(self, reservation: Reservation, target: ReservationStatus) -> None:
        action = self._transition_action(reservation, target)
        try:
            with translate():
                self._client.update_item(**action["Update"])
        except ConditionFailed as exc:
            raise self._transition_conflict(reservation, target) from exc

    def commit(self, reservation: Reservation) -> None:
        self._transition(reservation, ReservationStatus.COMMITTED)

    def release(self, reservation: Reservation) -> None:
        self._transition(reservation, ReservationStatus.RELEASED)

    def reservation_status(self, wallet_id: str, request_id: str) -> ReservationStatus:
        pointer = self._get(f"W#{wallet_id}", f"R#{request_id}")
        item = None
        if pointer is not None:
            item = self._get(f"W#{wallet_id}", _reservation_key(request_id, get_f(pointer, "created_at")))
        if item is None:
            raise NotFound(f"reservation {request_id} not found")
        return ReservationStatus(get_s(item, "status"))

    def spent_in_window(self, wallet_id: str, asset: str, window_seconds: int, now: float) -> int:
        v.check_id("wallet_id", wallet_id)
        v.check_id("asset", asset)
        v.check_count("window_seconds", window_seconds, minimum=1, maximum=v.MAX_WINDOW_SECONDS)
        now = v.check_time("now", now)
        entries = self._live_entries(wallet_id, window_seconds, now)
        return lim.window_total(entries, asset, window_seconds, now)

    # -- rate limits and denial bursts ----------------------------------------------------------------------
    def _event_action(self, kind: str, wallet_id: str, now: float) -> Any:
        sk = f"E#{kind}#{sortable_time(now)}#{random.getrandbits(64):016x}"
        item = {
            "pk": s(f"W#{wallet_id}"),
            "sk": s(sk),
            "at": n(now),
            TTL_ATTRIBUTE: n(int(now) + v.MAX_WINDOW_SECONDS + 1),
        }
        return {"Put": {"TableName": self._table, "Item": item}}

    def _record(self, kind: str, wallet_id: str, now: float) -> None:
        v.check_id("wallet_id", wallet_id)
        now = v.check_time("now", now)
        self._require_wallet(wallet_id)  # wallets are never deleted, so a prior read suffices
        with translate():
            self._client.put_item(**self._event_action(kind, wallet_id, now)["Put"])

    def _recent(self, kind: str, wallet_id: str, since: float) -> list[float]:
        v.check_id("wallet_id", wallet_id)
        since = v.check_time("since", since)
        # The key's time is rounded to microseconds (monotonically), so the range never misses a match; the exact
        # comparison below drops the few rounded-in extras.
        items = self._query(f"W#{wallet_id}", between=(f"E#{kind}#{sortable_time(since)}", f"E#{kind}#~"))
        return sorted(t for t in (get_f(i, "at") for i in items) if t >= since)

    def count_requests(self, wallet_id: str, since: float) -> int:
        return len(self._recent("request", wallet_id, since))

    def count_denials(self, wallet_id: str, since: float) -> int:
        return len(self._recent("denial", wallet_id, since))

    def record_request(self, wallet_id: str, now: float) -> None:
        self._record("request", wallet_id, now)

    def recent_requests(self, wallet_id: str, since: float) -> list[float]:
        return self._recent("request", wallet_id, since)

    def record_denial(self, wallet_id: str, now: float) -> None:
        self._record("denial", wallet_id, now)

    def recent_denials(self, wallet_id: str, since: float) -> list[float]:
        return self._recent("denial", wallet_id, since)

    # -- housekeeping ---------------------------------------------------------------------------------------
    def prune(self, now: float) -> None:
        """Nothing to do here: reservations and request/denial timestamps carry the table's TTL attribute
        (``expires_at`` = creation + `validation.MAX_WINDOW_SECONDS` + 1), so DynamoDB deletes them itself, and
        every read filters by time exactly, whether or not an expired item is still there. Idempotency records and
        wallet-creation nonces carry it too, and their conditions ignore an expired one."""
        v.check_time("now", now)
