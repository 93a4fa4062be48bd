"""`DynamoStore.claim_creation_nonce`'s item (`creation_nonces`: the layout and the bound).

One item per (owner key, nonce): ``pk`` ``CN#<owner key, hex>``, ``sk`` ``N#<nonce>``, ``held_until`` (exact), the
table's TTL attribute (the first whole second after ``held_until``, so DynamoDB deletes it only once expired) and a
`WRITE_ID`. A claim is one conditional put: the item must be absent or expired at ``now`` (``held_until`` below it;
an expired item that TTL has not removed yet is replaced). Both key attributes are strings like every other item's:
no new attribute definition or index, so the CDK table needs no change. One partition per configured owner key,
holding minutes of that key's creations.
"""

from __future__ import annotations

import math
from typing import Any

from parent_proxy.store.dynamodb_attributes import n, s
from parent_proxy.store.dynamodb_base import TTL_ATTRIBUTE, WRITE_ID

PK_PREFIX = "CN#"
SK_PREFIX = "N#"
HELD_UNTIL = "held_until"


def key(owner: bytes, nonce: str) -> dict[str, Any]:
    return {"pk": s(f"{PK_PREFIX}{owner.hex()}"), "sk": s(f"{SK_PREFIX}{nonce}")}


def claim_put(table: str, owner: bytes, nonce: str, *, now: float, held_until: float, write_id: str) -> dict[str, Any]:
    """The ``put_item`` request of a claim (checked arguments), for `DynamoBase._write_once`."""
    return {
        "TableName": table,
        "Item": {
            **key(owner, nonce),
            HELD_UNTIL: n(held_until),
            TTL_ATTRIBUTE: n(math.floor(held_until) + 1),
            WRITE_ID: s(write_id),
        },
        "ConditionExpression": "attribute_not_exists(pk) OR #held < :now",
        "ExpressionAttributeNames": {"#held": HELD_UNTIL},
        "ExpressionAttributeValues": {":now": n(now)},
    }
