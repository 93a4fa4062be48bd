"""`parent_proxy.agent_receipts.verify_sign_answer` (``waiaas agent verify-receipt``; docs/api.md, "Agents:
verifying a sign answer") refuses an answer whose parts do not read as a failed check (`ReceiptCheckError`, never
another exception): no receipt object, a receipt that is not base64 or a signature that is not base58, a signed
transaction that is not base64 or its signature not base58."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from parent_proxy.agent_receipts import AgentExpectation, ExpectedPolicy, ReceiptCheckError, verify_sign_answer
from tests.proxy.agent_answers import AgentWorld


def _check(world: AgentWorld, answer: dict[str, Any], transaction: bytes) -> None:
    expected = AgentExpectation(
        "w1", bytes(world.agent_public_key), transaction, ExpectedPolicy(world.policy_hash(), 1)
    )
    verify_sign_answer(answer, expected, world.session.public_key)


def test_a_whole_answer_verifies(tmp_path: Path) -> None:
    """The control: the answer the refusals below change."""
    world = AgentWorld(tmp_path)
    mine = world.transaction()
    _check(world, world.answer(mine), mine)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"receipt": None}, "carries no receipt"),
        ({"receipt": "a text"}, "carries no receipt"),
        ({"receipt.receipt": "not base64!"}, "receipt is not base64"),
        ({"receipt.signature": "0OIl"}, "receipt is not base64, or its signature not base58"),
        ({"receipt.signature": None}, "receipt is not base64, or its signature not base58"),
        ({"signed_transaction": "not base64!"}, "signed_transaction is not base64"),
        ({"signature": "0OIl"}, "signed_transaction is not base64, or its signature not base58"),
        ({"signed_transaction": None}, "signed_transaction is not base64"),
    ],
)
def test_an_answer_part_that_does_not_read_is_a_failed_check(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    world = AgentWorld(tmp_path)
    mine = world.transaction()
    answer = world.answer(mine)
    for name, value in change.items():
        if name.startswith("receipt."):
            answer["receipt"][name.removeprefix("receipt.")] = value
        else:
            answer[name] = value
    with pytest.raises(ReceiptCheckError, match=message):
        _check(world, answer, mine)
