"""A withheld signature's cause, looked for in the audit log (step 3 of `parent_proxy.audit_receipts`).

The proxy withholds a signature the enclave made (``transaction.withheld``, ``message.withheld``:
`parent_proxy.withheld`) only when the record of that signature is refused by `StillUnfrozen`: since the request
read the wallet (not frozen, owner-order sequence Q), the wallet was frozen or its owner-order sequence moved. Every
store write that does either is written in one transaction with one of these records of the wallet:

- ``wallet.frozen``, ``wallet.unfrozen``: an owner's freeze or unfreeze order (``api_owner``: the frozen state and
  the order sequence);
- ``transaction.frozen``, ``message.frozen``: the proxy's own decision to freeze (a policy freeze trigger, such as
  a burst of denials: ``sign_flow``, ``message_checks``);
- ``transaction.refused`` holding a receipt whose decision's verdict is ``freeze``: the enclave's decision to
  freeze (``sign_outcomes.record_refusal``; step 2 has checked that decision against the receipt's verdict).

So an honest log holds one of them, of the same wallet, before the withheld record (the freeze was written before
the record it refused) and after the request read the wallet. The log does not record when a request read the
wallet (an agent's request writes no record before its answer), and the records of a freeze hold no enclave
counter (the freeze is stored first; in a fleet, the enclave that signed hears of it only at its next relay), so
the counter order of the session cannot place them. What the log can place is time: the receipt's time is the
enclave's signed clock, which the parent cannot move, and the request read the wallet before it, by at most the
time a live request takes (`IDEMPOTENCY_STALE_SECONDS`: an unanswered request older than that is taken for dead)
give or take the clock skew between the enclave and the parent that wrote the freeze
(`RECEIPT_TIME_TOLERANCE_SECONDS`). A freeze recorded earlier than that window explains nothing: the request would
have read the wallet frozen (or with the new sequence) and never reached the enclave.

A withheld record without such a record before it is a signature the enclave made and the parent kept out of any
answer, for no reason the log shows: what a parent that handed the signature out would write instead of leaving a
counter gap. It fails as a gap does, unless gaps are allowed (``--allow-gaps``: a parent that may leave gaps could
hide the signature as one anyway); then it is counted (`ReceiptsReport.withheld_unexplained`). What this cannot
show: a parent that writes a freeze record of its own near the signature passes, but then its log states a freeze
the owner can check against the orders they signed and the freezes they were told of.
"""

from __future__ import annotations

import json

from parent_proxy.receipt_checks import RECEIPT_TIME_TOLERANCE_SECONDS
from parent_proxy.store.model import AuditRecord
from parent_proxy.store.validation import IDEMPOTENCY_STALE_SECONDS

FREEZE_EVENTS = frozenset({"wallet.frozen", "wallet.unfrozen", "transaction.frozen", "message.frozen"})
"""Records written with a change of the wallet's frozen state or owner-order sequence (besides an enclave freeze
decision: `moves_freeze`)."""
WITHHELD_CAUSE_WINDOW_SECONDS = IDEMPOTENCY_STALE_SECONDS + RECEIPT_TIME_TOLERANCE_SECONDS
"""How long before a withheld signature's receipt time the freeze that caused it may be recorded (the module text):
the longest a live request runs, plus the clock skew allowed between the enclave's clock and a parent's."""


def moves_freeze(record: AuditRecord) -> bool:
    """Whether ``record`` (already checked, receipt included) is written with a freeze, an unfreeze or an owner
    order of its wallet."""
    if record.wallet_id is None:
        return False
    if record.event_type in FREEZE_EVENTS:
        return True
    if record.event_type != "transaction.refused" or record.receipt is None:
        return False
    payload = json.loads(record.payload)
    decision = payload.get("decision") if isinstance(payload, dict) else None
    return isinstance(decision, dict) and decision.get("verdict") == "freeze"


class FreezeTimes:
    """The latest time at which each wallet's freeze state moved, over the records seen so far (in log order)."""

    def __init__(self) -> None:
        self._latest: dict[str, float] = {}

    def note(self, record: AuditRecord) -> None:
        """Take ``record`` in, after it was checked."""
        if moves_freeze(record) and record.wallet_id is not None:
            self._latest[record.wallet_id] = max(record.time, self._latest.get(record.wallet_id, record.time))

    def unexplained(self, record: AuditRecord, receipt_time: float) -> str | None:
        """Why the withheld ``record`` (its receipt dated ``receipt_time``, seconds) has no cause before it in the
        log, or None when a freeze of its wallet was recorded before it within the window."""
        wallet_id = record.wallet_id or ""
        latest = self._latest.get(wallet_id)
        if latest is not None and latest >= receipt_time - WITHHELD_CAUSE_WINDOW_SECONDS:
            return None
        if latest is None:
            why = f"no freeze, unfreeze or owner order of wallet {wallet_id} recorded before it"
        else:
            why = (f"the last freeze, unfreeze or owner order of wallet {wallet_id} before it was recorded more than "
                   f"{WITHHELD_CAUSE_WINDOW_SECONDS} s before its receipt")  # fmt: skip
        return (f"{record.event_type} record without a cause: {why} (a signature the enclave made, withheld for no "
                "reason the log shows; refused as a counter gap is, unless gaps are allowed)")  # fmt: skip
