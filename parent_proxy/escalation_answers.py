"""The agent's answer to an escalated request, from its 202 to the owner's decision (DESIGN.md section 4, tier
ESCALATE).

The 202 ``pending_approval`` of an escalated request is stored under the agent's idempotency key, in the transaction
that creates the approval (`sign_outcomes.escalate`). The transaction that writes the owner's decision replaces it
(`ReplaceAnswer`), so the agent's retry with the same key and body (a replay, which it may send at any time) tells
the outcome:

- approved and signed: the 200 signed answer, as the owner's ``transaction`` (`signed_answer.record_signed`; with
  ``submit``, its ``submission`` `submission.UNRECORDED` until the broadcast's outcome replaces it, as for a direct
  signature, `submission`);
- approved, then refused by the enclave's authoritative check: that 403 (`sign_outcomes.record_refusal`);
- rejected: 403 ``rejected_by_owner`` (`rejection`, `approvals.ApprovalFlow.reject`).

The signed answer is also kept with the approval itself (`FinishApproval.answer`), for good: the same transaction
escalated again under any key, on any day, is answered with it (`sign_outcomes.join_signed`).

An approval that goes back to pending (a failure before any signature left the proxy, a stalled signing) leaves the
202 as it is; so does a decision the proxy refuses before anything is decided (the policy now denies it, a frozen
wallet). Approvals never expire on their own (the `ApprovalStatus.EXPIRED` status is not written by the proxy).

The replacement is conditional and never a refusal: only a key that still holds this approval's very 202 for this
request's digest is replaced (the approval's stored request names the key, the digest, the request id and the
decision the 202 is made of: `agent_answer`); a key that holds anything else (expired and taken by a new request,
deleted, another request's) is left alone and the owner's decision is written all the same. A 202 is written once,
before its approval exists, so once it is gone it never comes back, and the answer of a key whose digest differs is
never touched. The key's expiry stays: the outcome replays until a day after the agent's first request
(`validation.IDEMPOTENCY_RETENTION_SECONDS`); a decision after that reaches the agent through the webhook only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from parent_proxy.api_errors import ApiError, Code
from parent_proxy.services import canonical
from parent_proxy.sign_parts import AgentAnswer, agent_key
from parent_proxy.store.model import IdempotentAnswer
from parent_proxy.store.state_changes import ReplaceAnswer
from parent_proxy.store.validation import IDEMPOTENCY_KEY_RE, SHA256_BYTES


def pending_body(request_id: str, approval_id: str, decision: Mapping[str, Any]) -> dict[str, Any]:
    """The body of the 202 an escalated request is answered (and stored under its key) with."""
    return {"status": "pending_approval", "request_id": request_id, "approval_id": approval_id, "decision": decision}


def stored_response(status: int, body: Mapping[str, Any]) -> bytes:
    """What is stored under an idempotency key for an answer (replayed verbatim: `sign_parts.replayed`)."""
    return canonical({"status_code": status, "body": body})


def agent_answer(approval_id: str, stored: Mapping[str, Any]) -> AgentAnswer | None:
    """Where the agent of the approval ``approval_id`` waits, from its stored request (``stored``, as
    `sign_outcomes.escalate` writes it: the agent's ``request``, ``request_sha256``, ``request_id``, ``decision``):
    its key, its digest and the exact 202 stored under them. None (the outcome replaces nothing) unless the stored
    request names them all and its digest is its request's."""
    try:
        request, request_id, decision = stored["request"], stored["request_id"], stored["decision"]
        key, digest = request["idempotency_key"], bytes.fromhex(stored["request_sha256"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (isinstance(key, str) and isinstance(request_id, str) and isinstance(decision, dict)):
        return None
    if not IDEMPOTENCY_KEY_RE.fullmatch(agent_key(key)) or len(digest) != SHA256_BYTES:
        return None  # not a key the store could hold: nothing to replace (never a refusal of the decision)
    if hashlib.sha256(canonical(request)).digest() != digest:  # `SignRequest.digest` of the stored request
        return None
    return AgentAnswer(agent_key(key), digest, stored_response(202, pending_body(request_id, approval_id, decision)))


def settled(wallet_id: str, agent: AgentAnswer, status: int, body: Mapping[str, Any]) -> ReplaceAnswer:
    """The change that replaces the agent's 202 by the answer ``status`` / ``body``, if its key still holds it."""
    answer = IdempotentAnswer(wallet_id, agent.key, agent.digest, stored_response(status, body))
    return ReplaceAnswer(answer, agent.pending)


def rejection(approval_id: str) -> ApiError:
    """The agent's answer once the owner rejected its escalated request."""
    return ApiError(Code.REJECTED_BY_OWNER, f"the owner rejected approval {approval_id}; nothing was signed")
