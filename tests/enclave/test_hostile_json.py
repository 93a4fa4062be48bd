"""A hostile parent's policy envelope with a huge JSON integer are refused with an error answer; they must not move
the enclave to the failed state (found in review: Python's 4300-digit limit raised a bare ValueError)."""

from __future__ import annotations

import asyncio

from enclave_app.protocol import MAX_POLICY_BYTES, EnclaveState, ErrorCode, ErrorResponse, InstallPolicyRequest
from tests.support.policy_handler import WALLET, policy_handler

HUGE = b'{"document": {"a": 1' + b"0" * 5000 + b'}, "signature": "1"}'


def test_huge_integers_in_a_policy_envelope_are_refused_and_the_enclave_stays_ready() -> None:
    # Policies may be up to MAX_POLICY_BYTES on the wire, room for an integer past Python's 4300-digit limit.
    assert len(HUGE) < MAX_POLICY_BYTES
    handler = policy_handler()
    answer = asyncio.run(handler.handle(InstallPolicyRequest(WALLET, HUGE)))
    assert isinstance(answer, ErrorResponse)
    assert answer.code is not ErrorCode.INTERNAL
    assert handler.enclave.state is EnclaveState.READY
