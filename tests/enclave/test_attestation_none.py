"""Attestation mode ``none`` (self-hosted without Nitro): strict settings, no KMS sealer, randomness from the
kernel, and ``attestation`` answers that carry no document but say why; plus the protocol shape of both modes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from enclave_app.__main__ import build_sealers, main
from enclave_app.client import EnclaveClient
from enclave_app.errors import EnclaveRequestError, NsmError, ProtocolError, SettingsError
from enclave_app.no_attestation import NO_ATTESTATION_REASON, RANDOM_BYTES, NoAttestationNsm
from enclave_app.protocol import (
    AttestationMode,
    AttestationRequest,
    AttestationResponse,
    EnclaveState,
    ErrorCode,
    ErrorResponse,
    StatusResponse,
    decode_response,
)
from enclave_app.sealing import LocalSealer
from enclave_app.server import Handler
from enclave_app.settings import Settings, load_settings
from enclave_app.state import Enclave
from enclave_app.transport import UnixAddress
from tests.enclave.startup_env import enclave_env, served_from

KEY = bytes(range(32))

KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _none_env(tmp_path: Path, **changes: str | None) -> dict[str, str]:
    return enclave_env(tmp_path, **{"NSM": "none", "ALLOW_UNSAFE_NSM": "false", **changes})


def test_settings_for_mode_none(tmp_path: Path) -> None:
    settings = load_settings(_none_env(tmp_path))
    assert settings.nsm == "none" and settings.sealer == "local" and settings.attestation_root is None


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"ALLOW_UNSAFE_NSM": "true"}, "must be 'true' exactly when WAIAAS_ENCLAVE_NSM is unsafe-development"),
        ({"ALLOW_UNSAFE_NSM": None}, "WAIAAS_ENCLAVE_ALLOW_UNSAFE_NSM is required"),
        ({"ATTESTATION_ROOT": "/etc/hostname"}, "ATTESTATION_ROOT must not be set with NSM none"),
        (
            {"SEALER": "kms", "LOCAL_SECRET_FILE": None, "KMS_KEY_ID": KEY_ARN, "KMS_REGION": "eu-west-1"},
            "SEALER kms needs attestation .* cannot be combined with WAIAAS_ENCLAVE_NSM none",
        ),
        ({"SEALER": "kms"}, "SEALER kms needs attestation"),
    ],
)
def test_bad_settings_for_mode_none(tmp_path: Path, changes: dict[str, str | None], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        load_settings(_none_env(tmp_path, **changes))


def test_kms_sealer_with_mode_none_refuses_to_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = _none_env(tmp_path, SEALER="kms", LOCAL_SECRET_FILE=None, KMS_KEY_ID=KEY_ARN, KMS_REGION="eu-west-1")
    assert main([], env=env) == 2
    err = capsys.readouterr().err
    assert err.startswith("waiaas-enclave: configuration error: WAIAAS_ENCLAVE_SEALER kms needs attestation")
    assert not (tmp_path / "enclave.sock").exists()


def test_sealer_builder_refuses_kms_with_mode_none_even_past_the_settings_check(tmp_path: Path) -> None:
    settings = Settings(
        listen=UnixAddress(f"{tmp_path}/s"), nsm="none", sealer="kms", kms_key_id="k", kms_region="eu-west-1"
    )
    with pytest.raises(SettingsError, match="the KMS sealer needs attestation"):
        build_sealers(settings, NoAttestationNsm())


def test_no_attestation_nsm_has_randomness_and_nothing_else() -> None:
    nsm = NoAttestationNsm()
    first, second = nsm.get_random(), nsm.get_random()
    assert len(first) == len(second) == RANDOM_BYTES and first != second
    with pytest.raises(NsmError, match="no attestation in mode none"):
        nsm.attestation(public_key=KEY, user_data=None, nonce=None)
    with pytest.raises(NsmError, match="no PCRs in mode none"):
        nsm.describe_pcr(0)


def test_serve_in_mode_none_answers_attestation_with_the_reason(tmp_path: Path) -> None:
    Seen = tuple[AttestationResponse, bytes, bytes, EnclaveState]

    async def body(client: EnclaveClient, status: StatusResponse) -> Seen:
        attestation = await client.attestation(b"n" * 16)
        wallet = await client.provision_wallet("w1", KEY)  # keys from kernel randomness, sealed locally
        assert wallet.sealed_blob is not None
        return attestation, status.session_public_key, wallet.agent_public_key, (await client.ping()).state

    attestation, session_key, agent, state = served_from(_none_env(tmp_path), body)
    assert attestation.mode is AttestationMode.NONE and attestation.document is None
    assert attestation.reason == NO_ATTESTATION_REASON and "no Nitro Enclave" in attestation.reason
    assert attestation.session_public_key == session_key and len(agent) == 32
    assert state is EnclaveState.PROVISIONED


def test_nitro_mode_without_documents_fails_closed() -> None:
    # An enclave told to attest (nitro) over an NSM that cannot: nsm_unavailable, never a "none" answer.
    enclave = Enclave(nsm=NoAttestationNsm(), clock=lambda: datetime.now(UTC), require_multisig=True)
    handler = Handler(enclave, LocalSealer(b"operator secret for the tests!!"))
    answer = asyncio.run(handler.handle(AttestationRequest(nonce=b"n" * 16)))
    assert isinstance(answer, ErrorResponse) and answer.code is ErrorCode.NSM_UNAVAILABLE


# -- the protocol shape -------------------------------------------------------------------------------------------

NITRO = AttestationResponse(document=b"doc", mode=AttestationMode.NITRO, reason=None, session_public_key=KEY)
NONE = AttestationResponse(document=None, mode=AttestationMode.NONE, reason="why", session_public_key=KEY)


@pytest.mark.parametrize("message", [NITRO, NONE], ids=["nitro", "none"])
def test_both_modes_round_trip(message: AttestationResponse) -> None:
    wire = message.to_wire()
    assert set(wire) == {"v", "type", "document", "mode", "reason", "session_public_key"}
    assert decode_response(wire) == message


def test_the_older_shape_still_decodes_as_nitro() -> None:
    older = {"v": 1, "type": "attestation", "document": b"doc"}
    assert decode_response(older) == AttestationResponse(
        document=b"doc", mode=AttestationMode.NITRO, reason=None, session_public_key=None
    )
    with pytest.raises(ProtocolError, match="nitro attestation needs a document"):
        decode_response({**older, "document": None})


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"mode": "tpm"}, "enumerated field out of range"),
        ({"reason": "x" * 257}, "text field of wrong type or size"),
        ({"document": None}, "nitro attestation needs a document and no reason"),
        ({"reason": "also a reason"}, "nitro attestation needs a document and no reason"),
        ({"mode": "none"}, "mode none needs a reason and a session key, and no document"),
        ({"mode": "none", "document": None}, "mode none needs a reason and a session key"),
        ({"mode": "none", "document": None, "reason": "r", "session_public_key": None}, "mode none needs"),
        ({"session_public_key": KEY[:31]}, "byte field of wrong type or size"),
    ],
)
def test_inconsistent_attestation_answers_are_refused(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_response({**NITRO.to_wire(), **changes})


@pytest.mark.parametrize("dropped", [("mode",), ("reason",), ("mode", "session_public_key")])
def test_only_the_whole_older_shape_is_accepted(dropped: tuple[str, ...]) -> None:
    wire = {key: value for key, value in NITRO.to_wire().items() if key not in dropped}
    with pytest.raises(ProtocolError, match="missing or extra fields"):
        decode_response(wire)


def test_an_inconsistent_answer_is_not_encoded() -> None:
    with pytest.raises(ProtocolError, match="mode none needs"):
        AttestationResponse(document=b"doc", mode=AttestationMode.NONE, reason="r", session_public_key=KEY).to_wire()


def test_client_raises_on_an_error_answer_in_mode_none(tmp_path: Path) -> None:
    # The KMS-free path still refuses what it must: a load with a blob that does not open is unseal_failed.
    async def body(client: EnclaveClient, _: StatusResponse) -> str:
        with pytest.raises(EnclaveRequestError) as raised:
            await client.load_wallet("w1", owner_public_key=KEY, agent_public_key=KEY, sealed_blob=b"junk")
        return raised.value.code

    assert served_from(_none_env(tmp_path), body) == ErrorCode.UNSEAL_FAILED.value
