"""A stand-in enclave's answers to the orders the proxy sends (freeze, policy install), each with an order receipt
about the order sent unless told otherwise, and the ``order.failed`` record a refused answer leaves."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from enclave_app.order_receipts import OrderReceipt
from enclave_app.protocol import (
    FreezeRequest,
    InstallPolicyRequest,
    LoadWalletRequest,
    PolicyInstalledResponse,
    Request,
    WalletFrozenResponse,
    WalletResponse,
)
from enclave_app.receipts import SessionKey
from policies.signing import document_sha256
from tests.proxy.api_harness import ForRequest, Harness
from tests.proxy.harness_calls import records


def _now_ms() -> int:
    return int(time.time() * 1000)


def _order_receipt(session: SessionKey, request: FreezeRequest, **changes: Any) -> tuple[bytes, bytes]:
    document = json.loads(request.order)["document"]
    stated = OrderReceipt("freeze", request.wallet_id, document["sequence"], document_sha256(document), True, None,
                          _now_ms(), session.next_counter())  # fmt: skip
    return session.sign_order(dataclasses.replace(stated, **changes))


def freeze_answer(
    *, signer: SessionKey | None = None, answer: dict[str, Any] | None = None, receipt: bool = True, **changes: Any
) -> Callable[[SessionKey], ForRequest]:
    """A stand-in's answer to the freeze it is sent: the enclave's own (the control), or with its receipt signed by
    ``signer``, stating ``changes``, its answer fields changed by ``answer``, or (``receipt`` false) without one."""

    def make(session: SessionKey) -> ForRequest:
        def reply(request: Request) -> WalletFrozenResponse:
            assert isinstance(request, FreezeRequest)
            sequence = json.loads(request.order)["document"]["sequence"]
            encoded, signature = _order_receipt(signer or session, request, **changes) if receipt else (None, None)
            fields = {"wallet_id": request.wallet_id, "frozen": True, "order_sequence": sequence, **(answer or {})}
            return WalletFrozenResponse(**fields, receipt=encoded, receipt_signature=signature)

        return ForRequest(reply)

    return make


def install_answer(
    *, signer: SessionKey | None = None, sequence_shift: int = 0, policy_hash: bytes | None = None
) -> Callable[[SessionKey], ForRequest]:
    """A stand-in that loads the wallet (already held) and installs the policy it is sent, answering with a receipt
    about the policy sent, signed by ``signer`` (None: the stand-in's own session key), and an answer stating the
    policy's sequence plus ``sequence_shift`` and ``policy_hash`` (None: the policy's own)."""

    def make(session: SessionKey) -> ForRequest:
        def reply(request: Request) -> WalletResponse | PolicyInstalledResponse:
            if isinstance(request, LoadWalletRequest):
                return WalletResponse(wallet_id=request.wallet_id, agent_public_key=request.agent_public_key,
                                      sealed_blob=None)  # fmt: skip
            assert isinstance(request, InstallPolicyRequest)
            document = json.loads(request.signed_policy)["document"]
            digest = document_sha256(document)
            stated = OrderReceipt("policy", request.wallet_id, document["sequence"], digest, False, digest, _now_ms(),
                                  session.next_counter())  # fmt: skip
            encoded, signature = (signer or session).sign_order(stated)
            return PolicyInstalledResponse(
                wallet_id=request.wallet_id, sequence=document["sequence"] + sequence_shift,
                policy_hash=policy_hash or digest, receipt=encoded, receipt_signature=signature,
            )  # fmt: skip

        return ForRequest(reply)

    return make


def assert_order_failed(h: Harness, purpose: str, sequence: int) -> None:
    """The last record is the ``order.failed`` of the ``purpose`` order of ``sequence`` (the enclave unavailable)."""
    events = h.audit_events()
    assert events[-1] == "order.failed", events
    failed = json.loads(records(h)[-1].payload)
    assert (failed["purpose"], failed["sequence"], failed["error"]) == (purpose, sequence, "enclave_unavailable")
