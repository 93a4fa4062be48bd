"""`EnclaveSessions.record_checked`, the one check every enclave receipt passes before it is recorded: its callers
get only `ApiError` (a ``record`` that fails is translated there, not by each caller), ``on_failure`` gets the code
the failure record names, ``record`` gets the receipt as it verified; and an owner order's receipt is verified once
(it was three times: the check, the record, the owner's copy)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from enclave_app import receipts
from enclave_app.errors import ReceiptError
from enclave_app.order_receipts import OrderReceipt
from enclave_app.protocol import EnclaveState, StatusResponse, WalletFrozenResponse
from enclave_app.receipts import ORDER_RECEIPT_DOMAIN
from parent_proxy.api_errors import ApiError
from parent_proxy.enclave_sessions import Checked
from parent_proxy.errors import StoreUnavailable
from parent_proxy.order_receipts import ExpectedOrder, receipt_fields
from parent_proxy.relay_orders import AppliedOrder
from policies.ed25519 import verify_ed25519
from tests.proxy.api_harness import Harness, provision, running_harness
from tests.proxy.harness_calls import order, send
from tests.proxy.stand_in import StandIn

DOCUMENT_HASH = b"\x07" * 32


def _expected(h: Harness, sequence: int = 5) -> ExpectedOrder:
    return ExpectedOrder("freeze", h.wallet_id, sequence, DOCUMENT_HASH)


def _signed(stand_in: StandIn, sequence: int = 5) -> tuple[bytes, bytes]:
    """A freeze order receipt the stand-in enclave's session key signed, now."""
    stated = OrderReceipt("freeze", stand_in.h.wallet_id, sequence, DOCUMENT_HASH, True, None,
                          int(time.time() * 1000), stand_in.session.next_counter())  # fmt: skip
    return stand_in.session.sign_order(stated)


def _record_checked(stand_in: StandIn, signed: tuple[bytes, bytes], record: Any, failures: list[str]) -> Any:
    """``record_checked`` of ``signed`` against `_expected`, on the harness's services, from the test's thread."""
    h = stand_in.h
    sessions = h.services.sessions
    call = sessions.record_checked(h.services, *signed, _expected(h), record=record, on_failure=failures.append)
    return stand_in.loop.run(call)


@pytest.fixture
def attested(stand_in: StandIn) -> StandIn:
    """The stand-in enclave on the socket: the next receipt it signed makes the proxy attest it and adopt its key."""
    stand_in.answer(
        lambda session: StatusResponse(state=EnclaveState.READY, wallets=1, session_public_key=session.public_key)
    )
    return stand_in


def test_record_gets_the_receipt_as_it_verified_and_the_key(attested: StandIn) -> None:
    failures: list[str] = []
    checked = _record_checked(attested, _signed(attested), lambda checked: checked, failures)
    assert isinstance(checked, Checked) and isinstance(checked.receipt, OrderReceipt)
    assert (checked.receipt.sequence, checked.session_public_key) == (5, attested.session.public_key)
    assert failures == [] and attested.h.services.sessions.current == attested.session.public_key


def test_a_record_that_fails_comes_out_translated(attested: StandIn) -> None:
    """The store failing under ``record`` is 503 ``store_unavailable`` from ``record_checked`` itself (its four
    callers translated it each); ``record`` handles its own failures, so ``on_failure`` is not called."""
    failures: list[str] = []

    def record(_: object) -> None:
        raise StoreUnavailable("down")

    with pytest.raises(ApiError, match="state store is unavailable") as raised:
        _record_checked(attested, _signed(attested), record, failures)
    assert raised.value.code == "store_unavailable" and isinstance(raised.value.__cause__, StoreUnavailable)
    assert failures == []


def test_a_refused_receipt_names_its_code_and_keeps_its_cause(attested: StandIn) -> None:
    failures: list[str] = []
    recorded: list[object] = []
    with pytest.raises(ApiError, match="contradicts its answer") as raised:
        _record_checked(attested, _signed(attested, sequence=6), recorded.append, failures)
    assert raised.value.code == "enclave_unavailable" and isinstance(raised.value.__cause__, ReceiptError)
    assert (failures, recorded) == (["enclave_unavailable"], [])


def test_an_attestation_that_fails_names_its_code(stand_in: StandIn) -> None:
    """No enclave on the socket: the receipt cannot be checked under a fresh attestation (the stand-in key is not the
    one in force), 503, and ``on_failure`` names the code."""
    failures: list[str] = []
    with pytest.raises(ApiError, match="enclave") as raised:
        _record_checked(stand_in, _signed(stand_in), lambda _: None, failures)
    assert raised.value.code == "enclave_unavailable" and failures == ["enclave_unavailable"]
    assert raised.value.__cause__ is not raised.value  # the relay's cause kept (it was made its own cause)


def test_the_owners_copy_names_the_checking_key_only_while_it_is_in_force(attested: StandIn) -> None:
    """`receipt_fields` compares the key the receipt was checked under with the one in force (no verification)."""
    h, signed = attested.h, _signed(attested)
    _record_checked(attested, signed, lambda _: None, [])  # the stand-in's key is now the one in force
    answer = WalletFrozenResponse(wallet_id=h.wallet_id, frozen=True, order_sequence=5, receipt=signed[0],
                                  receipt_signature=signed[1])  # fmt: skip
    named = receipt_fields(h.services, AppliedOrder(answer, attested.session.public_key))
    assert named["session_public_key"] is not None and named["receipt"] is not None
    assert receipt_fields(h.services, AppliedOrder(answer, None))["session_public_key"] is None  # never checked
    h.services.sessions.forget()  # the key no longer in force: the receipt is shown, the key is not
    shown = receipt_fields(h.services, AppliedOrder(answer, attested.session.public_key))
    assert shown["receipt"] == named["receipt"] and shown["session_public_key"] is None


# -- verifications per order ----------------------------------------------------------------------------------------


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    for harness in running_harness(tmp_path, attestation="none"):
        provision(harness)  # the session key is adopted here (the provisioning's policy install)
        yield harness


def test_an_order_receipt_is_verified_once_per_order(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spy on the receipts' Ed25519 check counts the order receipts' verifications: one per order (three
    before), and the answer still names the key in force."""
    counted: list[bytes] = []
    real = verify_ed25519

    def spy(key: bytes, signature: bytes, message: bytes) -> bool:
        if message.startswith(ORDER_RECEIPT_DOMAIN):
            counted.append(message)
        return real(key, signature, message)

    monkeypatch.setattr(receipts, "verify_ed25519", spy)
    key = h.services.sessions.current
    assert key is not None
    answers = [
        send(h, order(h, 1)),
        send(h, order(h, 2, "unfreeze"), "unfreeze"),
        h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": h.policy(2)}).json(),
    ]
    assert len(counted) == 3  # one per order
    for answer in answers:
        assert answer["receipt"] is not None and answer["session_public_key"] is not None, answer
