"""`DynamoStore.replace_sealed_keys`: the replacements and the audit record in one ``TransactWriteItems``.

Implemented, not refused, although its one caller (``waiaas selfhost reseal``) runs on SQLite: the cloud's blobs
are sealed under KMS, where a key rotation needs no re-seal, but the operation is defined for any store, and a
real conditional write costs no more than a refusal here. Each replacement is an ``Update`` of the wallet item
whose condition is that the item exists and still holds the old blob; the audit record and its head move are
the transaction's last two actions (`DynamoAudited._transact_sealed`). Any failed condition cancels the whole
transaction, so no replacement is written without the others.

Limit: a transaction holds at most `MAX_TRANSACT_ACTIONS` actions, so one call replaces at most
`MAX_REPLACEMENTS` keys; a longer list is refused (`InvalidInput`) before anything is sent, rather than split
into transactions that could leave some wallets replaced and others not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from parent_proxy.errors import Conflict, InvalidInput
from parent_proxy.store.dynamodb_attributes import b, s
from parent_proxy.store.dynamodb_audited import Part
from parent_proxy.store.sealed_keys import SealedKeyReplacement

MAX_TRANSACT_ACTIONS: Final = 100
"""DynamoDB ``TransactWriteItems``: at most 100 actions per transaction (DynamoDB developer guide, quotas)."""
AUDIT_ACTIONS: Final = 2
"""The audit head's move and the record itself (`DynamoOutboxAudit._audit_actions`)."""
MAX_REPLACEMENTS: Final = MAX_TRANSACT_ACTIONS - AUDIT_ACTIONS


def check_count(replacements: Sequence[SealedKeyReplacement]) -> None:
    if len(replacements) > MAX_REPLACEMENTS:
        raise InvalidInput(
            "replacements",
            f"{len(replacements)} sealed keys, more than the {MAX_REPLACEMENTS} one DynamoDB transaction can replace",
        )


def replacement_part(table: str, r: SealedKeyReplacement) -> Part:
    """The conditional update of one wallet's sealed key, and the refusal its failed condition means (the caller
    has read the wallet first: wallets are never deleted, so a failed condition means the blob changed)."""
    action = {
        "Update": {
            "TableName": table,
            "Key": {"pk": s(f"W#{r.wallet_id}"), "sk": s("WALLET")},
            "UpdateExpression": "SET sealed_key = :new",
            "ConditionExpression": "attribute_exists(pk) AND sealed_key = :old",
            "ExpressionAttributeValues": {":new": b(r.new_sealed_key), ":old": b(r.old_sealed_key)},
        }
    }
    return [action], lambda: Conflict(f"wallet {r.wallet_id}: its sealed key is no longer the one read")
