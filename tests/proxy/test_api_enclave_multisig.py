"""The enclave's ``WAIAAS_ENCLAVE_REQUIRE_MULTISIG`` as the proxy meets it: a proxy run with
``WAIAAS_REQUIRE_MULTISIG=false`` against an enclave that requires a multisig refuses a policy that declares none
with 422 naming the enclave's setting, before storing anything (`parent_proxy.multisig_onchain.check_install` asks
the enclave's ``status``); a policy stored before the enclave required one is answered 409 ``conflict`` naming the
setting when the enclave refuses it (`parent_proxy.enclave_errors`), never 503 or 500. Real proxy, store, enclave
and embedded chain (the Squads accounts written by the test, as in test_api_policy_multisig.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey

from enclave_app.errors import EnclaveRequestError, EnclaveTimeoutError
from enclave_app.protocol import ErrorCode
from parent_proxy.api_errors import Code
from parent_proxy.enclave_errors import translate_enclave_error
from tests.proxy.api_harness import (
    Harness,
    LoopThread,
    build_harness,
    provision,
    running_harness,
    spy_calls,
    start_enclave,
    stop_enclave,
    svm,
)
from tests.proxy.harness_calls import pending_reservations
from tests.support.policies import MERCHANT
from tests.support.squads_rotation import EXAMPLE_MULTISIG, put_conforming_chain

SETTING = "WAIAAS_ENCLAVE_REQUIRE_MULTISIG=true"


@pytest.fixture
def mismatch(tmp_path: Path) -> Iterator[Harness]:
    """A proxy that does not require a multisig (as on the self-host local chain) and an enclave that does (as the
    enclave image fixes it)."""
    yield from running_harness(tmp_path, enclave_requires_multisig=True)


def create_wallet(h: Harness) -> None:
    """Wallet ``h.wallet_id`` with an agent token, and no policy yet."""
    created = h.owner_call("POST", "/v1/wallets", {"wallet_id": h.wallet_id, "owner_public_key": str(h.owner_pub)})
    assert created.status_code == 201, created.text
    h.agent = Pubkey.from_string(created.json()["agent_public_key"])
    h.token = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/tokens").json()["token"]


def install(h: Harness, sequence: int, **rules: Any) -> Any:
    return h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": h.policy(sequence, **rules)})


def stored(h: Harness) -> tuple[int, bytes | None, list[str]]:
    wallet = h.store.get_wallet(h.wallet_id)
    return wallet.policy_sequence, wallet.policy_document, h.audit_events()


def refused_for_the_enclave(h: Harness, sequence: int) -> None:
    """A policy without a multisig: 422 naming the enclave's setting; nothing stored or recorded, the chain not
    read, no policy sent to the enclave."""
    before = stored(h)
    reads = spy_calls(h.services.chain, "multisig_account")
    sent = spy_calls(h.services.relay, "ensure_wallet")
    refused = install(h, sequence, squads_multisig=None)
    assert refused.status_code == 422, refused.text
    body = refused.json()["error"]
    assert body["code"] == "invalid_request"
    assert "rules.squads_multisig is null" in body["message"] and SETTING in body["message"]
    assert stored(h) == before and reads == [] and sent == []


def test_a_policy_the_enclave_would_refuse_is_refused_before_it_is_stored(mismatch: Harness) -> None:
    h = mismatch
    assert h.services.require_multisig is False
    create_wallet(h)
    refused_for_the_enclave(h, 1)
    put_conforming_chain(svm(h), h.owner_pub, h.agent)  # one that declares a conforming multisig goes in
    installed = install(h, 1, squads_multisig=str(EXAMPLE_MULTISIG))
    assert installed.status_code == 200 and installed.json()["enclave_installed"] is True, installed.text
    refused_for_the_enclave(h, 2)  # and is not replaced by one that declares none
    assert h.store.get_wallet(h.wallet_id).policy_sequence == 1


def test_when_the_enclave_cannot_be_asked_a_policy_without_a_multisig_is_not_stored(tmp_path: Path) -> None:
    """Whether the enclave would take it is unknown: 503, nothing stored (stored, the policy would replace the one in
    force in the proxy's check while the enclave may refuse it)."""
    loop = LoopThread()
    h = build_harness(tmp_path, loop)
    server = start_enclave(loop, h.socket, require_multisig=False)
    try:
        with h.client:
            create_wallet(h)
            stop_enclave(h, loop, server)
            before = stored(h)
            refused = install(h, 1, squads_multisig=None)
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "enclave_unavailable", refused.text
            assert stored(h) == before
    finally:
        server.close()
        loop.stop()


# -- a policy stored before the enclave required a multisig ----------------------------------------------------------


@pytest.fixture
def upgraded(tmp_path: Path) -> Iterator[tuple[Harness, LoopThread]]:
    """A wallet whose policy (the example's: no multisig) went in under an enclave that did not require one; then that
    enclave is replaced by one that does (an upgrade to the image that fixes the setting true)."""
    loop = LoopThread()
    h = build_harness(tmp_path, loop)
    server = start_enclave(loop, h.socket, require_multisig=False)
    try:
        with h.client:
            provision(h)
            assert h.sign(h.transfer(1000, MERCHANT)).status_code == 200
            stop_enclave(h, loop, server)
            server = start_enclave(loop, h.socket, require_multisig=True)
            h.services.relay.forget()  # the proxy was restarted too (else its next signature is 503, then as here)
            yield h, loop
    finally:
        server.close()
        loop.stop()


def test_a_stored_policy_the_enclave_refuses_is_a_409_naming_its_setting(upgraded: tuple[Harness, LoopThread]) -> None:
    h, _loop = upgraded
    events = h.audit_events()
    answer = h.sign(h.transfer(1000, MERCHANT))
    assert answer.status_code == 409, answer.text
    body = answer.json()["error"]
    assert body["code"] == "conflict" and SETTING in body["message"] and "rules.squads_multisig" in body["message"]
    assert pending_reservations(h) == [] and "transaction.signed" not in h.audit_events()[len(events) :]
    # The owner's way out: a policy that declares the wallet's multisig, installed (and signing again).
    put_conforming_chain(svm(h), h.owner_pub, h.agent)
    installed = install(h, 2, squads_multisig=str(EXAMPLE_MULTISIG))
    assert installed.status_code == 200 and installed.json()["enclave_installed"] is True, installed.text
    assert h.sign(h.transfer(1000, MERCHANT)).status_code == 200


def test_the_enclave_refusal_maps_to_a_409_naming_the_setting() -> None:
    error = translate_enclave_error(EnclaveRequestError(ErrorCode.MULTISIG_REQUIRED.value, "policy refused"))
    assert (error.code, error.status) == (Code.CONFLICT, 409)
    assert SETTING in error.message and "rules.squads_multisig is null" in error.message
    # Unlike a failure to reach the enclave (503: try again later), this one the owner fixes with a policy.
    assert translate_enclave_error(EnclaveTimeoutError("slow")).status == 503
