"""``GET /v1/attestation``: the session key comes from the enclave's attestation answer itself; an answer that
contradicts itself is 503 ``attestation_inconsistent``; the enclave's ``attestation_refused`` is its own 503 code.

The real enclave app answers the consistent cases; a raw server on the enclave socket (the transport seam) answers
the inconsistent and refusing ones, decoding each request with the real protocol code."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from solders.pubkey import Pubkey

from enclave_app.protocol import (
    AttestationMode,
    AttestationResponse,
    EnclaveState,
    ErrorCode,
    ErrorResponse,
    Message,
    StatusResponse,
)
from parent_proxy.__main__ import build_app
from parent_proxy.attestation import document_public_key_unverified
from tests.proxy.api_harness import (
    HARNESS_ORIGIN,
    Harness,
    LoopThread,
    SwitchableClock,
    answering_requests,
    provisioned_harness,
    raw_enclave_harness,
    running_harness,
    spy_calls,
    start_enclave,
    stop_enclave,
)
from tests.proxy.api_harness import start_raw_server as raw_server
from tests.support.policies import MERCHANT, owner_public_key

NONCE = "ab" * 32
KEY = bytes(range(1, 33))
OTHER_KEY = bytes(range(2, 34))


def cose(payload: dict[str, object], *, tagged: bool = True) -> bytes:
    structure = [cbor2.dumps({1: -35}), {}, cbor2.dumps(payload), b"\x00" * 96]
    return cbor2.dumps(cbor2.CBORTag(18, structure) if tagged else structure)


def code(response: object) -> str:
    return str(response.json()["error"]["code"])  # type: ignore[attr-defined]


# -- the real enclave ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["nitro", "none"])
def test_session_key_is_the_attestation_answers(tmp_path: Path, mode: str) -> None:
    for h in running_harness(tmp_path, attestation=mode):
        answer = h.client.get(f"/v1/attestation?nonce={NONCE}")
        assert answer.status_code == 200, answer.text
        view = answer.json()
        assert view["mode"] == mode and view["enclave_state"] in {"booting", "provisioned", "ready"}
        key = bytes(Pubkey.from_string(view["session_public_key"]))
        if mode == "nitro":
            assert document_public_key_unverified(base64.b64decode(view["document"])) == key
        else:
            assert view["document"] is None and view["reason"]


# -- a raw enclave answering what the test decides ----------------------------------------------------------------


def answering(answers: dict[str, Message]) -> Callable[..., object]:
    return answering_requests(lambda request: answers[request.TYPE])


@pytest.fixture
def raw(tmp_path: Path) -> Iterator[Callable[[dict[str, Message]], Harness]]:
    with raw_enclave_harness(tmp_path) as serve:
        yield lambda answers: serve(lambda request: answers[request.TYPE])


def status(key: bytes = KEY) -> StatusResponse:
    return StatusResponse(state=EnclaveState.READY, wallets=0, session_public_key=key)


def test_consistent_answer_from_a_raw_enclave(raw: Callable[[dict[str, Message]], Harness]) -> None:
    h = raw({"ping": status(), "attestation": AttestationResponse(document=cose({"public_key": KEY}),
                                                                  session_public_key=KEY)})  # fmt: skip
    view = h.client.get(f"/v1/attestation?nonce={NONCE}").json()
    assert (view["mode"], view["session_public_key"], view["enclave_state"]) == ("nitro", str(Pubkey(KEY)), "ready")


@pytest.mark.parametrize(
    ("attestation", "ping_key"),
    [
        # an older enclave: no session key in the answer (the ping alone would have been trusted before)
        (AttestationResponse(document=cose({"public_key": KEY})), KEY),
        # the document carries another key than the answer beside it
        (AttestationResponse(document=cose({"public_key": OTHER_KEY}), session_public_key=KEY), KEY),
        # the document carries no key, or is not a COSE_Sign1 at all
        (AttestationResponse(document=cose({"nonce": b"n"}), session_public_key=KEY), KEY),
        (AttestationResponse(document=b"\xff\x00garbage", session_public_key=KEY), KEY),
        (AttestationResponse(document=cbor2.dumps([1, 2, 3]), session_public_key=KEY), KEY),
        # the enclave restarted between the attestation and the status (mode nitro and mode none)
        (AttestationResponse(document=cose({"public_key": KEY}), session_public_key=KEY), OTHER_KEY),
        (AttestationResponse(document=None, mode=AttestationMode.NONE, reason="no enclave", session_public_key=KEY),
         OTHER_KEY),
    ],
)  # fmt: skip
def test_inconsistent_answer_is_503(
    raw: Callable[[dict[str, Message]], Harness], attestation: AttestationResponse, ping_key: bytes
) -> None:
    h = raw({"ping": status(ping_key), "attestation": attestation})
    response = h.client.get(f"/v1/attestation?nonce={NONCE}")
    assert response.status_code == 503 and code(response) == "attestation_inconsistent", response.text
    assert "session" in response.json()["error"]["message"] or "restarted" in response.json()["error"]["message"]


def test_document_key_is_read_tagged_or_untagged() -> None:
    assert document_public_key_unverified(cose({"public_key": KEY})) == KEY
    assert document_public_key_unverified(cose({"public_key": KEY}, tagged=False)) == KEY
    wrong_tag = cbor2.dumps(cbor2.CBORTag(99, [b"", {}, cbor2.dumps({"public_key": KEY}), b""]))
    not_cbor_payload, not_bytes_payload = cbor2.dumps([b"", {}, b"\xff", b""]), cbor2.dumps([b"", {}, 5, b""])
    for bad in (b"", b"\x80", wrong_tag, not_cbor_payload, not_bytes_payload, cose({"public_key": "text"})):
        assert document_public_key_unverified(bad) is None, bad


# -- attestation_refused ------------------------------------------------------------------------------------------


def test_attestation_refused_has_its_own_code(raw: Callable[[dict[str, Message]], Harness]) -> None:
    refused = ErrorResponse(code=ErrorCode.ATTESTATION_REFUSED, message="kms refused the attestation")
    h = raw({"attestation": refused, "ping": status(), "provision_wallet": refused})
    response = h.client.get(f"/v1/attestation?nonce={NONCE}")
    assert response.status_code == 503 and code(response) == "attestation_refused"
    created = h.owner_call("POST", "/v1/wallets", {"wallet_id": "w1", "owner_public_key": str(h.owner_pub)})
    assert created.status_code == 503 and code(created) == "attestation_refused"
    assert "PCRs" in created.json()["error"]["message"]


def test_attestation_refused_while_loading_a_wallet_signs_nothing(tmp_path: Path) -> None:
    with provisioned_harness(tmp_path, enclave_timeout=0.5) as (h, loop, servers):
        stop_enclave(h, loop, servers[0])
        h.services.relay.forget()  # the next request loads the wallet: KMS refuses the enclave's attestation
        refused = ErrorResponse(code=ErrorCode.ATTESTATION_REFUSED, message="kms refused the attestation")
        servers.append(raw_server(loop, h.socket, answering({"load_wallet": refused, "ping": status()})))
        response = h.sign(h.transfer(1000, MERCHANT))
        assert response.status_code == 503 and code(response) == "attestation_refused", response.text
        assert "signed_transaction" not in response.text and h.spent() == 0


# -- the rate limit -----------------------------------------------------------------------------------------------


def test_attestation_is_rate_limited_and_the_enclave_is_not_asked_over_it(tmp_path: Path) -> None:
    """Each ``GET /v1/attestation`` is one NSM attestation: one bucket for the process (anonymous callers), set by
    ``WAIAAS_ATTESTATION_RATE_PER_SECOND`` and ``WAIAAS_ATTESTATION_BURST``. Before: no limit at all. The proxy is
    built from the environment as ``python -m parent_proxy`` builds it, before the real enclave app."""
    owner = Ed25519PrivateKey.generate()
    env = {
        "WAIAAS_STATE": f"sqlite:{tmp_path / 'state.db'}", "WAIAAS_ENCLAVE": f"unix:{tmp_path / 'enclave.sock'}",
        "WAIAAS_OWNER_KEYS": str(owner_public_key(owner)), "WAIAAS_CHAIN": "litesvm",
        "WAIAAS_REQUIRE_MULTISIG": "false", "WAIAAS_PUBLIC_ORIGINS": HARNESS_ORIGIN,
        "WAIAAS_ATTESTATION_RATE_PER_SECOND": "0.5", "WAIAAS_ATTESTATION_BURST": "3",
    }  # fmt: skip
    _, app, services = build_app(env)
    clock = SwitchableClock()
    services.clock = clock
    asked = spy_calls(services.relay, "attestation")
    loop = LoopThread()
    server = start_enclave(loop, tmp_path / "enclave.sock")
    try:
        with TestClient(app, raise_server_exceptions=False) as client:

            def attest() -> int:
                return client.get(f"/v1/attestation?nonce={NONCE}").status_code

            assert [attest() for _ in range(3)] == [200, 200, 200]  # the burst
            refused = client.get(f"/v1/attestation?nonce={'cd' * 32}")
            assert refused.status_code == 429 and code(refused) == "rate_limited", refused.text
            assert "attestation" in refused.json()["error"]["message"]
            assert attest() == 429 and len(asked) == 3  # refused before the enclave is asked
            assert code(client.get("/v1/attestation?nonce=zz")) == "invalid_request"  # validated first, not counted
            clock.offset += 2.0  # one more at 0.5 per second
            assert [attest(), attest()] == [200, 429] and len(asked) == 4
            assert client.get("/healthz").status_code == 200  # other routes are not this bucket's
    finally:
        server.close()
        loop.stop()
