"""``waiaas owner verify-candidate`` and :func:`parent_proxy.agent_key_receipts.verify_candidate_answer`: before the
owner puts a candidate agent key on chain, the candidate answer's receipt must be signed by the attested session
key and state that the enclave made this candidate to replace this wallet's agent key for this owner key.
End to end through the API with the development NSM (mode nitro) and mode none; then each way an answer is wrong."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, TypedDict

import pytest
from solders.pubkey import Pubkey
from solders.signature import Signature

from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from enclave_app.receipts import AgentKeyReceipt, SessionKey
from policies.cli import main
from tests.proxy.api_harness import running_harness
from tests.proxy.rotation_requests import agent_key_path, multisig_wallet

NONCE = "ab" * 32
PCR0 = bytes([9]) * 48
OWNER, AGENT, CANDIDATE = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
SESSION = SessionKey(bytes(range(32)))
UNATTESTED = {"document": None, "mode": "none", "reason": "test", "enclave_state": "ready",
              "session_public_key": str(Pubkey.from_bytes(SESSION.public_key))}  # fmt: skip


class Expected(TypedDict, total=False):
    """What the owner expects, as `_cli` takes it: the wallet, the agent key and the owner key given."""

    wallet: str
    agent: str
    owner: str


def _cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, answer: dict[str, Any], attestation: dict[str, Any],
         *, wallet: str = "w1", agent: str = str(AGENT), owner: str = str(OWNER),
         extra: tuple[str, ...] = ("--accept-unattested",)) -> tuple[int, str, str]:  # fmt: skip
    (tmp_path / "candidate.json").write_text(json.dumps(answer))
    (tmp_path / "attestation.json").write_text(json.dumps(attestation))
    code = main(["owner", "verify-candidate", "--candidate", str(tmp_path / "candidate.json"),
                 "--attestation", str(tmp_path / "attestation.json"), "--wallet-id", wallet, "--agent-key", agent,
                 "--owner-public-key", owner, *extra])  # fmt: skip
    out, err = capsys.readouterr()
    return code, out, err


def _answer(session: SessionKey = SESSION, *, purpose: str = "agent_key_candidate", wallet_id: str = "w1",
            agent: Pubkey = AGENT, candidate: Pubkey = CANDIDATE, owner: Pubkey = OWNER,
            message_hash: bytes | None = None) -> dict[str, Any]:  # fmt: skip
    """A candidate answer for w1 / AGENT / CANDIDATE whose receipt states the given values."""
    receipt, signature = session.sign_agent_key(
        AgentKeyReceipt(purpose, wallet_id, bytes(agent), bytes(candidate), bytes(owner), message_hash, 1)
    )
    return {"wallet_id": "w1", "agent_public_key": str(AGENT), "candidate_public_key": str(CANDIDATE),
            "receipt": {"receipt": base64.b64encode(receipt).decode(),
                        "signature": str(Signature.from_bytes(signature))}}  # fmt: skip


@pytest.mark.parametrize("attestation", ["nitro", "none"])
def test_a_real_candidate_verifies(attestation: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nsm = UnsafeDevelopmentNsm(pcrs={0: PCR0}) if attestation == "nitro" else None
    for h in running_harness(tmp_path, attestation=attestation, nsm=nsm):
        multisig_wallet(h)
        made = h.owner_call("POST", agent_key_path(h, "/candidate"))
        assert made.status_code == 201, made.text
        attested = h.client.get(f"/v1/attestation?nonce={NONCE}").json()
        if nsm is not None:
            (tmp_path / "root.pem").write_bytes(nsm.root_certificate_pem)
            trust: tuple[str, ...] = ("--root-pem", str(tmp_path / "root.pem"), "--pcr", f"0={PCR0.hex()}",
                                      "--nonce", NONCE)  # fmt: skip
        else:
            trust = ("--accept-unattested",)
        keys = {"wallet": h.wallet_id, "agent": str(h.agent), "owner": str(h.owner_pub)}
        code, out, err = _cli(capsys, tmp_path, made.json(), attested, **keys, extra=trust)
        assert code == 0, err
        assert f"candidate agent key {made.json()['candidate_public_key']} to replace {h.agent}" in out
        assert ("proves nothing" in err) == (attestation == "none")
        # Another owner key than the wallet's: the parent substituted it, or the owner mistyped.
        code, _, err = _cli(capsys, tmp_path, made.json(), attested, **{**keys, "owner": str(Pubkey.new_unique())},
                            extra=trust)  # fmt: skip
        assert code == 1 and "names another owner public key" in err and "Do not add the candidate" in err
        if nsm is not None:  # the attestation of another nonce
            code, _, err = _cli(capsys, tmp_path, made.json(), attested, **keys, extra=(*trust[:4], "--nonce", "00"))
            assert code == 1 and "attestation document refused" in err


@pytest.mark.parametrize(
    ("answer", "expected", "message"),
    [
        (_answer(), {}, None),
        (_answer(owner=Pubkey.new_unique()), {}, "names another owner public key"),
        (_answer(candidate=Pubkey.new_unique()), {}, "names another new agent public key"),
        (_answer(agent=Pubkey.new_unique()), {}, "names another agent public key"),
        (_answer(wallet_id="w2"), {}, "names another wallet"),
        (_answer(purpose="agent_key_switch"), {}, "purpose 'agent_key_switch', expected 'agent_key_candidate'"),
        (_answer(purpose="agent_key_rotation", message_hash=bytes(32)), {}, "purpose 'agent_key_rotation'"),
        (_answer(SessionKey(bytes(32))), {}, "not signed by the attested enclave session key"),
        (_answer(), {"wallet": "w2"}, "the answer is for wallet 'w1', not 'w2'"),
        (_answer(), {"agent": str(Pubkey.new_unique())}, "replaces another agent key than the one given"),
        ({**_answer(), "receipt": None}, {}, "no readable receipt"),
        ({**_answer(), "receipt": {"receipt": "!", "signature": "x"}}, {}, "no readable receipt"),
        ({**_answer(), "candidate_public_key": 7}, {}, "candidate_public_key missing or not a base58 public key"),
    ],
    ids=["verifies", "owner", "candidate", "agent", "wallet", "switch-receipt", "rotation-receipt", "other-session",
         "expected-wallet", "expected-agent", "no-receipt", "garbled-receipt", "bad-candidate"],
)  # fmt: skip
def test_each_wrong_answer_is_refused(
    answer: dict[str, Any], expected: Expected, message: str | None, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    code, out, err = _cli(capsys, tmp_path, answer, UNATTESTED, **expected)
    if message is None:
        assert code == 0 and f"candidate agent key {CANDIDATE}" in out, err
    else:
        assert code == 1 and message in err and "NOT VERIFIED" in err and out == "", err


def test_bad_input_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "candidate.json").write_text("[1]")
    (tmp_path / "attestation.json").write_text(json.dumps(UNATTESTED))
    code = main(["owner", "verify-candidate", "--candidate", str(tmp_path / "candidate.json"), "--attestation",
                 str(tmp_path / "attestation.json"), "--wallet-id", "w1", "--agent-key", str(AGENT),
                 "--owner-public-key", str(OWNER), "--accept-unattested"])  # fmt: skip
    assert code == 2 and "--candidate: not a JSON object" in capsys.readouterr().err
    code, _, err = _cli(capsys, tmp_path, _answer(), UNATTESTED, extra=("--nonce", "zz"))
    assert code == 2 and "--nonce is not hex" in err


def test_a_candidate_verifies_from_its_own_answer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Asked with ``?nonce=``, the candidate answer carries the attestation of the enclave that made it (the same
    host, in one exchange): ``verify-candidate`` checks it without ``--attestation``; an answer without one and no
    ``--attestation`` is bad input."""
    nsm = UnsafeDevelopmentNsm(pcrs={0: PCR0})
    (tmp_path / "root.pem").write_bytes(nsm.root_certificate_pem)
    trust = ("--root-pem", str(tmp_path / "root.pem"), "--pcr", f"0={PCR0.hex()}", "--nonce", NONCE)
    for h in running_harness(tmp_path, nsm=nsm):
        multisig_wallet(h)
        made = h.owner_call("POST", agent_key_path(h, f"/candidate?nonce={NONCE}"))
        assert made.status_code == 201, made.text
        assert made.json()["attestation"]["mode"] == "nitro"
        (tmp_path / "candidate.json").write_text(json.dumps(made.json()))
        keys = ("--wallet-id", h.wallet_id, "--agent-key", str(h.agent), "--owner-public-key", str(h.owner_pub))
        command = ["owner", "verify-candidate", "--candidate", str(tmp_path / "candidate.json"), *keys, *trust]
        code = main(command)
        out, err = capsys.readouterr()
        assert code == 0 and f"candidate agent key {made.json()['candidate_public_key']}" in out, err
        (tmp_path / "candidate.json").write_text(json.dumps({**made.json(), "attestation": None}))
        code = main(command)
        assert code == 2 and "give --attestation, or an answer that carries" in capsys.readouterr().err
