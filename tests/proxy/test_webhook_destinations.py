"""Where webhooks may go (server-side request forgery): the checks when an owner configures a URL, and the
checks on the resolved addresses before each connection, with receivers on 127.0.0.1 standing in for the
internal services a webhook must not reach, and stub resolvers standing in for DNS."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpcore
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from parent_proxy.errors import WebhookError
from parent_proxy.schemas import WebhookBody
from parent_proxy.settings import SettingsError, load_settings
from parent_proxy.store.model import OutboxStatus
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.webhook_transport import Resolver, system_resolver, webhook_client
from parent_proxy.webhook_urls import IPAddress, check_address, check_webhook_url
from tests.proxy.api_harness import provision, running_harness
from tests.proxy.minimal_settings import BASE
from tests.proxy.webhook_receiver import Receiver, deliver_once, serving
from tests.support.tls_contexts import tls_material

ALLOW_HINT = "not globally routable (set WAIAAS_WEBHOOK_ALLOW_PRIVATE=true to allow private receivers)"


def stub_resolver(answers: dict[str, list[str]]) -> Resolver:
    def resolve(host: str, port: int, timeout: float) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in answers[host]]

    return resolve


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving(Receiver(0)) as server:
        yield server


# -- the address rule -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "private_ok", "always"),
    [
        ("8.8.8.8", True, True),
        ("2606:4700::1111", True, True),
        ("2002:808:808::1", True, True),  # 6to4 around 8.8.8.8
        ("127.0.0.1", True, False),
        ("10.0.0.5", True, False),
        ("192.168.1.10", True, False),
        ("100.64.0.1", True, False),  # shared address space (carrier NAT)
        ("::1", True, False),
        ("fd12:3456::1", True, False),  # unique-local
        ("::ffff:127.0.0.1", True, False),  # IPv4-mapped loopback
        ("2002:7f00:1::", True, False),  # 6to4 around 127.0.0.1
        ("169.254.169.254", False, False),  # instance metadata (link-local)
        ("fd00:ec2::254", False, False),  # instance metadata over IPv6 (unique-local, refused by name)
        ("100.100.100.200", False, False),  # Alibaba Cloud metadata
        ("::ffff:169.254.169.254", False, False),
        ("2002:a9fe:a9fe::", False, False),  # 6to4 around 169.254.169.254
        ("64:ff9b::a9fe:a9fe", False, False),  # NAT64 around 169.254.169.254
        ("169.254.1.1", False, False),
        ("fe80::1", False, False),
        ("0.0.0.0", False, False),  # noqa: S104 (an address refused, not bound)
        ("::", False, False),
        ("224.0.0.1", False, False),  # multicast: Python 3.11 calls it global
        ("ff02::1", False, False),
        ("240.0.0.1", False, False),
        ("255.255.255.255", False, False),
        # Not globally routable, although Python 3.11's is_global says they are (review finding):
        ("fec0::1", True, False),  # site-local fec0::/10, deprecated (RFC 3879)
        ("feff::1", True, False),
        ("3fff::1", True, False),  # documentation 3fff::/20 (RFC 9637), like 2001:db8::/32
        ("192.0.0.8", True, False),  # IPv4 dummy address: IETF protocol assignments 192.0.0.0/24 (RFC 6890)
        ("192.0.0.9", True, True),  # PCP anycast: the registry's one globally reachable pair in 192.0.0.0/24
        ("168.63.129.16", False, False),  # Azure WireServer (host metadata, a public address)
        ("::ffff:168.63.129.16", False, False),
    ],
)
def test_address_rule(address: str, private_ok: bool, always: bool) -> None:
    ip = ipaddress.ip_address(address)
    for allow_private, allowed in ((True, private_ok), (False, always)):
        if allowed:
            check_address(ip, allow_private=allow_private)
        else:
            with pytest.raises(WebhookError, match=f"^webhook destination refused: {re.escape(str(ip))}[ (]"):
                check_address(ip, allow_private=allow_private)


# -- at configuration ---------------------------------------------------------------------------------------------
ACCEPTED = [
    "https://hooks.example.com/waiaas",
    "https://user:pass@hooks.example.com/x?token=1",
    "http://127.0.0.1:9000/hook",  # private destinations are judged at delivery, under the operator's setting
    "http://10.0.0.5/",
    "http://localhost:8080/",
    "http://[2606:4700::1111]/",
    "https://xn--bcher-kva.example/",
]
REFUSED = [
    ("https://hooks.example:abc/", "not a URL that can be sent to"),
    ("http://a..b/", "must be a DNS name or an IP address"),
    ("http://ex%41mple.com/", "must be a DNS name or an IP address"),
    ("http://" + "a" * 64 + ".example/", "must be a DNS name or an IP address"),
    ("http://:80/", "the host is missing"),
    ("http://hooks.example.com:0/", "port 0 is outside 1-65535"),
    ("http://hooks.example.com:99999/", "port 99999 is outside 1-65535"),
    ("http://2130706433/", "a numeric host must be a dotted-quad IPv4 address"),
    ("http://0x7f000001/", "a numeric host must be a dotted-quad IPv4 address"),
    ("http://127.1/", "a numeric host must be a dotted-quad IPv4 address"),
    ("http://1.2.3.4.5/", "a numeric host must be a dotted-quad IPv4 address"),
    ("http://169.254.169.254/latest/meta-data/", "the host 169.254.169.254 is a cloud metadata address"),
    ("http://[fd00:ec2::254]/latest/api/token", "the host fd00:ec2::254 is a cloud metadata address"),
    ("http://[::ffff:169.254.169.254]/", r"the host ::ffff:a9fe:a9fe \(169.254.169.254\) is a cloud metadata address"),
    ("http://0.0.0.0:8000/", "the host 0.0.0.0 is unspecified"),
    ("http://[::]/", "the host :: is unspecified"),
    ("http://224.0.0.1/", "the host 224.0.0.1 is multicast"),
    ("http://[fe80::1]/", "the host fe80::1 is link-local"),
    ("http://[::1%25eth0]/", "an IPv6 zone index is not allowed"),
]


@pytest.mark.parametrize("url", ACCEPTED)
def test_configurable_urls(url: str) -> None:
    WebhookBody(url=url, secret="c" * 44)


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_urls_refused_at_configuration(url: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason) as caught:
        WebhookBody(url=url, secret="c" * 44)
    assert url not in str(caught.value.errors(include_input=False, include_url=False))


def test_the_api_refuses_such_a_url_and_changes_nothing(tmp_path: Path) -> None:
    secret = base64.b64encode(b"s" * 32).decode()
    refused = dict(REFUSED)
    for h in running_harness(tmp_path):
        provision(h)
        audit_before = h.audit_events()
        for url in ("https://hooks.example:abc/", "http://169.254.169.254/latest/meta-data/"):
            response = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/webhook", {"url": url, "secret": secret})
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "invalid_request" and refused[url] in response.text
            assert url not in response.text and secret not in response.text
        assert h.store.get_webhook(h.wallet_id) is None and h.audit_events() == audit_before


# -- at delivery ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("localhost", "127.0.0.1"),  # the system resolver
        ("2130706433", "127.0.0.1"),  # inet_aton's decimal form, which the store still accepts
        ("0x7f000001", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1 (127.0.0.1)"),
    ],
)
def test_loopback_is_refused_unless_private_destinations_are_allowed(
    sqlite_store: SqliteStore, receiver: Receiver, host: str, refused: str
) -> None:
    with webhook_client(allow_private=False) as client:
        status, errors = deliver_once(sqlite_store, f"http://{host}:{receiver.port}/hook", client)
    assert (status, errors) == (OutboxStatus.PENDING, [f"webhook destination refused: {refused} is {ALLOW_HINT}"])
    assert receiver.requests == 0


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("metadata.test", "169.254.169.254 is a cloud metadata address"),
        ("imds6.test", "fd00:ec2::254 is a cloud metadata address"),
        ("mapped.test", "::ffff:a9fe:a9fe (169.254.169.254) is a cloud metadata address"),
        ("mixed.test", "169.254.169.254 is a cloud metadata address"),  # one bad answer refuses the name
        ("0.0.0.0", "0.0.0.0 is unspecified"),  # noqa: S104 (connecting to it reaches this host)
    ],
)
def test_metadata_and_unspecified_addresses_are_refused_even_when_private_ones_are_allowed(
    sqlite_store: SqliteStore, receiver: Receiver, host: str, refused: str
) -> None:
    resolver = stub_resolver(
        {
            "metadata.test": ["169.254.169.254"],
            "imds6.test": ["fd00:ec2::254"],
            "mapped.test": ["::ffff:169.254.169.254"],
            "mixed.test": ["127.0.0.1", "169.254.169.254"],
        }
    )
    with webhook_client(allow_private=True, resolver=resolver) as client:
        status, errors = deliver_once(sqlite_store, f"http://{host}:{receiver.port}/hook", client)
    assert (status, errors) == (OutboxStatus.PENDING, [f"webhook destination refused: {refused}"])
    assert receiver.requests == 0


def test_the_connection_goes_to_the_address_that_was_checked(
    sqlite_store: SqliteStore, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name's first answer is allowed, every later one is the metadata service. The client
    must resolve once and connect to what it checked; the Host header keeps the name."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":
            lookups.append(host)
            host = "127.0.0.1" if len(lookups) == 1 else "169.254.169.254"
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with webhook_client(allow_private=True, deadline_seconds=2.0) as client:
        status, errors = deliver_once(sqlite_store, f"http://rebind.test:{receiver.port}/hook", client)
    assert (status, errors) == (OutboxStatus.DELIVERED, [None])
    assert lookups == ["rebind.test"] and receiver.hosts == [f"rebind.test:{receiver.port}"]


def test_tls_names_the_url_host_while_connecting_to_the_checked_address(
    sqlite_store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_context, _ = tls_material(tmp_path, "hooks.test")
    names: list[str | None] = []

    def record_sni(_sock: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        names.append(name)

    server_context.sni_callback = record_sni
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # the test CA, as an operator would add theirs
    resolver = stub_resolver({"hooks.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    with serving(Receiver(0)) as receiver:
        receiver.socket = server_context.wrap_socket(receiver.socket, server_side=True)
        with webhook_client(allow_private=True, resolver=resolver) as client:
            good = deliver_once(sqlite_store, f"https://hooks.test:{receiver.port}/hook", client, "w1")
            wrong = deliver_once(sqlite_store, f"https://other.test:{receiver.port}/hook", client, "w2")
    assert good == (OutboxStatus.DELIVERED, [None])
    assert names[0] == "hooks.test" and receiver.hosts == [f"hooks.test:{receiver.port}"]
    assert wrong == (OutboxStatus.PENDING, ["transport error: ConnectError"])  # the certificate is not other.test's
    assert receiver.requests == 1


def test_redirects_are_not_followed(sqlite_store: SqliteStore, receiver: Receiver) -> None:
    with serving(Receiver(0, redirect_to=receiver.url)) as redirector, webhook_client(allow_private=True) as client:
        status, errors = deliver_once(sqlite_store, redirector.url, client)
    assert (status, errors) == (OutboxStatus.PENDING, ["HTTP 307"])
    assert redirector.requests == 1 and receiver.requests == 0


def test_proxy_environment_variables_are_ignored(
    sqlite_store: SqliteStore, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy would pick the address itself, past the checks."""
    with serving(Receiver(0)) as proxy:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with webhook_client(allow_private=True) as client:
            status, _ = deliver_once(sqlite_store, receiver.url, client)
    assert status == OutboxStatus.DELIVERED and receiver.requests == 1 and proxy.requests == 0


def test_a_slow_name_lookup_counts_against_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The resolver gives up when its time is up, while the lookup is still under way (the lookup answers only once
    the test lets it, or after 10 s): a resolver that waited for the lookup would not raise a timeout."""
    answer, ended = threading.Event(), threading.Event()

    def slow(*args: Any, **kwargs: Any) -> Any:
        answer.wait(10)
        ended.set()
        raise socket.gaierror("late")

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    try:
        with pytest.raises(httpcore.ConnectTimeout, match="name resolution timed out"):
            system_resolver("slow.test", 443, 0.2)
        assert not ended.is_set()
    finally:
        answer.set()  # the abandoned lookup ends (its thread is a daemon)


def test_a_failed_name_lookup_is_a_connect_error() -> None:
    with pytest.raises(httpcore.ConnectError, match="name resolution failed: UnicodeError"):
        system_resolver("a..b", 443, 5.0)


# -- the operator's setting ---------------------------------------------------------------------------------------
def test_private_destinations_are_off_unless_the_operator_allows_them() -> None:
    assert load_settings(BASE).webhook_allow_private is False
    assert load_settings({**BASE, "WAIAAS_WEBHOOK_ALLOW_PRIVATE": "true"}).webhook_allow_private is True
    assert load_settings({**BASE, "WAIAAS_WEBHOOK_ALLOW_PRIVATE": "false"}).webhook_allow_private is False
    with pytest.raises(SettingsError, match=r"^WAIAAS_WEBHOOK_ALLOW_PRIVATE must be true or false \(any"):
        load_settings({**BASE, "WAIAAS_WEBHOOK_ALLOW_PRIVATE": "1"})


@given(st.from_regex(r"\Ahttps?://[\x21-\x7e]{1,200}\Z"))
def test_any_url_the_schema_pattern_admits_is_accepted_or_refused_cleanly(url: str) -> None:
    """The validator never raises anything but `WebhookError` (which the request model turns into a 422)."""
    with contextlib.suppress(WebhookError):
        check_webhook_url(url)
