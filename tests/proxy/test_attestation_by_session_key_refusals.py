"""``GET /v1/attestation?nonce=&session_public_key=K`` (`parent_proxy.attestation.attest_session`; docs/api.md,
"Agents: verifying a sign answer"): only the host whose enclave has K answers; any other answers 404
``session_key_not_here`` without asking for an attestation, and so does a host whose enclave restarted between its
status and its attestation (the attestation then names another key). A nonce of an odd number of hex digits is 422
first, whatever the key; a base58 key of the wrong size is 422. A clock that cannot be read (the attestation limit
reads it) is 503 ``clock_unavailable`` before the enclave is asked. A raw enclave on the socket (the transport seam)
answers what each test decides, decoding each request with the real protocol code."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from solders.pubkey import Pubkey

from enclave_app.protocol import (
    AttestationMode,
    AttestationResponse,
    EnclaveState,
    Message,
    Request,
    StatusResponse,
)
from tests.proxy.api_harness import Harness, SwitchableClock, raw_enclave_harness, spy_calls

NONCE = "cd" * 32
ODD_NONCE = "c" * 33  # within the query's pattern and length, not bytes
KEY, RESTARTED_KEY = bytes(range(1, 33)), bytes(range(3, 35))


def _status(key: bytes) -> StatusResponse:
    return StatusResponse(state=EnclaveState.READY, wallets=0, session_public_key=key)


def _attestation(key: bytes) -> AttestationResponse:
    return AttestationResponse(document=None, mode=AttestationMode.NONE, reason="test", session_public_key=key)


Enclave = Callable[[list[bytes], bytes], Harness]


@pytest.fixture
def enclave(tmp_path: Path) -> Iterator[Enclave]:
    """A raw enclave whose status answers name ``ping_keys`` in turn (the last one from then on), and whose
    attestation names ``attested_key``."""
    with raw_enclave_harness(tmp_path) as serve:

        def answering(ping_keys: list[bytes], attested_key: bytes) -> Harness:
            def answer(request: Request) -> Message:
                if request.TYPE == "ping":
                    return _status(ping_keys.pop(0) if len(ping_keys) > 1 else ping_keys[0])
                assert request.TYPE == "attestation", request
                return _attestation(attested_key)

            return serve(answer)

        yield answering


def _ask(h: Harness, nonce: str, key: bytes | str) -> tuple[int, str | None]:
    wanted = key if isinstance(key, str) else str(Pubkey.from_bytes(key))
    response = h.client.get(f"/v1/attestation?nonce={nonce}&session_public_key={wanted}")
    body = response.json()
    return response.status_code, body["error"]["code"] if "error" in body else body["session_public_key"]


def test_the_host_whose_enclave_has_the_key_answers(enclave: Enclave) -> None:
    """The control of the refusals below."""
    h = enclave([KEY], KEY)
    assert _ask(h, NONCE, KEY) == (200, str(Pubkey.from_bytes(KEY)))


def test_another_hosts_enclave_answers_404_without_an_attestation(enclave: Enclave) -> None:
    h = enclave([RESTARTED_KEY], RESTARTED_KEY)
    asked = spy_calls(h.services.relay, "attestation")
    assert _ask(h, NONCE, KEY) == (404, "session_key_not_here")
    assert asked == []


def test_an_enclave_that_restarted_before_its_attestation_answers_404(enclave: Enclave) -> None:
    """The status names K, then the enclave restarts: its attestation (and the status read with it) names another
    key, a consistent answer, but not of K."""
    h = enclave([KEY, RESTARTED_KEY], RESTARTED_KEY)
    assert _ask(h, NONCE, KEY) == (404, "session_key_not_here")


@pytest.mark.parametrize("key", [KEY, RESTARTED_KEY], ids=["this host's key", "another host's key"])
def test_a_nonce_of_an_odd_number_of_digits_is_422_first(enclave: Enclave, key: bytes) -> None:
    h = enclave([KEY], KEY)
    assert _ask(h, ODD_NONCE, key) == (422, "invalid_request")
    response = h.client.get(f"/v1/attestation?nonce={ODD_NONCE}")
    assert response.status_code == 422 and "even number of hex digits" in response.json()["error"]["message"]


def test_a_base58_key_of_the_wrong_size_is_422(enclave: Enclave) -> None:
    h = enclave([KEY], KEY)
    assert _ask(h, NONCE, "z" * 44) == (422, "invalid_request")


@pytest.mark.parametrize("by_key", [False, True], ids=["any host", "by session key"])
def test_an_unreadable_clock_is_503_before_the_enclave_is_asked(enclave: Enclave, by_key: bool) -> None:
    h = enclave([KEY], KEY)
    clock = SwitchableClock()
    clock.broken = True
    h.services.clock = clock
    asked = spy_calls(h.services.relay, "attestation")
    path = f"/v1/attestation?nonce={NONCE}" + (f"&session_public_key={Pubkey.from_bytes(KEY)}" if by_key else "")
    response = h.client.get(path)
    assert response.status_code == 503 and response.json()["error"]["code"] == "clock_unavailable", response.text
    assert asked == []
