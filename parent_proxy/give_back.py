"""What a signing request gives back when it fails before any signature left the proxy (DESIGN.md section 12:
nothing lost on failure).

Each step is best effort and runs in a worker thread: what cannot be given back stays held, never lost (a
reservation stays pending and counted until its window passes, an idempotency claim frees itself after 15 minutes,
an approval stays approved until `parent_proxy.stalled_approvals` reopens it), and the log says which.
"""

from __future__ import annotations

import logging

from parent_proxy.errors import AlreadyDecided, NotFound
from parent_proxy.services import Services
from parent_proxy.sign_parts import OwnerApproval, Prepared
from parent_proxy.store.state_changes import ReopenApproval

logger = logging.getLogger(__name__)


def failed(s: Services, prepared: Prepared, error: str, *, reason: str | None = None) -> None:
    """Nothing was signed (or nobody got the signature): audit the failure (``error``: its code,
    `parent_proxy.enclave_sessions.failure_code`; with ``reason`` when given), give everything back."""
    payload = {"request_id": prepared.request_id, "stage": "enclave", "error": error}
    if reason is not None:
        payload["reason"] = reason
    s.audit_safely("transaction.failed", payload, wallet_id=prepared.wallet.wallet_id)
    give_back(s, prepared)


def give_back(s: Services, prepared: Prepared) -> None:
    """Release the reservation, free the idempotency key, and return an owner approval to pending (the owner may
    approve it again; a later signature is the same one, Ed25519 being deterministic)."""
    release_quietly(s, prepared)
    if prepared.idempotent:
        abandon(s, prepared.wallet.wallet_id, prepared.key, prepared.digest)
    if prepared.approval is not None:
        reopen_quietly(s, prepared.request_id, prepared.wallet.wallet_id, prepared.approval)


def release_quietly(s: Services, prepared: Prepared) -> None:
    if prepared.reservation is None:
        return
    try:
        s.store.release(prepared.reservation)
    except Exception:
        logger.exception("reservation %s could not be released", prepared.request_id)


def abandon(s: Services, wallet_id: str, key: str, digest: bytes) -> None:
    """Free an idempotency claim so that the caller may retry with the same key."""
    try:
        s.store.abandon_idempotent(wallet_id, key, digest)
    except Exception:
        logger.exception("idempotency claim for wallet %s could not be abandoned", wallet_id)


def reopen_quietly(s: Services, request_id: str, wallet_id: str, approval: OwnerApproval) -> None:
    """Return an owner approval to pending after a failure of its signing ``request_id`` (`reopen`); if the store
    cannot, it stays approved (logged) until `parent_proxy.stalled_approvals` reopens it."""
    reopen(s, wallet_id, approval.approval_id, approval.envelope, request_id)


def reopen(s: Services, wallet_id: str, approval_id: str, decision: bytes, signing: str, **extra: str) -> bool:
    """Return the approval ``approval_id``, approved by ``decision`` for the signing ``signing``, to pending, with its
    ``approval.reopened`` record and webhook (``approval_id``, ``request_id``: the signing, and ``extra``) in the same
    store transaction: the owner learns it waits again. False, logged, if it was not: refused once that signing
    finished or the approval was reopened already (by another process, say), or the store failed."""
    change = ReopenApproval(approval_id, decision, signing)
    payload = {"approval_id": approval_id, "request_id": signing, **extra}
    try:
        webhook = s.webhook_item(wallet_id, "approval.reopened", payload)
        s.audit.append("approval.reopened", payload, wallet_id=wallet_id, webhook=webhook, changes=[change])
    except (AlreadyDecided, NotFound):  # its signing ended, or it was reopened already: nothing to give back
        logger.warning("approval %s: not returned to pending, no longer approved for this signing", approval_id)
        return False
    except Exception:
        logger.exception("approval %s could not be returned to pending", approval_id)
        return False
    return True
