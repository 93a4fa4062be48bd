"""The audience's normal form (`parent_proxy.owner_auth.normalize_origin`, `url_origin`): one function both sides
use, the proxy on ``WAIAAS_PUBLIC_ORIGINS`` and the owner's tools on the URL the owner gave; and the audience in the
signed bytes."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from parent_proxy.api_errors import ApiError
from parent_proxy.owner_auth import (
    AUDIENCE_HEADER,
    OriginError,
    OwnerRequest,
    normalize_origin,
    owner_request_headers,
    signed_request_headers,
    url_origin,
    verify_owner_request,
)
from tests.support.policies import owner_public_key


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("https://wallets.example.com", "https://wallets.example.com"),
        ("HTTPS://Wallets.Example.COM", "https://wallets.example.com"),
        ("https://wallets.example.com:443", "https://wallets.example.com"),
        ("https://wallets.example.com/", "https://wallets.example.com"),
        ("https://wallets.example.com:8443", "https://wallets.example.com:8443"),
        ("https://wallets.example.com:80", "https://wallets.example.com:80"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:80", "http://localhost"),
        ("http://LOCALHOST:08080/", "http://localhost:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://[0:0:0:0:0:0:0:1]", "http://[::1]"),
        ("https://[2001:DB8::1]:443", "https://[2001:db8::1]"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
    ],
)
def test_the_normal_form(text: str, normal: str) -> None:
    assert normalize_origin(text) == normal
    assert normalize_origin(normal) == normal


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is not scheme://host"),
        ("wallets.example.com", "is not scheme://host"),
        ("//wallets.example.com", "is not scheme://host"),
        ("https://", "is not scheme://host"),
        ("https://wallets.example.com/v1", "is not scheme://host"),
        ("https://wallets.example.com?x=1", "is not scheme://host"),
        ("https://wallets.example.com#f", "is not scheme://host"),
        ("https://user:secret@wallets.example.com", "is not scheme://host"),
        (" https://wallets.example.com", "is not scheme://host"),
        ("https://wallets.example.com ", "is not scheme://host"),
        ("https://wallets .example.com", "is not scheme://host"),
        ("https://bücher.example", "is not scheme://host"),
        ("https://wallets.example.com:", "is not scheme://host"),
        ("https://wallets.example.com:123456", "is not scheme://host"),
        ("https://[fe80::1%eth0]", "is not scheme://host"),
        ("https://" + "a" * 300, "is not scheme://host"),
        ("ftp://wallets.example.com", "must be an http:// or https:// origin"),
        ("wss://wallets.example.com", "must be an http:// or https:// origin"),
        ("https://wallets.example.com:0", "port outside 1-65535"),
        ("https://wallets.example.com:65536", "port outside 1-65535"),
        ("https://wallets.example.com.", "neither a DNS name nor an IP address"),
        ("https://-wallets.example.com", "neither a DNS name nor an IP address"),
        ("https://wallets..example.com", "neither a DNS name nor an IP address"),
        ("https://" + "a" * 64 + ".example", "neither a DNS name nor an IP address"),
        ("http://127.0.0.256", "not a valid IP address"),
        ("http://127.000.0.1", "not a valid IP address"),
        ("http://8080", "not a valid IP address"),
        ("http://[1::2::3]", "not a valid IP address"),
    ],
)
def test_refused_origins(text: str, reason: str) -> None:
    with pytest.raises(OriginError, match=reason):
        normalize_origin(text)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://wallets.example.com", "https://wallets.example.com"),
        ("HTTPS://Wallets.Example.com:443/", "https://wallets.example.com"),
        ("https://wallets.example.com/prefix/v1?x=1#f", "https://wallets.example.com"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
    ],
)
def test_a_urls_origin(url: str, origin: str) -> None:
    assert url_origin(url) == origin


@pytest.mark.parametrize("url", ["wallets.example.com/v1", "https://user@wallets.example.com/", "ftp://x/", "/v1"])
def test_a_url_without_a_usable_origin_is_refused(url: str) -> None:
    with pytest.raises(OriginError):
        url_origin(url)


_LABEL = st.from_regex(r"[a-zA-Z][a-zA-Z0-9-]{0,10}[a-zA-Z0-9]", fullmatch=True)


@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "Https"]),
    labels=st.lists(_LABEL, min_size=1, max_size=4),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    slash=st.booleans(),
)
def test_normalizing_is_idempotent_and_keeps_what_it_names(
    scheme: str, labels: list[str], port: int | None, slash: bool
) -> None:
    text = f"{scheme}://{'.'.join(labels)}{'' if port is None else f':{port}'}{'/' if slash else ''}"
    normal = normalize_origin(text)
    assert normalize_origin(normal) == normal
    assert url_origin(text + "/some/path") == normal
    lowered = scheme.lower()
    default = {"http": 80, "https": 443}[lowered]
    expected_port = "" if port in (None, default) else f":{port}"
    assert normal == f"{lowered}://{'.'.join(labels).lower()}{expected_port}"


def test_an_owner_request_refuses_an_audience_not_in_normal_form() -> None:
    for audience in ("https://Wallets.example.com", "https://wallets.example.com:443", "https://x.example/", ""):
        with pytest.raises(OriginError):
            OwnerRequest("GET", "/v1/wallets/w1/approvals", b"", 1_700_000_000, "n" * 32, audience=audience)


def test_the_audience_is_part_of_the_signed_bytes() -> None:
    """Two requests alike but for their audience sign different bytes, and each form names its audience."""
    a = OwnerRequest("POST", "/v1/wallets/w1/tokens", b"", 1_700_000_000, "n" * 32, audience="https://a.example")
    b = OwnerRequest("POST", "/v1/wallets/w1/tokens", b"", 1_700_000_000, "n" * 32, audience="https://b.example")
    assert a.form()["audience"] == "https://a.example" and a.payload() != b.payload()
    owner = Ed25519PrivateKey.generate()
    headers = owner_request_headers(a, owner_public_key(owner), owner.sign)
    assert headers[AUDIENCE_HEADER] == "https://a.example"


class Nonces:
    def __init__(self) -> None:
        self.claimed: list[str] = []

    def claim(self, scope: str | None, owner: object, nonce: str, now: float, accepted_until: float) -> None:
        self.claimed.append(nonce)


@pytest.mark.parametrize(
    ("configured", "accepted"),
    [
        ({"https://a.example"}, True),
        ({"https://b.example", "https://a.example"}, True),
        ({"https://b.example"}, False),
        (set(), False),  # a proxy with no origin accepts no owner request
    ],
)
def test_verification_accepts_only_a_configured_audience(configured: set[str], accepted: bool) -> None:
    owner = Ed25519PrivateKey.generate()
    request = OwnerRequest("POST", "/v1/wallets/w1/tokens", b"", 1_700_000_000, "n" * 32, audience="https://a.example")
    headers = owner_request_headers(request, owner_public_key(owner), owner.sign)
    nonces = Nonces()

    def verify() -> object:
        return verify_owner_request(
            headers, method="POST", path="/v1/wallets/w1/tokens", body=b"",
            allowed_keys=frozenset({owner_public_key(owner)}), audiences=frozenset(configured), now=1_700_000_000,
            max_skew=300, nonces=nonces, scope="w1",
        )  # fmt: skip

    if accepted:
        assert verify() == owner_public_key(owner) and nonces.claimed == ["n" * 32]
    else:
        with pytest.raises(ApiError, match=r"^owner_signature_invalid: owner signature is invalid$"):
            verify()
        assert nonces.claimed == []


def test_a_new_request_is_signed_for_the_origin_of_its_url() -> None:
    """`signed_request_headers` (owner tooling, demo, bench): the audience is the URL's origin, the time now, the
    nonce fresh each call, a JSON content type only with a body; a URL without an origin is refused unsigned."""
    owner = Ed25519PrivateKey.generate()
    body = b'{"envelope": {}}'
    path = "/v1/wallets/w1/freeze"
    first = signed_request_headers("HTTPS://A.example:443/base/", "POST", path, body, owner=owner_public_key(owner),
                                   sign=owner.sign)  # fmt: skip
    second = signed_request_headers("https://a.example", "GET", path, b"", owner=owner_public_key(owner),
                                    sign=owner.sign)  # fmt: skip
    assert first[AUDIENCE_HEADER] == "https://a.example" and first["Content-Type"] == "application/json"
    assert "Content-Type" not in second
    assert first["WAIaaS-Owner-Nonce"] != second["WAIaaS-Owner-Nonce"]
    nonces = Nonces()
    now = time.time()
    assert verify_owner_request(
        first, method="POST", path=path, body=body, allowed_keys=frozenset({owner_public_key(owner)}),
        audiences=frozenset({"https://a.example"}), now=now, max_skew=300, nonces=nonces, scope="w1",
    ) == owner_public_key(owner)  # fmt: skip
    signed: list[bytes] = []

    def sign(message: bytes) -> bytes:
        signed.append(message)
        return owner.sign(message)

    with pytest.raises(OriginError):
        signed_request_headers("a.example", "GET", path, b"", owner=owner_public_key(owner), sign=sign)
    assert signed == []
