"""``WAIAAS_ENCLAVE_REQUIRE_MULTISIG``: the enclave, not only the parent, refuses a policy that declares no Squads
multisig (``rules.squads_multisig`` null), with ``multisig_required`` and nothing changed; its ``status`` answer
reports the setting (a later generation of the message); the setting's parsing; and the enclave image fixes it true.

Before, the enclave installed any owner-signed policy: a hostile parent (or one run with
``WAIAAS_REQUIRE_MULTISIG=false``) could install a policy under which the agent key's own account holds the funds
and nothing on chain bounds it (DESIGN.md sections 1 and 10).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey

from enclave_app.__main__ import main
from enclave_app.errors import SettingsError
from enclave_app.no_attestation import NoAttestationNsm
from enclave_app.protocol import (
    EnclaveState,
    ErrorCode,
    ErrorResponse,
    InstallPolicyRequest,
    PingRequest,
    PolicyInstalledResponse,
    StatusResponse,
    decode_response,
)
from enclave_app.sealing import LocalSealer
from enclave_app.server import Handler
from enclave_app.settings import load_settings
from enclave_app.state import Enclave, Wallet
from policies.signing import sign_document
from tests.enclave.startup_env import enclave_env, served_status
from tests.support.policies import example_policy
from tests.support.policy_handler import AGENT, AGENT_KEY, NOW, OWNER, WALLET

REPO = Path(__file__).resolve().parents[2]
MULTISIG = Pubkey.from_string("AkexRZX1tPiseG5arHiPGW7RT1wcYmjT5YWipNxWAcUt")
SETTING = "WAIAAS_ENCLAVE_REQUIRE_MULTISIG"
KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _handler(*, require_multisig: bool) -> Handler:
    """One wallet held, no policy yet."""
    enclave = Enclave(nsm=NoAttestationNsm(), clock=lambda: NOW, require_multisig=require_multisig)
    owner = Pubkey.from_bytes(OWNER.public_key().public_bytes_raw())
    enclave.add(Wallet(wallet_id=WALLET, owner=owner, agent_key=AGENT_KEY, agent=AGENT))
    return Handler(enclave, LocalSealer(b"operator secret for the tests!!"))


def _policy(sequence: int, multisig: Pubkey | None) -> bytes:
    document = example_policy()  # declares no multisig
    document.update(wallet_id=WALLET, sequence=sequence)
    document["rules"]["squads_multisig"] = None if multisig is None else str(multisig)
    return json.dumps(sign_document("policy", document, OWNER)).encode()


def _install(handler: Handler, sequence: int, multisig: Pubkey | None) -> Any:
    return asyncio.run(handler.handle(InstallPolicyRequest(WALLET, _policy(sequence, multisig))))


# -- the refusal -------------------------------------------------------------------------------------------------


def test_a_policy_without_a_multisig_is_refused_and_nothing_changes() -> None:
    handler = _handler(require_multisig=True)
    wallet, session = handler.enclave.wallet(WALLET), handler.enclave.session
    counter = session.next_counter()
    answer = _install(handler, 1, None)
    assert isinstance(answer, ErrorResponse) and answer.code is ErrorCode.MULTISIG_REQUIRED
    assert "rules.squads_multisig is null" in answer.message and f"{SETTING}=true" in answer.message
    assert wallet.installed is None and not wallet.frozen
    assert handler.enclave.state is EnclaveState.PROVISIONED  # not failed: a refusal, the wallet still held
    assert session.next_counter() == counter + 1  # no receipt was signed for the refusal


def test_a_refused_replacement_leaves_the_installed_policy_in_force() -> None:
    handler = _handler(require_multisig=True)
    installed = _install(handler, 1, MULTISIG)
    assert isinstance(installed, PolicyInstalledResponse) and installed.sequence == 1
    wallet, session = handler.enclave.wallet(WALLET), handler.enclave.session
    policy, counter = wallet.installed, session.next_counter()
    answer = _install(handler, 2, None)
    assert isinstance(answer, ErrorResponse) and answer.code is ErrorCode.MULTISIG_REQUIRED
    assert wallet.installed is policy and wallet.policy_hash == installed.policy_hash
    assert session.next_counter() == counter + 1  # no receipt was signed for the refusal
    assert handler.enclave.state is EnclaveState.READY
    # Still the owner's to replace with a policy that declares the multisig.
    again = _install(handler, 2, MULTISIG)
    assert isinstance(again, PolicyInstalledResponse) and again.sequence == 2


def test_without_the_requirement_a_policy_without_a_multisig_is_installed() -> None:
    handler = _handler(require_multisig=False)
    answer = _install(handler, 1, None)
    assert isinstance(answer, PolicyInstalledResponse) and answer.sequence == 1
    assert handler.enclave.state is EnclaveState.READY


# -- status ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("required", [True, False])
def test_status_reports_the_setting(required: bool) -> None:
    answer = asyncio.run(_handler(require_multisig=required).handle(PingRequest()))
    assert isinstance(answer, StatusResponse) and answer.requires_multisig is required
    wire = answer.to_wire()
    assert wire["requires_multisig"] is required  # never left out: the enclave always knows its setting
    decoded = decode_response(wire)
    assert isinstance(decoded, StatusResponse) and decoded.requires_multisig is required


def test_the_status_of_an_enclave_built_before_the_setting_still_decodes() -> None:
    older = {"v": 1, "type": "status", "state": "ready", "wallets": 1, "session_public_key": bytes(32)}
    decoded = decode_response(older)
    assert isinstance(decoded, StatusResponse) and decoded.requires_multisig is None
    assert decoded.to_wire() == older  # and a null setting leaves the field out, as such an enclave did


def test_served_from_settings_the_enclave_reports_them(tmp_path: Path) -> None:
    assert served_status(enclave_env(tmp_path)).requires_multisig is True  # the default
    (tmp_path / "off").mkdir()
    off = enclave_env(tmp_path / "off", REQUIRE_MULTISIG="false")
    assert served_status(off).requires_multisig is False


# -- settings ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, True), ("true", True), ("false", False), (" false ", False), ("TRUE", True), ("False", False)],
)
def test_the_setting_is_parsed_strictly_with_the_safe_default(
    tmp_path: Path, value: str | None, expected: bool
) -> None:
    assert load_settings(enclave_env(tmp_path, REQUIRE_MULTISIG=value)).require_multisig is expected


@pytest.mark.parametrize("value", ["", "yes", "0", "1", "off", "truth", "f", "\u0131rue"])
def test_a_malformed_setting_stops_start_up(tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SettingsError, match=rf"^{SETTING} must be true or false \(any letter case\)$"):
        load_settings(enclave_env(tmp_path, REQUIRE_MULTISIG=value))
    assert main([], env=enclave_env(tmp_path, REQUIRE_MULTISIG=value)) == 2
    err = capsys.readouterr().err
    assert err == f"waiaas-enclave: configuration error: {SETTING} must be true or false (any letter case)\n"


# -- the image ---------------------------------------------------------------------------------------------------


def _image_environment() -> dict[str, str]:
    """The ``WAIAAS_ENCLAVE_*`` values the enclave image's ``ENV`` instructions set (continuations joined)."""
    text = re.sub(r"\\\n", " ", (REPO / "enclave_app" / "Dockerfile").read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            found |= dict(re.findall(r"(WAIAAS_ENCLAVE_[A-Z_]+)=(\S+)", line))
    return found


def test_the_enclave_image_fixes_the_requirement_on(tmp_path: Path) -> None:
    """The measured image sets it (PCR0 covers the image's environment): a parent cannot turn it off."""
    env = _image_environment()
    assert env[SETTING] == "true"
    # What the image's settings load to (its build arguments and its root file stood in for).
    root = REPO / "enclave_app" / "image" / "aws-nitro-root-g1.pem"
    env |= {"WAIAAS_ENCLAVE_KMS_REGION": "eu-west-1", "WAIAAS_ENCLAVE_ATTESTATION_ROOT": str(root),
            "WAIAAS_ENCLAVE_KMS_KEY_ID": KEY_ARN}  # fmt: skip
    assert load_settings(env).require_multisig is True
