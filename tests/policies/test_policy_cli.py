"""``waiaas policy check`` and ``waiaas policy validate``: JSON output, and every bad input gives exit 2."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.instruction import Instruction
from solders.pubkey import Pubkey

from policies.cli import main
from policies.programs import MEMO_V2_PROGRAM
from policies.signing import POLICY_PURPOSE, sign_document
from tests.support.builders import lookup_table
from tests.support.policies import EXAMPLE_PATH, MERCHANT, TREASURY, example_policy, owner_public_key
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


def test_check_resolves_lookup_tables_from_the_pins_as_the_signer_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: ``--lookup-table`` contents were decoded with as they were, the policy's pins ignored. The printed
    decision then differed from the signer's, which resolves from the pins alone: a payment through a pinned table
    was denied without ``--lookup-table`` (not resolved), and one through a table the policy does not pin, or whose
    given contents disagree with the pin, was judged on those contents."""
    s = Scenario()
    table = Pubkey.new_unique()
    doc = example_policy()
    doc["rules"]["lookup_tables"] = [{"address": str(table), "addresses": [str(MERCHANT)]}]
    pinned = tmp_path / "pinned.json"
    pinned.write_text(json.dumps(doc))
    tx = _b64(s.v0(s.pay(1_000), tables=[lookup_table(table, [MERCHANT])]))

    def decide(policy: Path, *extra: str) -> dict[str, Any]:
        code, out, _ = _check(capsys, "--policy", str(policy), "--transaction", tx, *extra)
        assert code == 0
        return cast(dict[str, Any], json.loads(out))

    assert decide(pinned)["verdict"] == "allow"
    assert decide(pinned, "--lookup-table", f"{table}={MERCHANT},{TREASURY}")["verdict"] == "allow"
    for policy, given, refusal in [
        (EXAMPLE_PATH, f"{table}={MERCHANT}", "is not pinned"),
        (pinned, f"{table}={TREASURY}", "differ from the owner's pin"),
        (pinned, f"{table}=", "shorter than the owner's pin"),
    ]:
        result = decide(policy, "--lookup-table", given)
        assert result["verdict"] == "deny"
        assert result["reasons"][0]["rule"] == "decode"
        assert refusal in result["reasons"][0]["message"]


HOSTILE = "\x1b]52;c;ZXZpbA==\x07\r\x1b[2Kvalid"
"""An OSC 52 clipboard write, then a carriage return and an erase-line that would paint over the refusal."""
HOSTILE_SHOWN = "\\x1b]52;c;ZXZpbA==\\x07\\x0d\\x1b[2Kvalid"


def _controls(text: str) -> list[str]:
    return [c for c in text if not c.isprintable() and c != "\n"]


@pytest.mark.parametrize("command", ["check", "validate"])
def test_a_crafted_field_name_in_the_policy_file_is_shown_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Before: the refusal quoted the unknown field's name as it was, so a policy handed to the reviewer could
    write their clipboard and paint over the refusal line."""
    doc = example_policy()
    doc["rules"][HOSTILE] = 1
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    tail = ["--policy", str(path), "--transaction", "AA=="] if command == "check" else [str(path)]
    code = main(["policy", command, *tail])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert _controls(err) == []
    assert err == f"waiaas policy {command}: rules.{HOSTILE_SHOWN}: unknown field\n"


def test_a_crafted_policy_file_name_is_shown_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: the file name was quoted as it was (``cannot read``)."""
    code, out, err = _check(capsys, "--policy", str(tmp_path / f"{HOSTILE}.json"), "--transaction", "AA==")
    assert (code, out) == (2, "")
    assert _controls(err) == []
    assert f"{HOSTILE_SHOWN}.json: No such file or directory" in err


def test_a_memo_with_control_sequences_reaches_the_terminal_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    """A transaction carrying terminal control sequences (a memo that clears the screen and writes the clipboard):
    nothing of it reaches the terminal raw. The decision quotes no memo text, and its JSON (``ensure_ascii``) would
    escape it anyway: a guard, this passed before the messages were escaped too."""
    s = Scenario()
    memo = Instruction(MEMO_V2_PROGRAM, f"\x1b[2J{HOSTILE}\x7f\u202e invoice".encode(), [])
    code, out, err = _check(capsys, "--policy", str(EXAMPLE_PATH), "--transaction", _b64(s.legacy(s.pay(1_000), memo)))
    assert code == 0
    assert _controls(out + err) == []
    assert json.loads(out)["verdict"] == "allow"


def test_console_command_is_installed() -> None:
    waiaas = Path(sys.executable).with_name("waiaas")
    result = subprocess.run([str(waiaas), "policy", "validate", str(EXAMPLE_PATH)], capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
