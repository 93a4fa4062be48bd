"""The idempotency part of `DynamoStore`: one record per wallet and key (``W#<wallet>/I#<key>``), claimed by a
conditional put (in progress), completed with the stored answer, or abandoned. The claim and the answer are also
actions of the signing path's two transactions (`DynamoStore.begin_signing`, `DynamoStore.finish_signing`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from parent_proxy.errors import Conflict, IdempotencyInProgress, IdempotencyMismatch, NotFound
from parent_proxy.store import validation as v
from parent_proxy.store.dynamodb_approvals import DynamoApprovals
from parent_proxy.store.dynamodb_attributes import b, get_b, get_f, get_opt_b, get_s, n, s
from parent_proxy.store.dynamodb_base import TTL_ATTRIBUTE, WRITE_ID, ConditionFailed, new_write_id, translate
from parent_proxy.store.model import IdempotencyRecord, IdempotencyStatus, IdempotentAnswer
from parent_proxy.store.state_changes import ReplaceAnswer


class DynamoIdempotency(DynamoApprovals):
    """Idempotency records over one table (see `dynamodb_base` for its layout)."""

    # -- idempotency ----------------------------------------------------------------------------------------
    def _claim_action(self, wallet_id: str, key: str, request_hash: bytes, now: float) -> Any:
        """A put of the in-progress claim, if the key is free or held by an expired record (which it replaces).
        The TTL (a day past the claim, at the earliest when the record could expire) lets DynamoDB clean up."""
        item = {
            "pk": s(f"W#{wallet_id}"),
            "sk": s(f"I#{key}"),
            "request_hash": b(request_hash),
            "status": s(IdempotencyStatus.IN_PROGRESS),
            "created_at": n(now),
            TTL_ATTRIBUTE: n(int(now) + v.IDEMPOTENCY_RETENTION_SECONDS + 1),
            WRITE_ID: s(new_write_id()),
        }
        condition = (
            "attribute_not_exists(pk) OR (#st = :ip AND created_at < :stale) OR (#st = :c AND created_at < :kept)"
        )
        values = {
            ":ip": s(IdempotencyStatus.IN_PROGRESS),
            ":c": s(IdempotencyStatus.COMPLETED),
            ":stale": n(now - v.IDEMPOTENCY_STALE_SECONDS),
            ":kept": n(now - v.IDEMPOTENCY_RETENTION_SECONDS),
        }
        put = {
            "TableName": self._table,
            "Item": item,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": values,
        }
        return {"Put": put}

    def _existing(
        self, wallet_id: str, key: str, request_hash: bytes, now: float, *, claimed: bool
    ) -> IdempotencyRecord | None:
        """None if ``key`` is free at ``now``; the completed record; or raise mismatch / in progress. ``claimed``:
        a claim was just refused, so a key that is free again was taken and given up meanwhile (in progress)."""
        existing = self._get(f"W#{wallet_id}", f"I#{key}")
        if existing is None or v.idempotency_expired(get_s(existing, "status"), get_f(existing, "created_at"), now):
            if claimed:
                raise IdempotencyInProgress(f"idempotency key {key!r}: the first request has not completed")
            return None
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

    def begin_idempotent(self, wallet_id: str, key: str, request_hash: bytes, now: float) -> IdempotencyRecord | None:
        v.check_claim(wallet_id, key, request_hash)
        now = v.check_time("now", now)
        self._require_wallet(wallet_id)
        claim = self._claim_action(wallet_id, key, request_hash, now)["Put"]
        try:
            self._write_once("put_item", claim, get_s(claim["Item"], WRITE_ID))
            return None
        except ConditionFailed:
            pass
        return self._existing(wallet_id, key, request_hash, now, claimed=True)

    def lookup_idempotent(self, wallet_id: str, key: str, request_hash: bytes, now: float) -> IdempotencyRecord | None:
        v.check_claim(wallet_id, key, request_hash)
        now = v.check_time("now", now)
        return self._existing(wallet_id, key, request_hash, now, claimed=False)

    def _complete_action(self, answer: IdempotentAnswer) -> Any:
        return {
            "Update": {
                "TableName": self._table,
                "Key": {"pk": s(f"W#{answer.wallet_id}"), "sk": s(f"I#{answer.key}")},
                "UpdateExpression": "SET #st = :c, #rs = :r",
                "ConditionExpression": "attribute_exists(pk) AND request_hash = :h AND #st = :ip",
                "ExpressionAttributeNames": {"#st": "status", "#rs": "response"},
                "ExpressionAttributeValues": {
                    ":h": b(answer.request_hash),
                    ":ip": s(IdempotencyStatus.IN_PROGRESS),
                    ":c": s(IdempotencyStatus.COMPLETED),
                    ":r": b(answer.response),
                },
            }
        }

    def _complete_part(self, answer: IdempotentAnswer) -> tuple[list[Any], Callable[[], Exception]]:
        """`_complete_action` (for `DynamoAudited.apply_audited`), and its refusal (as `complete_idempotent`'s)."""

        def refusal() -> Exception:
            if self._get(f"W#{answer.wallet_id}", f"I#{answer.key}") is None:
                return NotFound(f"idempotency key {answer.key!r} not found")
            return Conflict(f"idempotency key {answer.key!r} is not in progress for this request")

        return [self._complete_action(answer)], refusal

    def _replace_answer_part(self, r: ReplaceAnswer) -> tuple[list[Any], Callable[[], Exception]]:
        """The conditional update of a `ReplaceAnswer` (for `DynamoAudited._transact_sealed`, which drops it when its
        condition fails: never a refusal), and the refusal it would be."""
        answer = r.answer
        action = {
            "Update": {
                "TableName": self._table,
                "Key": {"pk": s(f"W#{answer.wallet_id}"), "sk": s(f"I#{answer.key}")},
                "UpdateExpression": "SET #rs = :r",
                "ConditionExpression": "attribute_exists(pk) AND request_hash = :h AND #st = :c AND #rs = :was",
                "ExpressionAttributeNames": {"#st": "status", "#rs": "response"},
                "ExpressionAttributeValues": {
                    ":h": b(answer.request_hash),
                    ":c": s(IdempotencyStatus.COMPLETED),
                    ":was": b(r.previous),
                    ":r": b(answer.response),
                },
            }
        }
        return [action], lambda: Conflict(
            f"idempotency key {answer.key!r} does not hold the answer to replace for this request"
        )

    def _claimed_update(
        self,
        wallet_id: str,
        key: str,
        request_hash: bytes,
        status: IdempotencyStatus = IdempotencyStatus.IN_PROGRESS,
        *,
        also: str = "",
        **kwargs: Any,
    ) -> None:
        """Update (``UpdateExpression`` given: a resend after a lost response is this write, see `_write_once`) or
        delete an idempotency record of ``request_hash`` in ``status`` (and, with ``also``, that condition too)."""
        condition = "attribute_exists(pk) AND request_hash = :h AND #st = :was" + (f" AND {also}" if also else "")
        values = {":h": b(request_hash), ":was": s(status), **kwargs.pop("values", {})}
        names = {"#st": "status"}
        write_id = new_write_id()
        if "UpdateExpression" in kwargs:
            names["#rs"] = "response"  # a reserved word in expressions
            kwargs["UpdateExpression"] += f", {WRITE_ID} = :w"
            values[":w"] = s(write_id)
        kwargs.update(
            TableName=self._table,
            Key={"pk": s(f"W#{wallet_id}"), "sk": s(f"I#{key}")},
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        try:
            if "UpdateExpression" in kwargs:
                self._write_once("update_item", kwargs, write_id)
            else:
                with translate():
                    self._client.delete_item(**kwargs)
        except ConditionFailed as exc:
            if self._get(f"W#{wallet_id}", f"I#{key}") is None:
                raise NotFound(f"idempotency key {key!r} not found") from exc
            state = status.value.replace("_", " ")
            raise Conflict(f"idempotency key {key!r} is not {state} for this request") from exc

    def complete_idempotent(self, wallet_id: str, key: str, request_hash: bytes, response: bytes) -> None:
        v.check_stored_answer(wallet_id, key, request_hash, response)
        self._claimed_update(
            wallet_id,
            key,
            request_hash,
            UpdateExpression="SET #st = :c, #rs = :r",
            values={":c": s(IdempotencyStatus.COMPLETED), ":r": b(response)},
        )

    def replace_idempotent(
        self, wallet_id: str, key: str, request_hash: bytes, response: bytes, *, previous: bytes | None = None
    ) -> None:
        v.check_stored_answer(wallet_id, key, request_hash, response)
        values = {":r": b(response)}
        if previous is not None:
            values[":prev"] = b(v.check_blob("previous", previous))
        try:
            self._claimed_update(
                wallet_id,
                key,
                request_hash,
                IdempotencyStatus.COMPLETED,
                also="" if previous is None else "#rs = :prev",
                UpdateExpression="SET #rs = :r",
                values=values,
            )
        except Conflict as exc:
            existing = self._get(f"W#{wallet_id}", f"I#{key}")
            if previous is None or existing is None or get_b(existing, "request_hash") != request_hash:
                raise
            if get_s(existing, "status") != IdempotencyStatus.COMPLETED:
                raise
            raise Conflict(f"idempotency key {key!r} does not hold the answer to replace for this request") from exc

    def abandon_idempotent(self, wallet_id: str, key: str, request_hash: bytes) -> None:
        v.check_idempotency_key(key)
        v.check_digest("request_hash", request_hash)
        self._claimed_update(wallet_id, key, request_hash)
