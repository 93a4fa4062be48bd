"""Webhook URLs may carry credentials (userinfo, a token in the path or the query): no log line of the running
proxy shows them, and `redact_url` is the form that logs and audit records may carry instead."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parent_proxy.__main__ import main
from parent_proxy.store.model import OutboxStatus
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.webhook_transport import webhook_client
from parent_proxy.webhook_urls import redact_url
from tests.proxy.webhook_receiver import Receiver, deliver_once, local_client, serving

CREDENTIALS = ("hookuser", "HOOK-PASSWORD", "PATH-TOKEN", "QUERY-TOKEN")
LIBRARY_LOGGERS = ("httpx", "httpcore")  # they log each request's URL at INFO and DEBUG


def credentialed(port: int) -> str:
    return f"http://hookuser:HOOK-PASSWORD@127.0.0.1:{port}/hook/PATH-TOKEN?token=QUERY-TOKEN"


@pytest.fixture
def proxy_logging(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """The logging set-up of ``python -m parent_proxy`` (its first step, before the settings stop it here)."""
    saved = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    assert main({}) == 2 and " is required" in capsys.readouterr().err
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("proxy_logging")
def test_no_log_line_shows_a_webhook_urls_credentials(
    sqlite_store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # the root level the proxy configures
    with serving(Receiver(0)) as receiver:
        with local_client() as client:
            delivered = deliver_once(sqlite_store, credentialed(receiver.port), client, "w1")
        with webhook_client(allow_private=False) as client:  # and a refused one: the refusal is logged
            refused = deliver_once(sqlite_store, credentialed(receiver.port), client, "w2")
    assert not [secret for secret in CREDENTIALS if secret in caplog.text]
    assert delivered[0] == OutboxStatus.DELIVERED and refused[0] == OutboxStatus.PENDING
    assert "delivered" in caplog.text and "webhook destination refused: 127.0.0.1" in caplog.text
    assert {logging.getLogger(name).level for name in LIBRARY_LOGGERS} == {logging.WARNING}


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (
            "https://user:pw@hooks.example.com:8443/services/T0/B0/SECRET?token=abc#frag",
            "https://hooks.example.com:8443",
        ),
        ("https://discord.com/api/webhooks/123/TOKEN", "https://discord.com"),
        ("http://[::1]:9000/x", "http://[::1]:9000"),
        ("http://a@b@host.example/", "http://host.example"),
        ("https://hooks.example.com", "https://hooks.example.com"),
        ("http://[::1/", "<unparseable url>"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@given(st.text())
def test_redact_url_never_raises_and_keeps_only_scheme_host_and_port(text: str) -> None:
    assert not set("@?#") & set(redact_url(text))
