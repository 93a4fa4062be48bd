"""A ``WAIAAS_PUBLIC_ORIGINS`` that does not list the origin the owners use: the caller still gets the answer of a bad
signature, the operator gets a warning naming the audience (`parent_proxy.owner_audience_log`), and ``waiaas owner``
a hint line. Before: every owner request was refused as a forged signature and nothing, in the log or at the owner's
end, said that the configuration could be the cause. The real proxy and enclave answer."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.signature import Signature

from parent_proxy.owner_audience_log import MAX_AUDIENCES_PER_WINDOW, WINDOW_SECONDS, ForeignAudienceLog
from parent_proxy.owner_auth import (
    AUDIENCE_HEADER,
    KEY_HEADER,
    NONCE_HEADER,
    OWNER_REQUEST_PURPOSE,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)
from parent_proxy.owner_signers import write_keypair_file
from policies.cli import main
from policies.signing import signing_payload
from tests.proxy.api_harness import Harness, provision, running_harness
from tests.proxy.hooked_client import Borrowed
from tests.support.policies import owner_public_key

USED = "https://wallets.example.com"
"""The origin the owners reach the proxy at."""
CONFIGURED = frozenset({"https://waiaas-alb-123.us-east-1.elb.amazonaws.com"})
"""What the operator listed instead (the load balancer's name)."""
LOGGER = "parent_proxy.owner_audience_log"
BODY = {"error": {"code": "owner_signature_invalid", "message": "owner signature is invalid"}}


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    generator = running_harness(tmp_path, origin=USED)
    harness = next(generator)
    provision(harness)
    harness.services.public_origins = CONFIGURED
    yield harness
    next(generator, None)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def _signed_for(h: Harness, audience: str, path: str, key: Ed25519PrivateKey) -> dict[str, str]:
    """Owner headers signed by ``key`` for ``audience`` as given (the CLI signs only normal forms)."""
    timestamp, nonce = int(time.time()), secrets.token_hex(16)
    form = {"audience": audience, "method": "POST", "path": path,
            "body_sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # of no body
            "timestamp": timestamp, "nonce": nonce}  # fmt: skip
    signature = key.sign(signing_payload(OWNER_REQUEST_PURPOSE, form))
    return {KEY_HEADER: str(owner_public_key(key)), TIMESTAMP_HEADER: str(timestamp), NONCE_HEADER: nonce,
            AUDIENCE_HEADER: audience, SIGNATURE_HEADER: str(Signature.from_bytes(signature))}  # fmt: skip


def test_an_owners_request_for_an_unlisted_origin_is_refused_as_before_and_logged_once(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = f"/v1/wallets/{h.wallet_id}/tokens"
    answers = [h.owner_call("POST", path) for _ in range(3)]
    assert all((a.status_code, a.json()) == (401, BODY) for a in answers)  # the caller learns nothing new
    warned = _warnings(caplog)
    assert len(warned) == 1, warned  # one warning per audience, not one per request
    assert f"for audience {USED} was refused" in warned[0] and "not among the 1 in WAIAAS_PUBLIC_ORIGINS" in warned[0]
    headers = _signed_for(h, USED, path, h.owner)
    for text in (str(h.owner_pub), headers[SIGNATURE_HEADER], headers[NONCE_HEADER]):
        assert all(text not in r.getMessage() for r in caplog.records)  # no key, signature or nonce in any line
    assert h.audit_events().count("token.issued") == 1  # provision's only


def test_only_an_owners_own_request_is_logged(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """Whoever is not an owner writes nothing to the log: a bad signature, a key the wallet does not have, a wallet
    that does not exist; nor does an audience outside the normal form (it could carry text meant for the log). An
    owner's request signed for the origin does."""
    caplog.set_level(logging.DEBUG)
    path = f"/v1/wallets/{h.wallet_id}/tokens"
    stranger = Ed25519PrivateKey.generate()
    forged = {**_signed_for(h, "https://evil.example", path, h.owner), AUDIENCE_HEADER: "https://other.example"}
    for headers, sent_to in (
        (forged, path),
        (_signed_for(h, "https://stranger.example", path, stranger), path),
        (_signed_for(h, "https://nowallet.example", "/v1/wallets/nope/tokens", h.owner), "/v1/wallets/nope/tokens"),
        (_signed_for(h, "https://forged.example WARNING all is well", path, h.owner), path),
        (_signed_for(h, "HTTPS://Wallets.Example.com", path, h.owner), path),
    ):
        answer = h.client.post(sent_to, headers=headers)
        assert (answer.status_code, answer.json()) == (401, BODY), answer.text
    assert _warnings(caplog) == []
    assert h.client.post(path, headers=_signed_for(h, USED, path, h.owner)).status_code == 401
    assert len(_warnings(caplog)) == 1


def test_the_warnings_are_bounded() -> None:
    """One warning per audience per window, at most `MAX_AUDIENCES_PER_WINDOW` audiences named per window, then one
    line for the rest; a new window names them again."""
    now = [0.0]
    log = ForeignAudienceLog(clock=lambda: now[0])
    records: list[logging.LogRecord] = []

    class Recording(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Recording()
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    try:
        for i in range(MAX_AUDIENCES_PER_WINDOW + 5):
            log.note(f"https://a{i}.example", 2)
            log.note(f"https://a{i}.example", 2)
        messages = [r.getMessage() for r in records]
        assert len(messages) == MAX_AUDIENCES_PER_WINDOW + 1, messages
        assert "https://a0.example" in messages[0] and "not among the 2 in" in messages[0]
        assert "further audiences" in messages[-1] and "a32.example" not in "".join(messages)
        now[0] = WINDOW_SECONDS - 1
        log.note("https://a0.example", 2)
        log.note("https://a40.example", 2)
        assert len(records) == MAX_AUDIENCES_PER_WINDOW + 1  # still the same window
        now[0] = WINDOW_SECONDS
        log.note("https://a0.example", 2)
        assert len(records) == MAX_AUDIENCES_PER_WINDOW + 2 and "https://a0.example" in records[-1].getMessage()
    finally:
        logger.removeHandler(handler)


def _cli(capsys: pytest.CaptureFixture[str], h: Harness, tmp_path: Path, url: str, path: str) -> tuple[int, str, str]:
    key_file = tmp_path / "owner.json"
    if not key_file.exists():
        write_keypair_file(key_file, h.owner)
    code = main(["owner", "--keypair", str(key_file), "call", "--url", url, "POST", path])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_owner_cli_adds_a_hint_to_a_refused_signature(
    h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("httpx.Client", lambda **_: Borrowed(h.client))
    path = f"/v1/wallets/{h.wallet_id}/tokens"
    code, out, err = _cli(capsys, h, tmp_path, f"{USED}/", path)
    assert code == 1 and '"owner_signature_invalid"' in out
    assert f"hint: check that --url's origin ({USED}) is listed in the deployment's WAIAAS_PUBLIC_ORIGINS" in err
    assert "and that the key is the wallet's owner key" in err
    h.services.public_origins = frozenset({USED})
    code, _, err = _cli(capsys, h, tmp_path, USED, path)
    assert code == 0 and "hint:" not in err
    code, out, err = _cli(capsys, h, tmp_path, USED, "/v1/wallets/nope/tokens")  # refused for another reason: a 401
    assert code == 1 and '"owner_signature_invalid"' in out and "hint: check that --url's origin" in err
    code, out, err = _cli(capsys, h, tmp_path, USED, "/v1/wallets/w1/nothing-here")
    assert code == 1 and "hint:" not in err, out
