"""An order answer must agree with the order the proxy sent (`parent_proxy.order_receipts`, steps 1 and 2; docs/api.md
"Order receipts": "about the order sent (wallet, purpose, sequence, document hash; the answer's own fields must
agree)"). An answer whose own fields name another wallet, or another policy sequence or hash, is refused even when
its receipt, signed by the attested session key, is about the order sent: no acknowledgement, ``order.failed``.
What the receipt must state is read from the bytes sent, and bytes that hold no document with a sequence in range
are refused (`ExpectedOrder.of_sent`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from enclave_app.errors import ReceiptError
from parent_proxy.order_receipts import ExpectedOrder
from policies.orders import MAX_SEQUENCE
from policies.signing import document_sha256
from tests.proxy.harness_calls import order, send
from tests.proxy.order_answers import assert_order_failed, freeze_answer, install_answer
from tests.proxy.stand_in import StandIn


def test_a_freeze_answer_naming_another_wallet_is_no_acknowledgement(stand_in: StandIn) -> None:
    h = stand_in.h
    stand_in.answer(freeze_answer(answer={"wallet_id": "another-wallet"}))
    answer = send(h, order(h, 1))
    assert answer["frozen"] is True and h.store.get_wallet(h.wallet_id).frozen  # the proxy holds the order anyway
    assert answer["enclave_acknowledged"] is False and answer["receipt"] is None, answer
    assert_order_failed(h, "freeze", 1)


def test_a_freeze_answer_naming_its_own_wallet_is_acknowledged(stand_in: StandIn) -> None:
    """The control of the test above: the same stand-in, naming the wallet it was sent."""
    h = stand_in.h
    stand_in.answer(freeze_answer(answer={"wallet_id": h.wallet_id}))
    answer = send(h, order(h, 1))
    assert answer["enclave_acknowledged"] is True and answer["receipt"] is not None, answer
    assert h.audit_events()[-1] == "wallet.enclave_frozen"


@pytest.mark.parametrize(
    ("shift", "policy_hash"), [(1, None), (0, bytes(32))], ids=["another sequence", "another policy hash"]
)
def test_an_install_answer_stating_another_policy_is_no_installation(
    stand_in: StandIn, shift: int, policy_hash: bytes | None
) -> None:
    h = stand_in.h
    stand_in.answer(install_answer(sequence_shift=shift, policy_hash=policy_hash))
    answer = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": h.policy(2)}).json()
    assert answer["enclave_installed"] is False and answer["receipt"] is None, answer
    assert h.store.get_wallet(h.wallet_id).policy_sequence == 2  # the proxy holds the policy anyway
    assert_order_failed(h, "policy", 2)


def test_an_install_answer_stating_the_policy_sent_is_an_installation(stand_in: StandIn) -> None:
    """The control of the test above."""
    h = stand_in.h
    stand_in.answer(install_answer())
    answer = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": h.policy(2)}).json()
    assert answer["enclave_installed"] is True and answer["receipt"] is not None, answer
    assert h.audit_events()[-1] == "policy.enclave_installed"


def _envelope(document: Any) -> bytes:
    return json.dumps({"document": document, "signature": "x"}, separators=(",", ":")).encode()


@pytest.mark.parametrize("sequence", [0, MAX_SEQUENCE])
def test_the_order_sent_is_read_for_its_sequence_and_document_hash(sequence: int) -> None:
    document = {"sequence": sequence, "wallet_id": "w1"}
    expected = ExpectedOrder.of_sent("freeze", "w1", _envelope(document))
    assert expected == ExpectedOrder("freeze", "w1", sequence, document_sha256(document))


@pytest.mark.parametrize(
    "sent",
    [
        _envelope(None), _envelope([1]), _envelope({"wallet_id": "w1"}), _envelope({"sequence": "1"}),
        _envelope({"sequence": True}), _envelope({"sequence": -1}), _envelope({"sequence": MAX_SEQUENCE + 1}),
        b"not json", b'{"document": {"sequence": 1}, "document": {"sequence": 2}}',
    ],
    ids=["no document", "a list", "no sequence", "a text sequence", "a boolean sequence", "negative",
         "beyond the largest sequence", "not JSON", "repeated keys"],
)  # fmt: skip
def test_an_order_sent_without_a_document_and_sequence_is_refused(sent: bytes) -> None:
    with pytest.raises(ReceiptError):
        ExpectedOrder.of_sent("freeze", "w1", sent)
