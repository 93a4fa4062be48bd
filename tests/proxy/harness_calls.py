"""Calls and look-ups on a running API harness: an off-chain message to sign, an escalated request and its owner
approval, an owner's freeze or unfreeze order, audit records (those holding decision receipts), reservations, the
webhook events queued."""

from __future__ import annotations

import base64
import time
from typing import Any

from parent_proxy.order_receipts import ORDER_RECEIPT_EVENTS
from parent_proxy.sign_parts import message_hash
from parent_proxy.store.model import AuditRecord, ReservationStatus
from policies.orders import approval_document, freeze_document
from policies.signing import sign_document
from tests.proxy.api_harness import LAMPORTS_PER_SOL, Harness
from tests.support.offchain_messages import offchain_message
from tests.support.policies import MERCHANT

ESCALATING = 2 * LAMPORTS_PER_SOL  # above the example policy's automatic 1 SOL, below its 10 SOL ceiling


def records(h: Harness) -> list[AuditRecord]:
    return list(h.store.audit_records(0, 10_000))


def decision_receipts(h: Harness) -> list[AuditRecord]:
    """The records holding a decision receipt (not an order receipt: provisioning's policy install records one)."""
    return [r for r in records(h) if r.receipt is not None and r.event_type not in ORDER_RECEIPT_EVENTS]


def pending_reservations(h: Harness) -> list[str]:
    rows = h.store.inner._conn().execute("SELECT status FROM reservations").fetchall()
    return [r[0] for r in rows if r[0] == ReservationStatus.PENDING]


def configure_webhook(h: Harness) -> None:
    """Give the harness's wallet a webhook (nothing listens there: the tests read the outbox, `queued`)."""
    secret = base64.b64encode(b"s" * 32).decode()
    answer = h.owner_call(
        "PUT", f"/v1/wallets/{h.wallet_id}/webhook", {"url": "https://owner.example/hook", "secret": secret}
    )
    assert answer.status_code == 204, answer.text


def queued(h: Harness) -> list[str]:
    """The event types in the outbox, oldest first."""
    rows = h.store.inner._conn().execute("SELECT event_type FROM outbox ORDER BY created_at").fetchall()
    return [r[0] for r in rows]


def escalate(h: Harness) -> tuple[str, dict[str, Any], str]:
    """An escalated request: (approval id, the owner's approval body, the approve path)."""
    tx = h.transfer(ESCALATING, MERCHANT)
    response = h.sign(tx)
    assert response.status_code == 202, response.text
    approval_id = response.json()["approval_id"]
    document = approval_document(h.wallet_id, message_hash(tx), int(time.time()) + 600)
    envelope = sign_document("approval", document, h.owner)
    return approval_id, {"envelope": envelope}, f"/v1/wallets/{h.wallet_id}/approvals/{approval_id}/approve"


def freeze_order(h: Harness, sequence: int, *, freeze: bool = True) -> dict[str, Any]:
    """The body of an owner freeze (or unfreeze) order of ``sequence``, valid for ten minutes."""
    return {"envelope": order(h, sequence, "freeze" if freeze else "unfreeze")}


def sign_message(h: Harness, text: str = "login") -> Any:
    return h.client.post(
        f"/v1/wallets/{h.wallet_id}/messages/sign",
        json={"message": base64.b64encode(offchain_message(h.agent, text)).decode()},
        headers={"Authorization": f"Bearer {h.token}"},
    )


def order(h: Harness, sequence: int, purpose: str = "freeze", *, lifetime: int = 600) -> dict[str, Any]:
    """The owner's signed ``purpose`` (freeze or unfreeze) order of the harness's wallet: its envelope."""
    return sign_document(purpose, freeze_document(h.wallet_id, sequence, int(time.time()) + lifetime), h.owner)


def send(h: Harness, envelope: dict[str, Any], purpose: str = "freeze") -> dict[str, Any]:
    """The order ``envelope`` sent to ``POST /v1/wallets/{id}/{purpose}``: the answer (200 asserted)."""
    answer = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/{purpose}", {"envelope": envelope})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body
