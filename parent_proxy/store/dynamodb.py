"""`DynamoStore`: the `Store` adapter for a fleet of parent instances sharing one DynamoDB table.

Reservations are atomic by optimistic concurrency: read the wallet's ``ledger_version``, read the wallet's
reservations (strongly consistent), check the caps, then one ``TransactWriteItems`` puts the reservation (only if
its id is new) and bumps the version (only if it is still the one read). A concurrent reservation that committed
in between changes the version, so this transaction is cancelled and the whole check is redone; two reservations
can therefore never both pass a check that only one of them could. Commits and releases do not bump the version:
neither can raise a total. Webhooks and the audit log are in `dynamodb_outbox`; layout in `dynamodb_base`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import Any

from parent_proxy.errors import (
    AlreadyDecided,
    Conflict,
    IdempotencyInProgress,
    IdempotencyMismatch,
    InvalidInput,
    NotFound,
    StalePolicySequence,
    StoreUnavailable,
)
from parent_proxy.store import limits as lim
from parent_proxy.store import tokens
from parent_proxy.store import validation as v
from parent_proxy.store.dynamodb_base import (
    CONDITION_FAILED,
    TTL_ATTRIBUTE,
    ConditionFailed,
    Item,
    b,
    create_table,
    get_b,
    get_f,
    get_i,
    get_opt_b,
    get_opt_f,
    get_opt_s,
    get_s,
    n,
    opt_b,
    opt_s,
    s,
    sortable_time,
    translate,
)
from parent_proxy.store.dynamodb_outbox import DynamoOutboxAudit
from parent_proxy.store.model import (
    Approval,
    ApprovalStatus,
    IdempotencyRecord,
    IdempotencyStatus,
    IssuedToken,
    Reservation,
    ReservationStatus,
    Wallet,
)
from parent_proxy.store.protocol import Limits

__all__ = ["DynamoStore", "create_table"]

MAX_RESERVE_ATTEMPTS = 25
"""Optimistic retries before a contended reservation reports the store unavailable (503; the caller decides)."""
RETRY_BASE_SECONDS = 0.002


class DynamoStore(DynamoOutboxAudit):
    """DynamoDB-backed `Store` over one table (see `dynamodb_base` for its layout)."""

    # -- agent tokens ---------------------------------------------------------------------------------------
    def issue_token(self, wallet_id: str, now: float) -> IssuedToken:
        v.check_id("wallet_id", wallet_id)
        now = v.check_time("now", now)
        self._require_wallet(wallet_id)
        token_id, token, secret_hash = tokens.new_token()
        item = {
            "pk": s(f"T#{token_id}"),
            "sk": s("TOKEN"),
            "wallet_id": s(wallet_id),
            "secret_hash": b(secret_hash),
            "created_at": n(now),
        }
        with translate():
            self._client.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        return IssuedToken(token_id=token_id, wallet_id=wallet_id, token=token)

    def authenticate_token(self, token: str) -> str:
        parsed = tokens.parse_token(token)
        if parsed is None:
            raise NotFound("unknown or revoked token")
        item = self._get(f"T#{parsed[0]}", "TOKEN")
        stored = None if item is None else get_b(item, "secret_hash")
        if not tokens.secret_matches(parsed[1], stored) or item is None or "revoked_at" in item:
            raise NotFound("unknown or revoked token")
        return get_s(item, "wallet_id")

    def revoke_token(self, token_id: str, now: float) -> None:
        v.check_id("token_id", token_id)
        now = v.check_time("now", now)
        try:
            with translate():
                self._client.update_item(
                    TableName=self._table,
                    Key={"pk": s(f"T#{token_id}"), "sk": s("TOKEN")},
                    UpdateExpression="SET revoked_at = if_not_exists(revoked_at, :t)",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues={":t": n(now)},
                )
        except ConditionFailed as exc:
            raise NotFound(f"token {token_id} not found") from exc

    # -- wallets --------------------------------------------------------------------------------------------
    def create_wallet(self, wallet: Wallet) -> None:
        w = v.check_wallet(wallet)
        item = {
            "pk": s(f"W#{w.wallet_id}"),
            "sk": s("WALLET"),
            "agent_pubkey": b(w.agent_pubkey),
            "owner_pubkey": b(w.owner_pubkey),
            "vault_address": b(w.vault_address),
            "sealed_key": b(w.sealed_key),
            "frozen": {"BOOL": w.frozen},
            "frozen_reason": opt_s(w.frozen_reason),
            "policy_document": opt_b(w.policy_document),
            "policy_sequence": n(w.policy_sequence),
            "ledger_version": n(0),
        }
        try:
            with translate():
                self._client.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ConditionFailed as exc:
            raise Conflict(f"wallet {w.wallet_id} already exists") from exc

    def get_wallet(self, wallet_id: str) -> Wallet:
        v.check_id("wallet_id", wallet_id)
        i = self._require_wallet(wallet_id)
        return Wallet(
            wallet_id,
            get_b(i, "agent_pubkey"),
            get_b(i, "owner_pubkey"),
            get_b(i, "vault_address"),
            get_b(i, "sealed_key"),
            bool(i["frozen"]["BOOL"]),
            get_opt_s(i, "frozen_reason"),
            get_opt_b(i, "policy_document"),
            get_i(i, "policy_sequence"),
        )

    def _update_wallet(self, wallet_id: str, update: str, values: dict[str, Any], condition: str) -> None:
        with translate():
            self._client.update_item(
                TableName=self._table,
                Key={"pk": s(f"W#{wallet_id}"), "sk": s("WALLET")},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )

    def set_frozen(self, wallet_id: str, frozen: bool, reason: str | None) -> None:
        v.check_id("wallet_id", wallet_id)
        v.check_frozen(frozen, reason)
        try:
            self._update_wallet(
                wallet_id,
                "SET frozen = :f, frozen_reason = :r",
                {":f": {"BOOL": frozen}, ":r": opt_s(reason)},
                "attribute_exists(pk)",
            )
        except ConditionFailed as exc:
            raise NotFound(f"wallet {wallet_id} not found") from exc

    def install_policy(self, wallet_id: str, document: bytes, sequence: int) -> None:
        v.check_id("wallet_id", wallet_id)
        v.check_blob("document", document)
        v.check_count("sequence", sequence, minimum=1)
        try:
            self._update_wallet(
                wallet_id,
                "SET policy_document = :d, policy_sequence = :q",
                {":d": b(document), ":q": n(sequence)},
                "attribute_exists(pk) AND policy_sequence < :q",
            )
        except ConditionFailed as exc:
            current = get_i(self._require_wallet(wallet_id), "policy_sequence")
            raise StalePolicySequence(wallet_id, sequence, current) from exc

    # -- period limits --------------------------------------------------------------------------------------
    def _live_entries(self, wallet_id: str, longest: int, now: float) -> tuple[list[lim.Entry], set[str]]:
        entries: list[lim.Entry] = []
        ids: set[str] = set()
        for item in self._query(f"W#{wallet_id}", prefix="R#"):
            ids.add(get_s(item, "sk")[2:])
            created = get_f(item, "created_at")
            if get_s(item, "status") != ReservationStatus.RELEASED and lim.in_window(created, longest, now):
                entries.append((lim.decode_amounts(get_s(item, "amounts")), created))
        return entries, ids

    def reserve(
        self, wallet_id: str, request_id: str, amounts: Mapping[str, int], limits: Limits, now: float
    ) -> Reservation:
        v.check_id("wallet_id", wallet_id)
        v.check_id("request_id", request_id)
        wanted = v.check_amounts(amounts)
        caps = v.check_limits(limits)
        now = v.check_time("now", now)
        longest = max((w for (_, w) in caps), default=0)
        item = {
            "pk": s(f"W#{wallet_id}"),
            "sk": s(f"R#{request_id}"),
            "amounts": s(lim.encode_amounts(wanted)),
            "created_at": n(now),
            "status": s(ReservationStatus.PENDING),
            TTL_ATTRIBUTE: n(int(now) + v.MAX_WINDOW_SECONDS + 1),
        }
        for attempt in range(MAX_RESERVE_ATTEMPTS):
            # 1. Read the version first: any reservation committed after this read will change it.
            version = get_i(self._require_wallet(wallet_id), "ledger_version")
            # 2. Read every reservation of the wallet (strongly consistent) and check the caps.
            entries, ids = self._live_entries(wallet_id, longest, now)
            if request_id in ids:
                raise Conflict(f"reservation {request_id} already exists")
            lim.check_reservation(wallet_id, entries, wanted, caps, now)
            # 3. Write the reservation only if the version is unchanged, and bump it.
            try:
                with translate():
                    self._client.transact_write_items(
                        TransactItems=[
                            {
                                "Update": {
                                    "TableName": self._table,
                                    "Key": {"pk": s(f"W#{wallet_id}"), "sk": s("WALLET")},
                                    "UpdateExpression": "SET ledger_version = :next",
                                    "ConditionExpression": "ledger_version = :seen",
                                    "ExpressionAttributeValues": {":seen": n(version), ":next": n(version + 1)},
                                }
                            },
                            {
                                "Put": {
                                    "TableName": self._table,
                                    "Item": item,
                                    "ConditionExpression": "attribute_not_exists(pk)",
                                }
                            },
                        ]
                    )
            except ConditionFailed as exc:
                if len(exc.reasons) > 1 and exc.reasons[1] == CONDITION_FAILED:
                    raise Conflict(f"reservation {request_id} already exists") from exc
                time.sleep(random.uniform(0, RETRY_BASE_SECONDS * (attempt + 1)))  # noqa: S311 - jitter only
                continue
            return Reservation(wallet_id=wallet_id, request_id=request_id, amounts=wanted, created_at=now)
        raise StoreUnavailable(f"wallet {wallet_id}: reservation contended {MAX_RESERVE_ATTEMPTS} times")

    def _transition(self, reservation: Reservation, target: ReservationStatus) -> None:
        if not isinstance(reservation, Reservation):
            raise InvalidInput("reservation", "must be a Reservation")
        key = {"pk": s(f"W#{reservation.wallet_id}"), "sk": s(f"R#{reservation.request_id}")}
        try:
            with translate():
                self._client.update_item(
                    TableName=self._table,
                    Key=key,
                    UpdateExpression="SET #st = :t",
                    ConditionExpression="attribute_exists(pk) AND (#st = :p OR #st = :t)",
                    ExpressionAttributeNames={"#st": "status"},
                    ExpressionAttributeValues={":t": s(target), ":p": s(ReservationStatus.PENDING)},
                )
        except ConditionFailed as exc:
            current = self.reservation_status(reservation.wallet_id, reservation.request_id)
            raise Conflict(f"reservation {reservation.request_id} is {current}, cannot become {target}") from exc

    def commit(self, reservation: Reservation) -> None:
        self._transition(reservation, ReservationStatus.COMMITTED)

    def release(self, reservation: Reservation) -> None:
        self._transition(reservation, ReservationStatus.RELEASED)

    def reservation_status(self, wallet_id: str, request_id: str) -> ReservationStatus:
        item = self._get(f"W#{wallet_id}", f"R#{request_id}")
        if item is None:
            raise NotFound(f"reservation {request_id} not found")
        return ReservationStatus(get_s(item, "status"))

    def spent_in_window(self, wallet_id: str, asset: str, window_seconds: int, now: float) -> int:
        v.check_id("wallet_id", wallet_id)
        v.check_id("asset", asset)
        v.check_count("window_seconds", window_seconds, minimum=1, maximum=v.MAX_WINDOW_SECONDS)
        now = v.check_time("now", now)
        entries, _ = self._live_entries(wallet_id, window_seconds, now)
        return lim.window_total(entries, asset, window_seconds, now)

    # -- rate limits and denial bursts ----------------------------------------------------------------------
    def _record(self, kind: str, wallet_id: str, now: float) -> None:
        v.check_id("wallet_id", wallet_id)
        now = v.check_time("now", now)
        self._require_wallet(wallet_id)  # wallets are never deleted, so a prior read suffices
        sk = f"E#{kind}#{sortable_time(now)}#{random.getrandbits(64):016x}"
        item = {
            "pk": s(f"W#{wallet_id}"),
            "sk": s(sk),
            "at": n(now),
            TTL_ATTRIBUTE: n(int(now) + v.MAX_WINDOW_SECONDS + 1),
        }
        with translate():
            self._client.put_item(TableName=self._table, Item=item)

    def _recent(self, kind: str, wallet_id: str, since: float) -> list[float]:
        v.check_id("wallet_id", wallet_id)
        since = v.check_time("since", since)
        # The key's time is rounded to microseconds (monotonically), so the range never misses a match; the exact
        # comparison below drops the few rounded-in extras.
        items = self._query(f"W#{wallet_id}", between=(f"E#{kind}#{sortable_time(since)}", f"E#{kind}#~"))
        return sorted(t for t in (get_f(i, "at") for i in items) if t >= since)

    def record_request(self, wallet_id: str, now: float) -> None:
        self._record("request", wallet_id, now)

    def recent_requests(self, wallet_id: str, since: float) -> list[float]:
        return self._recent("request", wallet_id, since)

    def record_denial(self, wallet_id: str, now: float) -> None:
        self._record("denial", wallet_id, now)

    def recent_denials(self, wallet_id: str, since: float) -> list[float]:
        return self._recent("denial", wallet_id, since)

    # -- idempotency ----------------------------------------------------------------------------------------
    def begin_idempotent(self, wallet_id: str, key: str, request_hash: bytes, now: float) -> IdempotencyRecord | None:
        v.check_id("wallet_id", wallet_id)
        v.check_idempotency_key(key)
        v.check_digest("request_hash", request_hash)
        now = v.check_time("now", now)
        self._require_wallet(wallet_id)
        item = {
            "pk": s(f"W#{wallet_id}"),
            "sk": s(f"I#{key}"),
            "request_hash": b(request_hash),
            "status": s(IdempotencyStatus.IN_PROGRESS),
            "created_at": n(now),
        }
        try:
            with translate():
                self._client.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")
            return None
        except ConditionFailed:
            pass
        existing = self._get(f"W#{wallet_id}", f"I#{key}")
        if existing is None:
            raise IdempotencyInProgress(f"idempotency key {key!r}: the first request has not completed")
        if get_b(existing, "request_hash") != request_hash:
            raise IdempotencyMismatch(f"idempotency key {key!r} was used for a different request")
        if get_s(existing, "status") != IdempotencyStatus.COMPLETED:
            raise IdempotencyInProgress(f"idempotency key {key!r}: the first request has not completed")
        return IdempotencyRecord(
            wallet_id,
            key,
            request_hash,
            IdempotencyStatus.COMPLETED,
            get_opt_b(existing, "response"),
            get_f(existing, "created_at"),
        )

    def _claimed_update(self, wallet_id: str, key: str, request_hash: bytes, **kwargs: Any) -> None:
        condition = "attribute_exists(pk) AND request_hash = :h AND #st = :ip"
        values = {":h": b(request_hash), ":ip": s(IdempotencyStatus.IN_PROGRESS), **kwargs.pop("values", {})}
        names = {"#st": "status"}
        if "UpdateExpression" in kwargs:
            names["#rs"] = "response"  # a reserved word in expressions
        try:
            with translate():
                kwargs.update(
                    TableName=self._table,
                    Key={"pk": s(f"W#{wallet_id}"), "sk": s(f"I#{key}")},
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )
                if "UpdateExpression" in kwargs:
                    self._client.update_item(**kwargs)
                else:
                    self._client.delete_item(**kwargs)
        except ConditionFailed as exc:
            if self._get(f"W#{wallet_id}", f"I#{key}") is None:
                raise NotFound(f"idempotency key {key!r} not found") from exc
            raise Conflict(f"idempotency key {key!r} is not in progress for this request") from exc

    def complete_idempotent(self, wallet_id: str, key: str, request_hash: bytes, response: bytes) -> None:
        v.check_idempotency_key(key)
        v.check_digest("request_hash", request_hash)
        v.check_blob("response", response)
        self._claimed_update(
            wallet_id,
            key,
            request_hash,
            UpdateExpression="SET #st = :c, #rs = :r",
            values={":c": s(IdempotencyStatus.COMPLETED), ":r": b(response)},
        )

    def abandon_idempotent(self, wallet_id: str, key: str, request_hash: bytes) -> None:
        v.check_idempotency_key(key)
        v.check_digest("request_hash", request_hash)
        self._claimed_update(wallet_id, key, request_hash)

    # -- pending approvals ----------------------------------------------------------------------------------
    def create_approval(self, approval: Approval) -> None:
        a = v.check_approval(approval)
        self._require_wallet(a.wallet_id)
        full = {
            "pk": s(f"W#{a.wallet_id}"),
            "sk": s(f"AP#{a.approval_id}"),
            "request_payload": b(a.request_payload),
            "status": s(ApprovalStatus.PENDING),
            "created_at": n(a.created_at),
        }
        pointer = {"pk": s(f"A#{a.approval_id}"), "sk": s("APPROVAL"), "wallet_id": s(a.wallet_id)}
        new = "attribute_not_exists(pk)"
        try:
            with translate():
                self._client.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": self._table, "Item": pointer, "ConditionExpression": new}},
                        {"Put": {"TableName": self._table, "Item": full, "ConditionExpression": new}},
                    ]
                )
        except ConditionFailed as exc:
            raise Conflict(f"approval {a.approval_id} already exists") from exc

    def _approval_item(self, approval_id: str) -> tuple[str, Item]:
        pointer = self._get(f"A#{approval_id}", "APPROVAL")
        full = None if pointer is None else self._get(f"W#{get_s(pointer, 'wallet_id')}", f"AP#{approval_id}")
        if pointer is None or full is None:
            raise NotFound(f"approval {approval_id} not found")
        return get_s(pointer, "wallet_id"), full

    @staticmethod
    def _approval(wallet_id: str, i: Item) -> Approval:
        return Approval(
            get_s(i, "sk")[3:],
            wallet_id,
            get_b(i, "request_payload"),
            ApprovalStatus(get_s(i, "status")),
            get_f(i, "created_at"),
            get_opt_b(i, "decision"),
            get_opt_f(i, "decided_at"),
        )

    def get_approval(self, approval_id: str) -> Approval:
        v.check_id("approval_id", approval_id)
        return self._approval(*self._approval_item(approval_id))

    def decide_approval(self, approval_id: str, status: ApprovalStatus, decision: bytes | None, now: float) -> Approval:
        v.check_id("approval_id", approval_id)
        if status not in (ApprovalStatus.APPROVED, ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED):
            raise InvalidInput("status", "must be approved, rejected or expired")
        if decision is not None:
            v.check_blob("decision", decision)
        now = v.check_time("now", now)
        wallet_id, _ = self._approval_item(approval_id)
        try:
            with translate():
                self._client.update_item(
                    TableName=self._table,
                    Key={"pk": s(f"W#{wallet_id}"), "sk": s(f"AP#{approval_id}")},
                    UpdateExpression="SET #st = :s, decision = :d, decided_at = :t",
                    ConditionExpression="#st = :p",
                    ExpressionAttributeNames={"#st": "status"},
                    ExpressionAttributeValues={
                        ":s": s(status),
                        ":d": opt_b(decision),
                        ":t": n(now),
                        ":p": s(ApprovalStatus.PENDING),
                    },
                )
        except ConditionFailed as exc:
            current = self.get_approval(approval_id).status
            raise AlreadyDecided(f"approval {approval_id} is already {current}") from exc
        return self.get_approval(approval_id)

    def pending_approvals(self, wallet_id: str) -> list[Approval]:
        v.check_id("wallet_id", wallet_id)
        approvals = [self._approval(wallet_id, i) for i in self._query(f"W#{wallet_id}", prefix="AP#")]
        pending = [a for a in approvals if a.status == ApprovalStatus.PENDING]
        return sorted(pending, key=lambda a: (a.created_at, a.approval_id))
