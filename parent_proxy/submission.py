"""Step 6's optional broadcast (``submit: true``): the signed transaction goes once through the chain adapter.

A failure to broadcast is part of the answer (``submission.submitted`` false, with the adapter's error), never
retried and never a reason to withhold the signature, which was already recorded. The answer with its submission
outcome is then stored under the idempotency key, so a replay tells the same story.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from parent_proxy.chain import ChainError
from parent_proxy.errors import ProxyError
from parent_proxy.services import Services, canonical
from parent_proxy.sign_parts import Answer, Prepared

logger = logging.getLogger(__name__)


async def submit(s: Services, prepared: Prepared, answer: Answer) -> Answer:
    """Broadcast once through the chain adapter; record and store the outcome; the answer with it."""
    signed = base64.b64decode(answer.body["signed_transaction"])
    try:
        signature = await s.chain.submit(signed)
        outcome: dict[str, Any] = {"submitted": True, "signature": signature}
    except ChainError as exc:
        outcome = {"submitted": False, "error": str(exc)[:300]}
    body = {**answer.body, "submission": outcome}
    await s.run(_record, s, prepared, body)
    return Answer(200, body)


def _record(s: Services, prepared: Prepared, body: dict[str, Any]) -> None:
    s.audit_safely(
        "transaction.submitted", {"request_id": prepared.request_id, **body["submission"]},
        wallet_id=prepared.wallet.wallet_id,
    )  # fmt: skip
    if not prepared.idempotent:
        return
    try:
        response = canonical({"status_code": 200, "body": body})
        s.store.complete_idempotent(prepared.wallet.wallet_id, prepared.key, prepared.digest, response)
    except ProxyError:
        logger.exception("idempotency record for request %s could not be completed", prepared.request_id)
