"""Step 6's optional broadcast (``submit: true``): the signed transaction goes once through the chain adapter.

A failure to broadcast is part of the answer (``submission.submitted`` false, with the adapter's error), never
retried and never a reason to withhold the signature, which was already recorded. The signed answer is stored under
the idempotency key with the signature (`sign_flow`), its submission `UNRECORDED`; the answer with the broadcast's
outcome then replaces it, so a replay tells the same story. If that replacement is lost (the process stopped
during the broadcast, the store failed), a replay still answers the signature, never signs again: ``submitted``
false with `UNRECORDED`'s error, and the agent may send the signed transaction itself (the chain takes a
transaction once, so a second send of one that landed changes nothing). An owner approval's broadcast does the same
with its agent's answer, if the signing's record replaced the agent's 202 (`parent_proxy.escalation_answers`).
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from parent_proxy.chain import ChainError
from parent_proxy.errors import Conflict, NotFound, ProxyError
from parent_proxy.services import Services, canonical
from parent_proxy.sign_parts import Answer, Prepared

logger = logging.getLogger(__name__)

UNRECORDED: dict[str, Any] = {
    "submitted": False,
    "error": "whether it was broadcast was not recorded; the signed transaction may be sent again",
}


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
    """Audit the broadcast's outcome, and put it in the answer stored under the agent's key: the request's own, or
    for an owner approval, its agent's (whose 202 the signing's record replaced, `escalation_answers`). Only the
    answer stored with the signature (`UNRECORDED`) is replaced, nothing else."""
    wallet_id = prepared.wallet.wallet_id
    s.audit_safely(
        "transaction.submitted", {"request_id": prepared.request_id, **body["submission"]}, wallet_id=wallet_id
    )
    owner = prepared.approval
    if prepared.idempotent:
        key, digest = prepared.key, prepared.digest
    elif owner is not None and owner.agent is not None:
        key, digest = owner.agent.key, owner.agent.digest
    else:
        return
    response = canonical({"status_code": 200, "body": body})
    previous = canonical({"status_code": 200, "body": {**body, "submission": UNRECORDED}})
    try:
        s.store.replace_idempotent(wallet_id, key, digest, response, previous=previous)
    except (Conflict, NotFound) as exc:
        if prepared.idempotent:
            logger.exception("the submission outcome of request %s could not be stored", prepared.request_id)
        else:  # the agent's key no longer held the approval's answer (a day passed, say): nothing to tell there
            logger.info("the submission outcome of request %s is not its agent's answer: %s", prepared.request_id, exc)
    except ProxyError:
        logger.exception("the submission outcome of request %s could not be stored", prepared.request_id)
