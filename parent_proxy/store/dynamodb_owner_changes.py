"""The owner's changes of `DynamoStore` as transaction parts, so that each is written in one ``TransactWriteItems``
with its audit record (`DynamoAudited.apply_audited`): a new wallet, a policy, an agent token issued or revoked,
the webhook configuration. The items are built here for the direct methods too (`DynamoStore`), but for the
webhook's (`dynamodb_outbox.webhook_item`, beside `DynamoOutboxAudit.set_webhook`)."""

from __future__ import annotations

from typing import Any

from parent_proxy.errors import AlreadyRevoked, Conflict, NotFound, StalePolicySequence
from parent_proxy.store.dynamodb_agent_keys import DynamoAgentKeys
from parent_proxy.store.dynamodb_attributes import b, get_i, get_s, n, opt_b, opt_s, order_attributes, s
from parent_proxy.store.dynamodb_audited import Part
from parent_proxy.store.dynamodb_base import WRITE_ID, new_write_id
from parent_proxy.store.dynamodb_outbox import webhook_item
from parent_proxy.store.model import Wallet
from parent_proxy.store.state_changes import (
    CreateWallet,
    InstallPolicy,
    RevokeToken,
    SetWebhook,
    StateChange,
    StoreToken,
)

NEW_ITEM = "attribute_not_exists(pk)"
UNREVOKED_ITEM = "attribute_exists(pk) AND attribute_not_exists(revoked_at)"
"""An existing token item not revoked yet."""


def wallet_item(w: Wallet, write_id: str) -> dict[str, Any]:
    return {
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
        "order_sequence": n(w.order_sequence),
        **order_attributes(w.last_order),
        "ledger_version": n(0),
        WRITE_ID: s(write_id),
    }


def token_item(t: StoreToken, write_id: str) -> dict[str, Any]:
    return {
        "pk": s(f"T#{t.token_id}"),
        "sk": s("TOKEN"),
        "wallet_id": s(t.wallet_id),
        "secret_hash": b(t.secret_hash),
        "created_at": n(t.created_at),
        WRITE_ID: s(write_id),
    }


class DynamoOwnerChanges(DynamoAgentKeys):
    """`apply_audited` parts of the owner's changes."""

    def _policy_update(self, p: InstallPolicy, write_id: str) -> dict[str, Any]:
        """The conditional update that installs ``p``: only on an existing wallet, only above its sequence."""
        return {
            "TableName": self._table,
            "Key": {"pk": s(f"W#{p.wallet_id}"), "sk": s("WALLET")},
            "UpdateExpression": f"SET policy_document = :d, policy_sequence = :q, {WRITE_ID} = :w",
            "ConditionExpression": "attribute_exists(pk) AND policy_sequence < :q",
            "ExpressionAttributeValues": {":d": b(p.document), ":q": n(p.sequence), ":w": s(write_id)},
        }

    def _change_parts(self, change: StateChange) -> list[Part]:
        match change:
            case CreateWallet(wallet=w):
                put = {
                    "TableName": self._table,
                    "Item": wallet_item(w, new_write_id()),
                    "ConditionExpression": NEW_ITEM,
                }
                return [([{"Put": put}], lambda: Conflict(f"wallet {w.wallet_id} already exists"))]
            case InstallPolicy():
                return [
                    ([{"Update": self._policy_update(change, new_write_id())}], lambda: self._policy_refusal(change))
                ]
            case StoreToken(token_id=token_id, wallet_id=wallet_id):
                self._require_wallet(wallet_id)  # wallets are never deleted, so a prior read suffices
                put = {
                    "TableName": self._table,
                    "Item": token_item(change, new_write_id()),
                    "ConditionExpression": NEW_ITEM,
                }
                return [([{"Put": put}], lambda: Conflict(f"token {token_id} already exists"))]
            case RevokeToken(token_id=token_id, wallet_id=wallet_id, now=now):
                update = {
                    "TableName": self._table,
                    "Key": {"pk": s(f"T#{token_id}"), "sk": s("TOKEN")},
                    "UpdateExpression": "SET revoked_at = :t",
                    "ConditionExpression": f"{UNREVOKED_ITEM} AND wallet_id = :w",
                    "ExpressionAttributeValues": {":t": n(now), ":w": s(wallet_id)},
                }
                return [([{"Update": update}], lambda: self._revoke_refusal(change))]
            case SetWebhook(config=config):
                self._require_wallet(config.wallet_id)  # wallets are never deleted, so a prior read suffices
                put = {"TableName": self._table, "Item": webhook_item(config)}
                return [([{"Put": put}], lambda: NotFound(f"wallet {config.wallet_id} not found"))]
        return super()._change_parts(change)

    def _revoke_refusal(self, r: RevokeToken) -> Exception:
        """Why ``r``'s condition failed: no such token of its wallet, or one revoked already (read after the fact;
        revocations are never undone, so a revoked token stays revoked)."""
        token = self._get(f"T#{r.token_id}", "TOKEN")
        if token is None or get_s(token, "wallet_id") != r.wallet_id:
            return NotFound(f"token {r.token_id} not found")
        return AlreadyRevoked(f"token {r.token_id} is revoked already")

    def _policy_refusal(self, p: InstallPolicy) -> Exception:
        wallet = self._get(f"W#{p.wallet_id}", "WALLET")
        if wallet is None:
            return NotFound(f"wallet {p.wallet_id} not found")
        return StalePolicySequence(p.wallet_id, p.sequence, get_i(wallet, "policy_sequence"))
