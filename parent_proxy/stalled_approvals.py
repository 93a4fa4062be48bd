"""Owner approvals whose signing died with its process: found and returned to pending (DESIGN.md section 12).

An owner's approve marks the approval approved for one signing (`parent_proxy.approvals`, step 3: ``signing``, the
request id of that signing, fresh for each decision) and only the transaction that records the signing's outcome
ends it (`FinishApproval`: with the ``transaction.signed`` record in `Store.finish_signing`, or with the
``transaction.refused`` record of an enclave refusal). A failure in the process gives everything back
(`parent_proxy.give_back`); a process killed in between (SIGKILL, OOM, power loss) cannot, and left the approval
approved with nothing reserved or signed: the owner's retry was 409 and the approval no longer listed as pending.

`reopen_stalled` (run with the periodic prune, `parent_proxy.__main__`) reopens every approval still approved for a
signing decided more than `STALLED_APPROVAL_SECONDS` ago, with its ``approval.reopened`` record in the same store
transaction, as a failure's give-back does. Why this never lets one approval be signed twice, also with several
proxy processes and a live but slow signing:

1. a reopening is a conditional write: only an approval approved by this decision *for this signing*
   (`ReopenApproval` with ``signing``), never one whose signing finished (the finish clears ``signing``);
2. a finish is a conditional write too: only an approval still approved for its signing (`FinishApproval`), in the
   same transaction as the signature's record, its reservation's commit and its stored answer, and the signature
   leaves the proxy only after that transaction (`parent_proxy.sign_flow`, step 6);
3. both write the same approval row or item (SQLite: under the write lock; DynamoDB: conditions on that item in a
   transaction), so of one decision's finish and reopening exactly one is applied, whichever comes first;
4. a new approval after a reopening names a new signing (a fresh random id), and a signing id is never reused: the
   first signing, if it was still alive, can no longer finish (its condition names an id the approval will never
   carry again), so its signature is never recorded nor handed out; its reservation is released, its record is
   ``transaction.failed`` (reason `signed_answer.APPROVAL_REOPENED`) and the owner's call 409 -- one decision, at most
   one recorded signing.

So the grace period is not what makes it safe (a clock that jumps ahead only reopens a live signing early, which
then fails with 409 and can be approved again); it keeps a live signing from being cut short: every request ends
well within it (enclave and store timeouts are seconds; an idempotency claim is held for the same 15 minutes,
`validation.IDEMPOTENCY_STALE_SECONDS`). The enclave may have counted a signature of the first signing in its
per-boot counters: a second signature of the same message is the same signature (Ed25519 is deterministic), and the
enclave's count is only ever too high (it refuses sooner, never later).
"""

from __future__ import annotations

import logging
from typing import Final

from parent_proxy import give_back
from parent_proxy.clock import read_clock
from parent_proxy.services import Services
from parent_proxy.store.model import Approval
from parent_proxy.store.validation import IDEMPOTENCY_STALE_SECONDS

logger = logging.getLogger(__name__)

STALLED_APPROVAL_SECONDS: Final = IDEMPOTENCY_STALE_SECONDS
"""How long after its decision an approval's signing must have finished (15 minutes) before it is taken for dead and
reopened: far above any live request (enclave answer at most `Settings.enclave_timeout_seconds`, 120 s at most, a
wallet load `WALLET_REQUEST_TIMEOUT_SECONDS`, store retries well under a second each), and as long as an unanswered
idempotency claim holds its key."""
SWEEP_BATCH: Final = 100
"""Approvals read per `Store.stalled_approvals` call; a sweep goes on while a batch comes back full."""


def reopen_stalled(s: Services) -> int:
    """Reopen every approval whose signing was decided more than `STALLED_APPROVAL_SECONDS` ago and never finished
    (`Store.stalled_approvals`), each with its ``approval.reopened`` record (payload: ``approval_id``, the stalled
    signing's ``request_id``, ``reason`` "stalled"). Returns how many were reopened. One that finished or was reopened
    meanwhile (by another process) is skipped; any other failure of one is logged and the next one tried (it stays
    listed: the next sweep tries it again); a failure to list raises."""
    before = read_clock(s.clock) - STALLED_APPROVAL_SECONDS
    reopened, skipped = 0, set[str]()
    while True:
        listed = s.store.stalled_approvals(before, SWEEP_BATCH)
        todo = [a for a in listed if a.approval_id not in skipped]
        for approval in todo:
            if _reopen(s, approval):
                reopened += 1
            else:
                skipped.add(approval.approval_id)
        if len(listed) < SWEEP_BATCH or not todo:
            return reopened


def _reopen(s: Services, approval: Approval) -> bool:
    """Reopen one stalled approval; False if it was not (finished or reopened meanwhile, or a store failure)."""
    if approval.decision is None or approval.signing is None:
        return False  # not a signing under way (a store lists none such)
    if not give_back.reopen(
        s, approval.wallet_id, approval.approval_id, approval.decision, approval.signing, reason="stalled"
    ):
        return False
    logger.warning("approval %s: its signing %s never finished; pending again", approval.approval_id, approval.signing)
    return True
