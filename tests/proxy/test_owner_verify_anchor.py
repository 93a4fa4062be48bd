"""``waiaas owner verify-wallet`` / ``verify-candidate`` hold the anchor to the rules ``waiaas audit verify`` applies
(`parent_proxy.trust_anchor`; security review, F3), and verify-wallet checks the owner's own wallet id (F2). Each
case passed, or crashed with a traceback, before.

On Nitro every enclave's document chains to the same AWS root, and PCR 3 (the parent's IAM role) and PCR 4 (the
instance) are the same for any image the parent starts on that host: the "hostile image" here is a development NSM
with another PCR 0 and the host's PCR 3 and 4."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey
from solders.signature import Signature

from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from enclave_app.protocol import SESSION_USER_DATA
from enclave_app.receipts import AgentKeyReceipt, ProvisionReceipt, SessionKey
from parent_proxy.provisioning import ProvisionVerificationError, session_key_from_attestation
from parent_proxy.trust_anchor import Anchor, AnchorError
from policies.cli import main

GENUINE_PCR0, HOSTILE_PCR0 = bytes([0x11]) * 48, bytes([0x66]) * 48
HOST_PCR3, HOST_PCR4 = bytes([0x33]) * 48, bytes([0x44]) * 48
NONCE = "5a" * 32
OWNER, AGENT, CANDIDATE = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
SESSION = SessionKey(bytes(range(32)))
COMMANDS = ["verify-wallet", "verify-candidate"]


def _created(wallet_id: str = "w1") -> dict[str, Any]:
    receipt, signature = SESSION.sign_provision(ProvisionReceipt(wallet_id, bytes(AGENT), bytes(OWNER), 1))
    return {"wallet_id": wallet_id, "agent_public_key": str(AGENT), "vault_address": str(AGENT),
            "provision_receipt": base64.b64encode(receipt).decode(),
            "provision_receipt_signature": base64.b64encode(signature).decode()}  # fmt: skip


def _candidate() -> dict[str, Any]:
    receipt, signature = SESSION.sign_agent_key(
        AgentKeyReceipt("agent_key_candidate", "w1", bytes(AGENT), bytes(CANDIDATE), bytes(OWNER), None, 1)
    )
    return {"wallet_id": "w1", "agent_public_key": str(AGENT), "candidate_public_key": str(CANDIDATE),
            "receipt": {"receipt": base64.b64encode(receipt).decode(),
                        "signature": str(Signature.from_bytes(signature))}}  # fmt: skip


def _unattested() -> dict[str, Any]:
    """A parent's answer in mode none: no document, a session key of its choosing."""
    return {"document": None, "mode": "none", "reason": "downgraded by the parent", "enclave_state": "ready",
            "session_public_key": str(Pubkey.from_bytes(SESSION.public_key))}  # fmt: skip


def _nitro(nsm: UnsafeDevelopmentNsm, user_data: bytes | None = SESSION_USER_DATA) -> dict[str, Any]:
    document = nsm.attestation(public_key=SESSION.public_key, user_data=user_data, nonce=bytes.fromhex(NONCE))
    return {"document": base64.b64encode(document).decode(), "mode": "nitro", "reason": None,
            "session_public_key": str(Pubkey.from_bytes(SESSION.public_key)), "enclave_state": "ready"}  # fmt: skip


Json = dict[str, Any] | str


def _cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, attestation: Json, *extra: str,
         answer: Json | None = None, wallet: str = "w1") -> tuple[int, str, str]:  # fmt: skip
    """``command`` on ``answer`` (default: a genuine one for w1) and ``attestation`` (objects, or raw file text)."""
    if answer is None:
        answer = _created() if command == "verify-wallet" else _candidate()
    files = {}
    for name, value in (("answer", answer), ("attestation", attestation)):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(value if isinstance(value, str) else json.dumps(value))
    given = ["--created", str(files["answer"])] if command == "verify-wallet" else [
        "--candidate", str(files["answer"]), "--agent-key", str(AGENT)]  # fmt: skip
    code = main(["owner", command, *given, "--wallet-id", wallet, "--attestation", str(files["attestation"]),
                 "--owner-public-key", str(OWNER), *extra])  # fmt: skip
    out, err = capsys.readouterr()
    return code, out, err


def _root(tmp_path: Path, nsm: UnsafeDevelopmentNsm) -> tuple[str, str]:
    (tmp_path / "root.pem").write_bytes(nsm.root_certificate_pem)
    return "--root-pem", str(tmp_path / "root.pem")


@pytest.mark.parametrize("command", COMMANDS)
def test_an_anchor_without_pcr0_is_bad_input(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hostile = UnsafeDevelopmentNsm(pcrs={0: HOSTILE_PCR0, 3: HOST_PCR3, 4: HOST_PCR4})
    root = _root(tmp_path, hostile)  # the same root for every image
    host_only = ("--pcr", f"3={HOST_PCR3.hex()}", "--pcr", f"4={HOST_PCR4.hex()}", "--nonce", NONCE)
    code, out, err = _cli(capsys, tmp_path, command, _nitro(hostile), *root, *host_only)
    assert (code, out) == (2, "") and "--pcr needs PCR 0 (the enclave image)" in err, err
    code, _, err = _cli(
        capsys, tmp_path, command, _nitro(hostile), *root, *host_only, "--pcr", f"0={GENUINE_PCR0.hex()}"
    )
    assert code == 1 and "attestation document refused" in err and "NOT VERIFIED" in err, err


@pytest.mark.parametrize("command", COMMANDS)
def test_an_anchor_with_accept_unattested_is_bad_input(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _root(tmp_path, UnsafeDevelopmentNsm(pcrs={0: GENUINE_PCR0}))
    anchored = (*root, "--pcr", f"0={GENUINE_PCR0.hex()}")
    code, out, err = _cli(capsys, tmp_path, command, _unattested(), *anchored, "--accept-unattested")
    assert (code, out) == (2, "") and "--accept-unattested goes without --root-pem and --pcr" in err, err
    code, _, err = _cli(capsys, tmp_path, command, _unattested(), *anchored)
    assert code == 1 and "the anchor (root and PCRs) requires an attested session key" in err, err
    assert _cli(capsys, tmp_path, command, _unattested(), "--accept-unattested")[0] == 0  # no anchor: as before
    code, _, err = _cli(capsys, tmp_path, command, _unattested(), "--accept-unattested", "--nonce", NONCE)
    assert code == 2 and "--nonce goes with --root-pem and --pcr" in err, err  # nothing would check it


def test_an_anchor_refuses_mode_none_in_the_library_whatever_accept_unattested_says() -> None:
    anchor = Anchor(UnsafeDevelopmentNsm(pcrs={0: GENUINE_PCR0}).root_certificate_pem, {0: GENUINE_PCR0})
    with pytest.raises(ProvisionVerificationError, match="requires an attested session key"):
        session_key_from_attestation(_unattested(), anchor=anchor, accept_unattested=True)
    with pytest.raises(AnchorError, match="needs PCR 0"):
        Anchor(anchor.root_certificate_pem, {3: HOST_PCR3})


@pytest.mark.parametrize("command", COMMANDS)
def test_a_document_that_does_not_say_it_carries_the_session_key_fails(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nsm = UnsafeDevelopmentNsm(pcrs={0: GENUINE_PCR0})
    anchored = (*_root(tmp_path, nsm), "--pcr", f"0={GENUINE_PCR0.hex()}", "--nonce", NONCE)
    assert _cli(capsys, tmp_path, command, _nitro(nsm), *anchored)[0] == 0
    for user_data in (None, b"another purpose"):
        code, _, err = _cli(capsys, tmp_path, command, _nitro(nsm, user_data), *anchored)
        assert code == 1 and "does not say it carries the session key (user_data)" in err, err


def test_verify_wallet_checks_the_owners_wallet_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unattested = ("--accept-unattested",)
    code, out, _ = _cli(capsys, tmp_path, "verify-wallet", _unattested(), *unattested)
    assert code == 0 and "wallet w1 with agent key" in out
    code, _, err = _cli(capsys, tmp_path, "verify-wallet", _unattested(), *unattested, wallet="w2")
    assert code == 1 and "the answer is for wallet 'w1', not 'w2'" in err, err
    # A wallet the parent provisioned straight at an old enclave, its id painting "w1" on the terminal.
    hostile = _created("w2\x1b[1D1")
    code, out, err = _cli(capsys, tmp_path, "verify-wallet", _unattested(), *unattested, answer=hostile)
    assert code == 1 and out == "" and "\x1b" not in err and "not 'w1'" in err, err
    code, _, err = _cli(capsys, tmp_path, "verify-wallet", _unattested(), *unattested, wallet="w1\x1b[2K")
    assert code == 2 and "--wallet-id is not a wallet id" in err, err
    with pytest.raises(SystemExit):  # required: the owner names the wallet, the answer does not
        main(["owner", "verify-wallet", "--created", str(tmp_path / "answer.json"), "--attestation",
              str(tmp_path / "attestation.json"), "--owner-public-key", str(OWNER), "--accept-unattested"])  # fmt: skip
    assert "the following arguments are required: --wallet-id" in capsys.readouterr().err


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("which", ["answer", "attestation"])
def test_a_file_nested_too_deeply_is_bad_input(
    command: str, which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    files: dict[str, Any] = {"attestation": _unattested(), "answer": None, which: deep}
    code, out, err = _cli(
        capsys, tmp_path, command, files["attestation"], "--accept-unattested", answer=files["answer"]
    )
    assert (code, out) == (2, "") and "not JSON (or nested too deeply)" in err, err
