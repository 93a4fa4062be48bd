"""`DynamoStore`: the `Store` adapter for a fleet of parent instances sharing one DynamoDB table.

Reservations are atomic by optimistic concurrency: read the wallet's ``ledger_version``, read the wallet's
reservations (strongly consistent), check the caps, then one ``TransactWriteItems`` puts the reservation (only if
its id is new) and bumps the version (only if it is still the one read). A concurrent reservation that committed
in between changes the version, so this transaction is cancelled and the whole check is redone; two reservations
can therefore never both pass a check that only one of them could. Commits and releases do not bump the version:
neither can raise a total. The signing path's two store calls are each one ``TransactWriteItems``
(`begin_signing`: idempotency claim + request timestamp + the reservation above; `finish_signing`: commit +
audit head and record + outbox item + idempotency answer + a condition check of the wallet item (not frozen
since the request read it), by the loop of `dynamodb_audited`, which also writes `apply_audited`). This module
holds tokens, wallets and those two; idempotency records are in `dynamodb_idempotency`, reservations and rate
events in `dynamodb_limits`, approvals in `dynamodb_approvals`, webhooks and the audit log in `dynamodb_outbox`
(how the outbox is claimed in `dynamodb_outbox_heads`), agent-key rotation in `dynamodb_agent_keys`,
wallet-creation nonces in `dynamodb_creation_nonces`, the table layout in `dynamodb_base`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext

from parent_proxy.errors import (
    Conflict,
    NonceUsed,
    NotFound,
    StalePolicySequence,
    StoreOutcomeUnknown,
)
from parent_proxy.store import creation_nonces, tokens
from parent_proxy.store import dynamodb_creation_nonces as nonce_items
from parent_proxy.store import dynamodb_sealed_keys as sealed_keys
from parent_proxy.store import validation as v
from parent_proxy.store.dynamodb_attributes import (
    get_b,
    get_i,
    get_opt_b,
    get_opt_s,
    get_s,
    last_order_of,
    n,
    order_sequence_of,
    s,
)
from parent_proxy.store.dynamodb_audited import Part
from parent_proxy.store.dynamodb_base import WRITE_ID, ConditionFailed, create_table, new_write_id, translate
from parent_proxy.store.dynamodb_owner_changes import NEW_ITEM, DynamoOwnerChanges, token_item, wallet_item
from parent_proxy.store.model import (
    AuditRecord,
    IdempotentAnswer,
    IssuedToken,
    OutboxItem,
    Reservation,
    ReservationStatus,
    SigningClaim,
    Wallet,
)
from parent_proxy.store.protocol import AuditSealer, Limits
from parent_proxy.store.sealed_keys import SealedKeyReplacement, check_replacements
from parent_proxy.store.state_changes import (
    FinishApproval,
    InstallPolicy,
    ReplaceAnswer,
    SetFrozen,
    StillUnfrozen,
    StoreToken,
)
from parent_proxy.store.validation_changes import check_change, check_replaced, check_unfrozen
from parent_proxy.store.validation_outbox import check_outbox_item

__all__ = ["DynamoStore", "create_table"]


class DynamoStore(DynamoOwnerChanges):
    """DynamoDB-backed `Store` over one table (see `dynamodb_base` for its layout)."""

    # -- reads together -------------------------------------------------------------------------------------
    def reading(self) -> AbstractContextManager[None]:
        """`Store.reading`: each read is its own request here (no read transactions), as outside the block."""
        return nullcontext()

    # -- agent tokens ---------------------------------------------------------------------------------------
    def issue_token(self, wallet_id: str, now: float) -> IssuedToken:
        v.check_id("wallet_id", wallet_id)
        now = v.check_time("now", now)
        self._require_wallet(wallet_id)
        token_id, token, secret_hash = tokens.new_token()
        write_id = new_write_id()
        item = token_item(StoreToken(token_id, wallet_id, secret_hash, now), write_id)
        new = {"TableName": self._table, "Item": item, "ConditionExpression": NEW_ITEM}
        self._write_once("put_item", new, write_id)
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

    def token_wallet(self, token_id: str) -> str:
        v.check_id("token_id", token_id)
        item = self._get(f"T#{token_id}", "TOKEN")
        if item is None:
            raise NotFound(f"token {token_id} not found")
        return get_s(item, "wallet_id")

    # -- wallets --------------------------------------------------------------------------------------------
    def create_wallet(self, wallet: Wallet) -> None:
        w = v.check_wallet(wallet)
        write_id = new_write_id()
        try:
            new = {"TableName": self._table, "Item": wallet_item(w, write_id), "ConditionExpression": NEW_ITEM}
            self._write_once("put_item", new, write_id)
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
            order_sequence_of(i),
            last_order_of(i),
        )

    def set_frozen(self, wallet_id: str, frozen: bool, reason: str | None) -> None:
        v.check_id("wallet_id", wallet_id)
        v.check_frozen(frozen, reason)
        action = self._set_frozen_action(SetFrozen(wallet_id, frozen, reason))
        try:
            with translate():
                self._client.update_item(**action["Update"])
        except ConditionFailed as exc:
            raise NotFound(f"wallet {wallet_id} not found") from exc

    def install_policy(self, wallet_id: str, document: bytes, sequence: int) -> None:
        v.check_id("wallet_id", wallet_id)
        v.check_blob("document", document)
        v.check_count("sequence", sequence, minimum=1)
        write_id = new_write_id()
        update = self._policy_update(InstallPolicy(wallet_id, document, sequence), write_id)
        try:
            self._write_once("update_item", update, write_id)
        except ConditionFailed as exc:
            if exc.item is None:
                raise NotFound(f"wallet {wallet_id} not found") from exc
            raise StalePolicySequence(wallet_id, sequence, get_i(exc.item, "policy_sequence")) from exc

    # -- wallet-creation nonces ----------------------------------------------------------------------------
    def claim_creation_nonce(self, owner: bytes, nonce: str, now: float, held_until: float) -> None:
        """One conditional put (`dynamodb_creation_nonces`); a resend of it after a lost answer is this claim."""
        owner, nonce, now, held_until = creation_nonces.check_claim(owner, nonce, now, held_until)
        write_id = new_write_id()
        put = nonce_items.claim_put(self._table, owner, nonce, now=now, held_until=held_until, write_id=write_id)
        try:
            self._write_once("put_item", put, write_id)
        except ConditionFailed as exc:
            raise NonceUsed("creation nonce already used") from exc

    # -- the signing path in two transactions ---------------------------------------------------------------
    def begin_signing(
        self,
        wallet_id: str,
        key: str,
        request_hash: bytes,
        *,
        request_id: str,
        amounts: Mapping[str, int],
        limits: Limits,
        now: float,
    ) -> SigningClaim:
        wanted, caps, now = v.check_signing_start(
            wallet_id, key, request_hash, request_id=request_id, amounts=amounts, limits=limits, now=now
        )
        replay = self._existing(wallet_id, key, request_hash, now, claimed=False)
        if replay is not None:
            return SigningClaim(replay=replay, reservation=None)
        claim = self._claim_action(wallet_id, key, request_hash, now)
        extra = [claim, self._event_action("request", wallet_id, now)]
        try:
            if wanted:
                reservation = self._reserve_with(wallet_id, request_id, wanted, caps, now=now, extra=extra)
                return SigningClaim(replay=None, reservation=reservation)
            self._require_wallet(wallet_id)
            try:
                self._transact(extra)
            except StoreOutcomeUnknown:  # settled by the claim's write id
                if not self._written(f"W#{wallet_id}", f"I#{key}", get_s(claim["Put"]["Item"], WRITE_ID)):
                    raise
            return SigningClaim(replay=None, reservation=None)
        except ConditionFailed:  # the claim lost a race with the same key
            return SigningClaim(
                replay=self._existing(wallet_id, key, request_hash, now, claimed=True), reservation=None
            )

    def finish_signing(
        self,
        reservation: Reservation | None,
        audit: AuditSealer,
        webhook: OutboxItem | None,
        answer: IdempotentAnswer | None,
        approval: FinishApproval | None = None,
        *,
        replaced: ReplaceAnswer | None = None,
        unfrozen: StillUnfrozen | None = None,
    ) -> AuditRecord:
        parts: list[Part] = []
        if unfrozen is not None:  # a ConditionCheck of the wallet item, in this transaction
            parts.append(self._still_unfrozen_part(check_unfrozen(unfrozen)))
        optional = [] if replaced is None else [self._replace_answer_part(check_replaced(replaced, answer))]
        if approval is not None:
            check_change(approval)
            parts.append(self._finish_part(approval))
            parts.extend(self._pending_count_parts([approval]))  # its place in the count, if it kept one
        if reservation is not None:
            committed = ReservationStatus.COMMITTED
            commit = self._transition_action(reservation, committed)
            parts.append(([commit], lambda: self._transition_conflict(reservation, committed)))
        if webhook is not None:
            parts.append(self._enqueue_part(check_outbox_item(webhook)))
        if answer is not None:
            parts.append(self._complete_part(v.check_answer(answer)))
        return self._transact_sealed(parts, audit, optional)

    # -- re-sealed agent keys -------------------------------------------------------------------------------
    def replace_sealed_keys(self, replacements: Sequence[SealedKeyReplacement], audit: AuditSealer) -> AuditRecord:
        """One transaction: each wallet's conditional update and the audit record (`dynamodb_sealed_keys`)."""
        checked = check_replacements(replacements)
        sealed_keys.check_count(checked)
        for r in checked:
            self._require_wallet(r.wallet_id)  # wallets are never deleted, so a prior read suffices
        return self._transact_sealed([sealed_keys.replacement_part(self._table, r) for r in checked], audit)
