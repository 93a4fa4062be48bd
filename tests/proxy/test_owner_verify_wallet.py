"""``waiaas owner verify-wallet`` and :func:`parent_proxy.provisioning.verify_provision_receipt`: a wallet verifies
only when its provisioning receipt is signed by the attested session key and binds this wallet, this agent key and
the owner's own key. Mode none needs ``--accept-unattested``; mode nitro is tested with the development NSM."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey

from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from enclave_app.protocol import SESSION_USER_DATA
from enclave_app.receipts import ProvisionReceipt, SessionKey
from policies.cli import main
from tests.proxy.api_harness import running_harness

NONCE = "ef" * 32
PCR0 = bytes([7]) * 48
OWNER = Pubkey.new_unique()
AGENT = Pubkey.new_unique()


def _cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, created: dict[str, Any], attestation: dict[str, Any],
         owner: str, *extra: str) -> tuple[int, str, str]:  # fmt: skip
    (tmp_path / "created.json").write_text(json.dumps(created))
    (tmp_path / "attestation.json").write_text(json.dumps(attestation))
    code = main(["owner", "verify-wallet", "--created", str(tmp_path / "created.json"), "--wallet-id", "w1",
                 "--attestation", str(tmp_path / "attestation.json"), "--owner-public-key", owner, *extra])  # fmt: skip
    out, err = capsys.readouterr()
    return code, out, err


def _created(
    session: SessionKey, wallet_id: str = "w1", agent: Pubkey = AGENT, owner: Pubkey = OWNER
) -> dict[str, Any]:
    receipt, signature = session.sign_provision(ProvisionReceipt(wallet_id, bytes(agent), bytes(owner), 1))
    return {"wallet_id": "w1", "agent_public_key": str(AGENT), "vault_address": str(AGENT),
            "provision_receipt": base64.b64encode(receipt).decode(),
            "provision_receipt_signature": base64.b64encode(signature).decode()}  # fmt: skip


def _nitro(nsm: UnsafeDevelopmentNsm, key: bytes, nonce: bytes, answer_key: bytes | None = None) -> dict[str, Any]:
    document = nsm.attestation(public_key=key, user_data=SESSION_USER_DATA, nonce=nonce)
    return {"document": base64.b64encode(document).decode(), "mode": "nitro", "reason": None,
            "session_public_key": str(Pubkey.from_bytes(answer_key or key)), "enclave_state": "ready"}  # fmt: skip


def test_end_to_end_mode_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for h in running_harness(tmp_path, attestation="none"):
        created = h.owner_call("POST", "/v1/wallets", {"wallet_id": "w1", "owner_public_key": str(h.owner_pub)})
        assert created.status_code == 201, created.text
        attestation = h.client.get(f"/v1/attestation?nonce={NONCE}").json()
        owner = str(h.owner_pub)
        code, out, err = _cli(capsys, tmp_path, created.json(), attestation, owner, "--accept-unattested")
        assert code == 0 and "verified" in out and "proves nothing" in err
        code, _, err = _cli(capsys, tmp_path, created.json(), attestation, owner)
        assert code == 1 and "accept it explicitly" in err
        stranger = str(Pubkey.new_unique())
        code, _, err = _cli(capsys, tmp_path, created.json(), attestation, stranger, "--accept-unattested")
        assert code == 1 and "substituted the owner key" in err and "Do not add the agent key" in err
        other_session = {**attestation, "session_public_key": str(Pubkey.new_unique())}
        code, _, err = _cli(capsys, tmp_path, created.json(), other_session, owner, "--accept-unattested")
        assert code == 1 and "not signed by the attested enclave session key" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"owner": OWNER}, None),
        ({"owner": Pubkey.new_unique()}, "substituted the owner key"),
        ({"agent": Pubkey.new_unique()}, "not " + str(AGENT)),
        ({"wallet_id": "w2"}, "for wallet 'w2', not 'w1'"),
    ],
)
def test_receipt_must_bind_the_answer_and_the_owner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], message: str | None
) -> None:
    session = SessionKey(bytes(range(32)))
    attestation = {"document": None, "mode": "none", "reason": "test", "enclave_state": "ready",
                   "session_public_key": str(Pubkey.from_bytes(session.public_key))}  # fmt: skip
    code, _, err = _cli(capsys, tmp_path, _created(session, **change), attestation, str(OWNER), "--accept-unattested")
    assert code == (0 if message is None else 1), err
    assert message is None or message in err, err


def test_bad_signature_and_missing_receipt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = SessionKey(bytes(range(32)))
    attestation = {"document": None, "mode": "none", "reason": "test", "enclave_state": "ready",
                   "session_public_key": str(Pubkey.from_bytes(session.public_key))}  # fmt: skip
    created = _created(session)
    signature = bytearray(base64.b64decode(created["provision_receipt_signature"]))
    signature[0] ^= 1
    bad = {**created, "provision_receipt_signature": base64.b64encode(bytes(signature)).decode()}
    code, _, err = _cli(capsys, tmp_path, bad, attestation, str(OWNER), "--accept-unattested")
    assert code == 1 and "signature invalid" in err
    old = {**created, "provision_receipt": None, "provision_receipt_signature": None}
    code, _, err = _cli(capsys, tmp_path, old, attestation, str(OWNER), "--accept-unattested")
    assert code == 1 and "no provisioning receipt" in err


def test_nitro_with_the_development_nsm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nsm = UnsafeDevelopmentNsm(pcrs={0: PCR0})
    (tmp_path / "root.pem").write_bytes(nsm.root_certificate_pem)
    session, other = SessionKey(bytes(range(32))), SessionKey(bytes(32))
    nonce = bytes.fromhex(NONCE)
    trust = ("--root-pem", str(tmp_path / "root.pem"), "--pcr", f"0={PCR0.hex()}", "--nonce", NONCE)
    owner = str(OWNER)
    code, out, _ = _cli(capsys, tmp_path, _created(session), _nitro(nsm, session.public_key, nonce), owner, *trust)
    assert code == 0 and "verified" in out
    # The receipt was signed by a session key other than the attested one.
    code, _, err = _cli(capsys, tmp_path, _created(other), _nitro(nsm, session.public_key, nonce), owner, *trust)
    assert code == 1 and "not signed by the attested enclave session key" in err
    # The answer names a key other than the document's.
    mixed = _nitro(nsm, session.public_key, nonce, answer_key=other.public_key)
    code, _, err = _cli(capsys, tmp_path, _created(other), mixed, owner, *trust)
    assert code == 1 and "does not match the attested one" in err
    # Wrong PCR, wrong nonce, another root, no root/PCRs.
    attestation = _nitro(nsm, session.public_key, nonce)
    wrong_pcr = ("--root-pem", str(tmp_path / "root.pem"), "--pcr", f"0={bytes(48).hex()}")
    code, _, err = _cli(capsys, tmp_path, _created(session), attestation, owner, *wrong_pcr)
    assert code == 1 and "attestation document refused" in err
    code, _, err = _cli(capsys, tmp_path, _created(session), attestation, owner, *trust[:4], "--nonce", "00" * 32)
    assert code == 1 and "attestation document refused" in err
    (tmp_path / "other.pem").write_bytes(UnsafeDevelopmentNsm(pcrs={0: PCR0}).root_certificate_pem)
    code, _, err = _cli(capsys, tmp_path, _created(session), attestation, owner,
                        "--root-pem", str(tmp_path / "other.pem"), *trust[2:])  # fmt: skip
    assert code == 1 and "attestation document refused" in err
    code, _, err = _cli(capsys, tmp_path, _created(session), attestation, owner, "--accept-unattested")
    assert code == 1 and "pinned root certificate and expected PCRs" in err


def test_bad_input_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = SessionKey(bytes(range(32)))
    attestation = {"mode": "none", "session_public_key": str(Pubkey.from_bytes(session.public_key))}
    (tmp_path / "root.pem").write_bytes(UnsafeDevelopmentNsm(pcrs={0: PCR0}).root_certificate_pem)
    root = ("--root-pem", str(tmp_path / "root.pem"))
    code, _, err = _cli(capsys, tmp_path, _created(session), attestation, str(OWNER), *root, "--pcr", "zero")
    assert code == 2 and "INDEX=HEX" in err
