"""A ``submit: true`` answer is stored under its idempotency key with the signature, in the signing transaction
(`SignFlow.finish`), before the broadcast; the broadcast's outcome then replaces it (`Store.replace_idempotent`,
`parent_proxy.submission`). So a process that stops during the broadcast, or a store that loses the replacement,
leaves a key that replays the signature: never a key left in progress that, once stale, has the same transaction
signed and counted a second time (the store review of the nineteenth session: before, two ``transaction.signed``
records and the spend counted twice)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from solders.message import Message
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from parent_proxy.store.model import IdempotencyRecord, IdempotencyStatus, IdempotentAnswer
from parent_proxy.submission import UNRECORDED
from tests.proxy.api_harness import Harness, provision, running_harness, svm
from tests.support.policies import MERCHANT

AMOUNT = 300_000_000


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    for harness in running_harness(tmp_path):
        provision(harness)
        svm(harness).airdrop(harness.agent, 2 * 10**9)
        yield harness


def payment(h: Harness) -> bytes:
    ix = transfer(TransferParams(from_pubkey=h.agent, to_pubkey=MERCHANT, lamports=AMOUNT))
    return bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], h.agent, svm(h).latest_blockhash())))


def test_a_lost_submission_outcome_replays_the_signature_and_never_signs_again(h: Harness) -> None:
    tx = payment(h)
    h.store.failing = {"replace_idempotent"}  # the broadcast's outcome cannot be stored
    first = h.sign(tx, key="k1", submit=True)
    assert first.status_code == 200 and first.json()["submission"]["submitted"] is True
    h.store.failing = set()
    spent = h.spent()
    for offset in (0.0, 901.0):  # at once, and after an in-progress claim would have gone stale
        h.clock.offset = offset
        again = h.sign(tx, key="k1", submit=True)
        assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == {**first.json(), "submission": UNRECORDED}
    assert h.audit_events().count("transaction.signed") == 1
    assert h.audit_events().count("transaction.submitted") == 1
    assert spent == AMOUNT  # counted once
    assert [event for event in h.audit_events() if event == "transaction.refused"] == []


def test_during_the_broadcast_the_key_already_holds_the_signed_answer(h: Harness) -> None:
    """What a process killed during the broadcast leaves behind: the completed answer with the signature."""
    tx = payment(h)
    stored: list[IdempotentAnswer] = []
    during: list[IdempotencyRecord | None] = []
    finish_signing, submit = h.store.finish_signing, h.services.chain.submit

    def finish(reservation: Any, audit: Any, webhook: Any, answer: IdempotentAnswer | None, **more: Any) -> Any:
        assert answer is not None
        stored.append(answer)
        return finish_signing(reservation, audit, webhook, answer, **more)

    async def broadcast(signed_transaction: bytes) -> str:
        (answer,) = stored
        during.append(h.store.lookup_idempotent(h.wallet_id, answer.key, answer.request_hash, time.time()))
        return await submit(signed_transaction)

    h.store.finish_signing = finish
    h.services.chain.submit = broadcast  # type: ignore[method-assign]
    signed = h.sign(tx, key="k1", submit=True)
    assert signed.status_code == 200 and signed.json()["submission"]["submitted"] is True
    (record,) = during
    assert record is not None and record.status is IdempotencyStatus.COMPLETED and record.response is not None
    assert json.loads(record.response)["body"] == {**signed.json(), "submission": UNRECORDED}
    replay = h.sign(tx, key="k1", submit=True)  # afterwards: the outcome replaced it
    assert replay.json() == signed.json()
