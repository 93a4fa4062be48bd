"""What the API tests of escalations of one transaction share (`test_api_same_message_escalations`,
`test_api_signed_approval_joins`, which run on either store: `provisioned_on_store`): the owner's approval of a
transaction, the ``transaction.escalated`` records, and the owner deciding an approval while a join is under way."""

from __future__ import annotations

import json
import time
from typing import Any

from parent_proxy.sign_parts import message_hash
from policies.orders import approval_document
from policies.signing import sign_document
from tests.proxy.api_harness import Harness, pending_approval_ids
from tests.proxy.harness_calls import records


def approve(h: Harness, approval_id: str, tx: bytes, *, now: float | None = None) -> Any:
    at = int(time.time() if now is None else now)
    envelope = sign_document("approval", approval_document(h.wallet_id, message_hash(tx), at + 600), h.owner)
    path = f"/v1/wallets/{h.wallet_id}/approvals/{approval_id}/approve"
    return h.owner_call("POST", path, {"envelope": envelope}, timestamp=at)


def escalations(h: Harness) -> list[dict[str, Any]]:
    return [json.loads(r.payload) for r in records(h) if r.event_type == "transaction.escalated"]


def decide_during_joins(h: Harness, tx: bytes, decide: str, *, times: int) -> list[str]:
    """For the next ``times`` joins, the owner decides (``decide``: reject or approve, which signs) the approval the
    join was told of between the store naming it and the join's write (`join` reads it in between), and, but for
    the last, another key escalates the transaction again: a new open approval for the next try to meet. The ids of
    the approvals decided, filled in as it happens."""
    decided: list[str] = []

    def owner_decides() -> None:
        h.store.before.pop("get_approval")
        (open_id,) = pending_approval_ids(h) or [escalations(h)[-1]["approval_id"]]
        if decide == "reject":
            answer = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/approvals/{open_id}/reject")
        else:
            answer = approve(h, open_id, tx)
        assert answer.status_code == 200, answer.text
        decided.append(open_id)
        if len(decided) < times:
            assert h.sign(tx, key=f"k-other-{len(decided)}").status_code == 202
            h.store.before["get_approval"] = owner_decides

    h.store.before["get_approval"] = owner_decides
    return decided
