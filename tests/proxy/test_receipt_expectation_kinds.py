"""Each receipt expectation refuses a receipt of another kind with `ReceiptError`, whatever the receipt states.

`parent_proxy.receipt_checks.ReceiptExpectation`: ``check`` compares a decoded receipt with the answer or record and
raises `ReceiptError` when they disagree. A decision receipt, an order receipt and an agent-key receipt share field
names (``wallet_id``, ``time_ms``), so an expectation that compared another kind's receipt field by field could read
it as its own; each refuses it first. Found by mutation testing: nothing called ``Expected.check`` with another kind,
so its guard could be removed unnoticed (the comparison then fails with AttributeError, which no caller translates).
"""

from __future__ import annotations

import time

import pytest

from enclave_app.errors import ReceiptError
from enclave_app.order_receipts import OrderReceipt
from enclave_app.receipts import AgentKeyReceipt, Receipt, reasons_digest
from parent_proxy.agent_key_receipts import ExpectedAgentKey
from parent_proxy.order_receipts import ExpectedOrder
from parent_proxy.receipt_checks import Expected, ReceiptExpectation

WALLET = "w1"
HASH = bytes(range(32))
AGENT, NEW_AGENT, OWNER = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
NOW = time.time()
TIME_MS = int(NOW * 1000)

RECEIPTS: dict[str, object] = {
    "decision": Receipt("message", WALLET, 1, None, HASH, "allow", False, reasons_digest([]), TIME_MS, 1),
    "order": OrderReceipt("freeze", WALLET, 1, HASH, True, None, TIME_MS, 1),
    "agent-key": AgentKeyReceipt("agent_key_switch", WALLET, AGENT, NEW_AGENT, OWNER, None, TIME_MS),
}
EXPECTATIONS: dict[str, ReceiptExpectation[object]] = {
    "decision": Expected("message", WALLET, HASH, signed=True, decision=None),
    "order": ExpectedOrder("freeze", WALLET, 1, HASH),
    "agent-key": ExpectedAgentKey("agent_key_switch", WALLET, AGENT, NEW_AGENT, OWNER),
}


@pytest.mark.parametrize("kind", sorted(EXPECTATIONS))
def test_an_expectation_accepts_its_own_kind_stating_what_it_expects(kind: str) -> None:
    EXPECTATIONS[kind].check(RECEIPTS[kind], at=NOW)


@pytest.mark.parametrize(
    ("expected", "stated"), [(e, s) for e in sorted(EXPECTATIONS) for s in sorted(RECEIPTS) if e != s]
)
def test_an_expectation_refuses_a_receipt_of_another_kind(expected: str, stated: str) -> None:
    with pytest.raises(ReceiptError, match=r"^not an? .*receipt$"):
        EXPECTATIONS[expected].check(RECEIPTS[stated], at=NOW)
