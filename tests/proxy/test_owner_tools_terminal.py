"""The owner's tools write what a taken-over parent answers without letting it drive the terminal (security review,
F2): ``waiaas owner call`` (an OSC 52 clipboard write, a carriage return over the line) and ``check-multisig
--url`` (a check id that erases the line). The parent is an httpx MockTransport answering chosen bytes; the CLI,
from ``main``, is the real one. Each case wrote the control characters through before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from policies.cli import main

CLIP = "d2FpYWFzIG93bmVyIGFwcHJvdmUgLS13YWxsZXQgdzEgLS10cmFuc2FjdGlvbiBFVklM"  # a command line, base64
REAL_CLIENT = httpx.Client
HOSTILE_CHECK = {"id": "multisig.threshold\x1b[2K\r", "subject": "x\x9b1A", "ok": False, "seen": "1", "expected": "2"}


def _parent(answers: dict[str, httpx.Response], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``httpx.Client`` the CLI makes talks to a parent that answers ``answers[path]``."""

    def handle(request: httpx.Request) -> httpx.Response:
        return answers[request.url.path]

    monkeypatch.setattr("httpx.Client", lambda **_: REAL_CLIENT(transport=httpx.MockTransport(handle)))


def _run(capsys: pytest.CaptureFixture[str], keypair: tuple[Path, Ed25519PrivateKey], *argv: str) -> Any:
    code = main(["owner", "--keypair", str(keypair[0]), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _controls(text: str) -> list[str]:
    return [c for c in text if not c.isprintable() and c != "\n"]


def test_owner_call_reserializes_a_json_answer(
    keypair: tuple[Path, Ed25519PrivateKey], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    body = b'{"approvals": [{"note": "ok\\u001b[2K\\u009b"}], "x": "Z\xc3\xbcrich"}\x1b]52;c;' + CLIP.encode() + b"\x07"
    _parent({"/v1/wallets/w1/approvals": httpx.Response(200, content=body[: body.index(b"\x1b]52")])}, monkeypatch)
    code, out, _ = _run(capsys, keypair, "call", "--url", "https://p", "GET", "/v1/wallets/w1/approvals")
    assert code == 0 and _controls(out) == [], repr(out)
    assert json.loads(out) == {"approvals": [{"note": "ok\x1b[2K\x9b"}], "x": "Zürich"}  # the same value, escaped
    # Not JSON (trailing OSC 52): each line shown with its control characters escaped.
    _parent({"/v1/wallets/w1/approvals": httpx.Response(200, content=body + b"\r\nsecond line")}, monkeypatch)
    code, out, _ = _run(capsys, keypair, "call", "--url", "https://p", "GET", "/v1/wallets/w1/approvals")
    assert code == 0 and _controls(out) == [], repr(out)
    assert f"\\x1b]52;c;{CLIP}\\x07\\x0d\n" in out and out.endswith("second line\n")


def test_owner_call_refused_answer_is_escaped_too(
    keypair: tuple[Path, Ed25519PrivateKey], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _parent({"/v1/wallets/w1/tokens": httpx.Response(401, content=b"denied\x1b[1A\x1b[2K")}, monkeypatch)
    code, out, _ = _run(capsys, keypair, "call", "--url", "https://p", "POST", "/v1/wallets/w1/tokens")
    assert code == 1 and out == "denied\\x1b[1A\\x1b[2K\n"


def test_check_multisig_url_escapes_the_parents_check_ids(
    keypair: tuple[Path, Ed25519PrivateKey], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    report = {"wallet_id": "w1", "multisig": "m", "conforms": False, "checks": [HOSTILE_CHECK]}
    _parent({"/v1/wallets/w1/multisig": httpx.Response(200, json=report)}, monkeypatch)
    code, out, err = _run(capsys, keypair, "check-multisig", "--url", "https://p", "--wallet", "w1")
    assert code == 1 and _controls(out) == [] and _controls(err) == [], (out, err)
    assert "owner check-multisig: failed: multisig.threshold\\x1b[2K\\x0d (x\\x9b1A): seen 1; expected 2\n" in err
    assert json.loads(out)["checks"] == [HOSTILE_CHECK]


def test_check_multisig_url_answer_nested_too_deeply_is_no_report(
    keypair: tuple[Path, Ed25519PrivateKey], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An answer nested deeper than the parser goes is shown as text and is not a report (exit 1), not a crash."""
    deep = b"[" * 5000 + b"]" * 5000
    _parent({"/v1/wallets/w1/multisig": httpx.Response(200, content=deep)}, monkeypatch)
    code, out, _ = _run(capsys, keypair, "check-multisig", "--url", "https://p", "--wallet", "w1")
    assert code == 1 and out.startswith("[[[")
