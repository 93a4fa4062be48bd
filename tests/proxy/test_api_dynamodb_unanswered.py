"""The sign flow and the owner's approval on a DynamoDB store (moto) whose answers to one transaction are lost,
injected at the botocore seam (`RequestTokens`; the API, the enclave and the store are real).

Before: step 6's transaction (commit, ``transaction.signed``, webhook, stored answer) or step 3's (the approval
and ``approval.approved``) applied with its answer lost was a plain 503: the sign flow gave everything back (the
agent's retry under the same key reserved the amounts again) and the approval stayed approved with nothing
signed. Now the store resends it under its token and settles an unknown outcome by its audit record; when even
that cannot tell, the sign flow settles it with a fence (`parent_proxy.outcome_unknown`) or keeps everything held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from parent_proxy.__main__ import prune_store
from parent_proxy.stalled_approvals import STALLED_APPROVAL_SECONDS
from parent_proxy.store import dynamodb_base
from parent_proxy.store.dynamodb_base import UNANSWERED_RESENDS
from tests.proxy.api_harness import Harness, pending_approval_ids, provision, running_harness
from tests.proxy.conftest import moto_dynamo_store
from tests.proxy.harness_calls import escalate
from tests.proxy.hooked_client import Hook, Hooked, RequestTokens, connection_lost
from tests.support.policies import MERCHANT

AMOUNT = 1_000_000


@pytest.fixture
def live(tmp_path: Path, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Harness, Hooked]]:
    monkeypatch.setattr(dynamodb_base, "UNANSWERED_BACKOFF_SECONDS", 0.0)
    with moto_dynamo_store(Hooked) as (store, client):
        for h in running_harness(tmp_path, store=store):
            provision(h)
            warm_up = h.sign(h.transfer(AMOUNT, MERCHANT))  # the enclave session's record, first
            assert warm_up.status_code == 200, warm_up.text
            yield h, client


class Faults:
    """`RequestTokens` for the one transaction that writes the audit event ``event`` (the others go through), and,
    once it was sent: the next read of an audit record fails (``record_unreadable``), the next update of a
    reservation fails (``release_fails``)."""

    def __init__(self, client: Hooked, event: str, tokens: RequestTokens, *, record_unreadable: bool = False,
                 release_fails: bool = False) -> None:  # fmt: skip
        self.tokens = tokens
        self.unreadable = {"R#"} if record_unreadable else set()
        self.failing_updates = {"RT#"} if release_fails else set()

        def transact(real: Hook, **kwargs: Any) -> Any:
            puts = [a["Put"]["Item"] for a in kwargs["TransactItems"] if "Put" in a]
            if any(item.get("event_type") == {"S": event} for item in puts):
                return tokens(real, **kwargs)
            return real(**kwargs)

        client.hooks.update(
            transact_write_items=transact,
            get_item=self._once(self.unreadable, "pk", "AUDIT"),
            update_item=self._once(self.failing_updates),
        )

    def _once(self, prefixes: set[str], pk: str = "", pk_value: str = "") -> Callable[..., Any]:
        def hook(real: Hook, **kwargs: Any) -> Any:
            sk = kwargs["Key"]["sk"]["S"]
            right_pk = not pk or kwargs["Key"][pk]["S"] == pk_value
            match = next((p for p in prefixes if sk.startswith(p)), None)
            if self.tokens.sends and right_pk and match is not None:
                prefixes.discard(match)
                raise connection_lost()
            return real(**kwargs)

        return hook


def sends_of_one_token(tokens: RequestTokens) -> bool:
    return len(tokens.sends) == 1 + UNANSWERED_RESENDS and len(set(tokens.sends)) == 1


def test_a_signing_whose_commit_answers_are_lost_is_signed_once(live: tuple[Harness, Hooked]) -> None:
    """The review's repro: ``submit`` (the outcome stored after the broadcast), the commit applied, every answer
    lost. Before: 503, the key freed, and the retry reserved the amounts a second time."""
    h, client = live
    spent = h.spent()
    tx = h.transfer(AMOUNT, MERCHANT)
    faults = Faults(client, "transaction.signed", RequestTokens(["applied"], then="lost"))
    signed = h.sign(tx, key="k1", submit=True)
    client.hooks.clear()
    assert signed.status_code == 200, signed.text
    assert sends_of_one_token(faults.tokens)
    assert h.spent() - spent == spent  # counted once, as the warm-up was
    assert h.audit_events().count("transaction.signed") == 2  # the warm-up's and this one's
    again = h.sign(tx, key="k1", submit=True)
    assert again.status_code == 200 and again.json() == signed.json()
    assert h.spent() - spent == spent


def test_a_commit_that_never_arrived_is_given_back_after_its_resends(live: tuple[Harness, Hooked]) -> None:
    h, client = live
    spent = h.spent()
    tx = h.transfer(AMOUNT, MERCHANT)
    faults = Faults(client, "transaction.signed", RequestTokens(then="lost"))
    failed = h.sign(tx, key="k1")
    client.hooks.clear()
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "store_unavailable"
    assert "signed_transaction" not in failed.text and sends_of_one_token(faults.tokens)
    assert h.spent() == spent and h.audit_events().count("transaction.signed") == 1
    again = h.sign(tx, key="k1")  # the key is free again
    assert again.status_code == 200, again.text
    assert h.spent() - spent == spent


def test_a_commit_the_log_cannot_show_is_settled_by_the_reservation(live: tuple[Harness, Hooked]) -> None:
    """Applied, every answer lost, and the store cannot read its record back: the sign flow releases the
    reservation, which is refused as committed: the transaction was applied, so the signature is answered."""
    h, client = live
    spent = h.spent()
    tx = h.transfer(AMOUNT, MERCHANT)
    faults = Faults(client, "transaction.signed", RequestTokens(["applied"], then="lost"), record_unreadable=True)
    signed = h.sign(tx, key="k1")
    client.hooks.clear()
    assert signed.status_code == 200, signed.text
    assert not faults.unreadable  # the store's own check failed: the sign flow settled it
    assert h.spent() - spent == spent and h.audit_events().count("transaction.signed") == 2
    again = h.sign(tx, key="k1")  # its answer was stored in that transaction
    assert again.status_code == 200 and again.json() == signed.json()


def test_when_nothing_can_tell_everything_stays_held(live: tuple[Harness, Hooked]) -> None:
    """Never arrived, but neither the log nor the release can say so: nothing is given back. The reservation stays
    counted and the key claimed (409 until it is stale), so nothing can be counted twice."""
    h, client = live
    spent = h.spent()
    tx = h.transfer(AMOUNT, MERCHANT)
    tokens = RequestTokens(then="lost")
    faults = Faults(client, "transaction.signed", tokens, record_unreadable=True, release_fails=True)
    failed = h.sign(tx, key="k1")
    client.hooks.clear()
    assert failed.status_code == 503 and "signed_transaction" not in failed.text
    assert not faults.unreadable and not faults.failing_updates
    assert h.spent() - spent == spent and h.audit_events().count("transaction.signed") == 1
    blocked = h.sign(tx, key="k1")
    assert blocked.status_code == 409 and blocked.json()["error"]["code"] == "idempotency_in_progress"


@pytest.mark.parametrize("record_unreadable", [False, True], ids=["settled by its record", "read back"])
def test_an_approval_whose_answers_are_lost_goes_on_to_sign(
    live: tuple[Harness, Hooked], record_unreadable: bool
) -> None:
    """The review's second repro: step 3 applied, every answer lost. Before: 503, the approval approved with
    nothing reserved or signed, a second approve 409. Now the store finds its record, or (the record unreadable)
    the approval reads as approved by this decision: the approval goes on."""
    h, client = live
    _approval_id, body, path = escalate(h)
    tokens = RequestTokens(["applied"], then="lost")
    faults = Faults(client, "approval.approved", tokens, record_unreadable=record_unreadable)
    signed = h.owner_call("POST", path, body)
    client.hooks.clear()
    assert signed.status_code == 200, signed.text
    assert not faults.unreadable
    assert signed.json()["transaction"]["status"] == "signed" and sends_of_one_token(tokens)
    assert h.audit_events().count("approval.approved") == 1 and "approval.reopened" not in h.audit_events()


def test_an_approval_that_never_arrived_stays_pending(live: tuple[Harness, Hooked]) -> None:
    h, client = live
    approval_id, body, path = escalate(h)
    faults = Faults(client, "approval.approved", RequestTokens(then="lost"))
    failed = h.owner_call("POST", path, body)
    client.hooks.clear()
    assert failed.status_code == 503 and sends_of_one_token(faults.tokens)
    assert h.store.get_approval(approval_id).status == "pending"
    signed = h.owner_call("POST", path, body)
    assert signed.status_code == 200, signed.text


def test_a_decision_applied_after_its_503_is_reopened_by_the_sweep(live: tuple[Harness, Hooked]) -> None:
    """What docs/api.md (Durability) leaves: a decision transaction neither answered nor visible when the store
    looked (503, the approval read pending), which DynamoDB applies after all. It carries the approval's signing
    and its ``SIGNING`` mark in the same transaction (`dynamodb_approvals`), so the approval is not stuck approved
    with nothing signed: the stalled-approval sweep reopens it, and the owner's approval then signs it once."""
    h, client = live
    approval_id, body, path = escalate(h)
    late: list[dict[str, Any]] = []

    def lost(real: Hook, **kwargs: Any) -> Any:
        puts = [a["Put"]["Item"] for a in kwargs["TransactItems"] if "Put" in a]
        if any(item.get("event_type") == {"S": "approval.approved"} for item in puts):
            late.append(kwargs)
            raise connection_lost()
        return real(**kwargs)

    client.hooks.update(transact_write_items=lost)
    failed = h.owner_call("POST", path, body)
    client.hooks.clear()
    assert failed.status_code == 503 and h.store.get_approval(approval_id).status == "pending"
    client.transact_write_items(**late[0])  # the first send, applied late
    assert h.store.get_approval(approval_id).status == "approved"
    assert h.owner_call("POST", path, body).status_code == 409 and pending_approval_ids(h) == []
    h.clock.offset = STALLED_APPROVAL_SECONDS + 1
    try:
        prune_store(h.services)
    finally:
        h.clock.offset = 0.0
    assert pending_approval_ids(h) == [approval_id] and h.audit_events()[-1] == "approval.reopened"
    signed = h.owner_call("POST", path, body)
    assert signed.status_code == 200, signed.text
    assert h.audit_events().count("transaction.signed") == 2  # the warm-up's and this one
