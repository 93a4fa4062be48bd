"""The sign flow's step 6 when the store cannot say whether its transaction was written (`StoreOutcomeUnknown`:
DynamoDB only, a ``TransactWriteItems`` whose answer never came, also after its resends under the same token, and
whose audit record could not settle it, see `parent_proxy.store.dynamodb_outbox`).

Giving back blindly is wrong both ways: if the transaction was applied, the log and the webhook say
``transaction.signed`` while the agent is told 503, and a freed idempotency key lets the retry reserve the amounts
a second time (a double count that can refuse it); if it was not, nothing may stay held for nothing. So the flow
finds out first, with a write that settles the question for good (a fence), rather than a read that a late
transaction could contradict:

1. a reservation: release it. The transaction's commit requires it pending, so once it is released the
   transaction can never be applied: give everything back. Refused because the reservation is committed: the
   transaction was applied (nothing else commits it): answer the signature.
2. no reservation, but the answer is stored in the transaction: free the key. Its completion requires the claim
   in progress, so the same holds. Refused because the key holds a completed answer: applied.
3. nothing to settle it with, or the fence itself fails: nothing is given back. The reservation stays counted
   until its window passes, the key claimed until it is stale (15 minutes: a retry is 409 until then), an owner
   approval approved until `parent_proxy.stalled_approvals` reopens it (its reopening is the fence then: it is
   refused if the transaction, which ends the approval's signing, was applied); the answer is 503. Fail-closed:
   nothing counted twice, nothing recorded lost.
"""

from __future__ import annotations

import logging

from parent_proxy import give_back
from parent_proxy.clock import read_clock
from parent_proxy.errors import Conflict, NotFound
from parent_proxy.services import Services
from parent_proxy.sign_parts import Prepared
from parent_proxy.store.model import ReservationStatus

logger = logging.getLogger(__name__)


def finish_applied(s: Services, prepared: Prepared, *, answer_stored: bool) -> bool:
    """`Store.finish_signing` raised `StoreOutcomeUnknown`: True if its transaction was applied (the signature is
    recorded and may be handed out). False otherwise: not applied (everything given back, as for any store
    failure) or it cannot be told (everything left held). ``answer_stored``: the transaction held the idempotent
    answer (an agent request without ``submit``)."""
    store, wallet_id, request_id = s.store, prepared.wallet.wallet_id, prepared.request_id
    try:
        if prepared.reservation is not None:  # 1.
            try:
                store.release(prepared.reservation)
            except Conflict:
                if store.reservation_status(wallet_id, request_id) is not ReservationStatus.COMMITTED:
                    raise
                logger.warning("request %s: the store's answer was lost, but its commit was written", request_id)
                return True
            give_back.give_back(s, prepared)  # the release again (a no-op), the key, an approval
            return False
        if answer_stored:  # 2.
            try:
                store.abandon_idempotent(wallet_id, prepared.key, prepared.digest)
            except NotFound:
                pass  # gone: never completed (a completed answer is kept for a day), and now never will be
            except Conflict:
                if store.lookup_idempotent(wallet_id, prepared.key, prepared.digest, read_clock(s.clock)) is None:
                    raise
                logger.warning("request %s: the store's answer was lost, but its answer was written", request_id)
                return True
            return False
    except Exception:
        logger.exception("request %s: whether the store wrote its commit is unknown; everything stays held", request_id)
        return False
    logger.error("request %s: whether the store wrote its record is unknown; everything stays held", request_id)
    return False  # 3.
