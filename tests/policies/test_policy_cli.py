"""``waiaas policy check`` and ``waiaas policy validate``: JSON output, and every bad input gives exit 2."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from policies.cli import main
from policies.signing import POLICY_PURPOSE, sign_document
from tests.support.policies import EXAMPLE_PATH, example_policy, owner_public_key
from tests.support.scenario import FEE, Scenario

SOL = 1_000_000_000


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["policy", "check", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_check_prints_the_decision(capsys: pytest.CaptureFixture[str]) -> None:
    s = Scenario()
    code, out, _ = _check(capsys, "--policy", str(EXAMPLE_PATH), "--transaction", _b64(s.legacy(s.pay(3 * SOL))))
    result = json.loads(out)
    assert code == 0
    assert result["verdict"] == "escalate"
    assert result["reasons"][0]["rule"] == "limits.sol.per_transaction"
    assert result["reservations"] == [{"asset": "SOL", "amount": str(3 * SOL)}, {"asset": "fees", "amount": str(FEE)}]
    assert result["wallet_keys"] == [str(s.wallet)]  # the fee payer, by default
    assert result["policy"]["source"] == "unsigned document"


def test_check_uses_spent_and_now(capsys: pytest.CaptureFixture[str]) -> None:
    s = Scenario()
    args = ["--policy", str(EXAMPLE_PATH), "--transaction", _b64(s.legacy(s.pay(SOL)))]
    code, out, _ = _check(capsys, *args, "--spent", "SOL:86400=19500000000", "--now", "2026-01-01T00:00:00+00:00")
    assert code == 0
    assert json.loads(out)["verdict"] == "deny"


def test_check_verifies_a_signed_envelope(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    owner = Ed25519PrivateKey.generate()
    path = tmp_path / "signed.json"
    path.write_text(json.dumps(sign_document(POLICY_PURPOSE, example_policy(), owner)))
    s = Scenario()
    tx = _b64(s.legacy(s.pay(1_000)))
    code, out, _ = _check(capsys, "--policy", str(path), "--transaction", tx, "--owner", str(owner_public_key(owner)))
    assert code == 0
    assert json.loads(out)["policy"]["source"] == "envelope signature verified"
    stranger = str(owner_public_key(Ed25519PrivateKey.generate()))
    code, _, err = _check(capsys, "--policy", str(path), "--transaction", tx, "--owner", stranger)
    assert code == 2
    assert "owner signature is invalid" in err


def test_check_reports_decode_failure_as_deny(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _check(capsys, "--policy", str(EXAMPLE_PATH), "--transaction", _b64(b"\x01\x02"))
    assert code == 0
    assert json.loads(out)["reasons"][0]["rule"] == "decode"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--transaction", "not base64!"], "not valid base64"),
        (["--transaction", "AA==", "--now", "yesterday"], "not an ISO 8601 time"),
        (["--transaction", "AA==", "--now", "2026-01-01T00:00:00"], "give a UTC offset"),
        (["--transaction", "AA==", "--spent", "SOL=5"], "expected ASSET:WINDOW_SECONDS=AMOUNT"),
        (["--transaction", "AA==", "--spent", "SOL:60=5"], "has no 60s window for SOL"),
        (["--transaction", "AA==", "--wallet-key", "xyz"], "not a base58 Solana address"),
        (["--transaction", "AA==", "--lookup-table", "abc"], "expected TABLE=ADDR"),
        (["--transaction", "AA==", "--requests", "-1"], "must not be negative"),
        (["--transaction", "AA==", "--owner", "11111111111111111111111111111111"], "not a signed envelope"),
    ],
)
def test_check_bad_input_exits_2(capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    code, out, err = _check(capsys, "--policy", str(EXAMPLE_PATH), *extra)
    assert code == 2
    assert out == ""
    assert message in err


def test_check_bad_policy_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1}')
    code, _, err = _check(capsys, "--policy", str(bad), "--transaction", "AA==")
    assert (code, err.strip()) == (2, "waiaas policy check: rules: required field is missing")
    code, _, err = _check(capsys, "--policy", str(tmp_path / "missing.json"), "--transaction", "AA==")
    assert code == 2
    assert "cannot read" in err


def test_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "validate", str(EXAMPLE_PATH)]) == 0
    assert "valid: wallet demo-wallet, sequence 1" in capsys.readouterr().out
    doc = example_policy()
    doc["rules"]["fees"]["max_compute_unit_limit"] = 2_000_000
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert main(["policy", "validate", str(bad)]) == 2
    assert "rules.fees.max_compute_unit_limit: must be between 0 and 1400000" in capsys.readouterr().err


def test_console_command_is_installed() -> None:
    waiaas = Path(sys.executable).with_name("waiaas")
    result = subprocess.run([str(waiaas), "policy", "validate", str(EXAMPLE_PATH)], capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
