"""`escalation_answers.agent_answer`: the agent's key, digest and exact 202 are read from an approval's stored request
only when it names them all consistently; anything else (a field missing or of another type, a digest that is not
its request's, a key the store could not hold) names no key, so the owner's decision replaces nothing."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from parent_proxy.escalation_answers import agent_answer, pending_body, stored_response
from parent_proxy.services import canonical

REQUEST = {"transaction": "AQID", "idempotency_key": "k-1", "lookup_tables": [], "submit": False}
DECISION = {"verdict": "escalate", "policy_sequence": 1, "reasons": []}


def stored(**changes: Any) -> dict[str, Any]:
    """A stored request as `sign_outcomes.escalate` writes it, with ``changes`` (None: the field is left out)."""
    value: dict[str, Any] = {
        "request": REQUEST, "decision": DECISION, "request_id": "r1", "token_id": "t1",
        "request_sha256": digest_of(REQUEST),
    }  # fmt: skip
    value.update(changes)
    return {k: v for k, v in value.items() if v is not None}


def test_a_stored_request_names_the_key_the_digest_and_the_202() -> None:
    agent = agent_answer("a1", stored())
    assert agent is not None
    assert (agent.key, agent.digest) == ("agent:k-1", hashlib.sha256(canonical(REQUEST)).digest())
    assert agent.pending == stored_response(202, pending_body("r1", "a1", DECISION))
    assert agent.pending == canonical(
        {"status_code": 202, "body": {"status": "pending_approval", "request_id": "r1", "approval_id": "a1",
                                      "decision": DECISION}}
    )  # fmt: skip


def digest_of(request: object) -> str:
    return hashlib.sha256(canonical(request)).hexdigest()


NO_KEY = {**REQUEST, "idempotency_key": None}
SPACED = {**REQUEST, "idempotency_key": "with space"}


@pytest.mark.parametrize(
    "changes",
    [
        {"request_sha256": None},
        {"request_id": None},
        {"decision": None},
        {"request": None},
        {"request": NO_KEY, "request_sha256": digest_of(NO_KEY)},
        {"request": [1, 2], "request_sha256": digest_of([1, 2])},
        {"request_sha256": "not hex"},
        {"request_sha256": "00" * 32},  # not its request's digest
        {"request_sha256": digest_of(REQUEST)[:40]},
        {"request": {**REQUEST, "submit": True}},  # the digest is the other request's
        {"request_id": 7},
        {"decision": "escalate"},
        {"request": SPACED, "request_sha256": digest_of(SPACED)},  # no key the store could hold
    ],
    ids=repr,
)
def test_anything_else_names_no_key(changes: dict[str, Any]) -> None:
    assert agent_answer("a1", stored(**changes)) is None
