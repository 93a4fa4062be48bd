"""Owner requests name the deployment they are for (the audience, `parent_proxy.owner_auth`).

Review finding (reproduced before the fix): the signed form named no deployment and nonces are per deployment, so
with one owner key in two deployments and a wallet id in both (owners choose wallet ids), whoever saw deployment A's
traffic (its parent, which may be taken over: DESIGN.md section 1) could replay the owner's requests to B within the
skew window: issue an agent token on B's wallet (and take it), unfreeze B's wallet, create a wallet there. (A
revocation replayed names A's token id, which B does not have: token ids are random.) Here A and B are two proxies,
each with its own store and enclave, at https://a.example and https://b.example, with the same owner key and
wallet id. Each replay is refused with the answer a bad signature gets, changes nothing on B and uses no nonce
there.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from parent_proxy.api_errors import ApiError
from parent_proxy.errors import NotFound
from parent_proxy.owner_auth import AUDIENCE_HEADER, OwnerRequest, owner_request_headers, verify_owner_request
from parent_proxy.owner_signers import write_keypair_file
from policies.cli import main
from tests.proxy.api_harness import Harness, provision, running_harness
from tests.proxy.harness_calls import freeze_order
from tests.proxy.hooked_client import Borrowed
from tests.support.policies import owner_public_key

A, B = "https://a.example", "https://b.example"
JSON = {"Content-Type": "application/json"}
REAL_CLIENT = httpx.Client


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Harness, Harness]]:
    """Deployments A and B: one owner key (say, one KMS key for staging and production), wallet ``w1`` in both."""
    with ExitStack() as stack:
        harnesses = []
        for name, origin in (("a", A), ("b", B)):
            (tmp_path / name).mkdir()
            generator = running_harness(tmp_path / name, origin=origin)
            harnesses.append(next(generator))
            stack.callback(next, generator, None)
        a, b = harnesses
        b.owner = a.owner
        b.services.owner_keys = frozenset({a.owner_pub})
        provision(a)
        provision(b)
        yield a, b


def signed_for(h: Harness, method: str, path: str, content: bytes, nonce: str | None = None) -> dict[str, str]:
    """Headers of an owner request for ``h``'s deployment, as the owner CLI makes them for ``--url h.origin``."""
    request = OwnerRequest(method, path, content, int(time.time()), nonce or secrets.token_hex(16), audience=h.origin)
    return {**owner_request_headers(request, h.owner_pub, h.owner.sign), **JSON}


def send(h: Harness, method: str, path: str, content: bytes, headers: dict[str, str]) -> Any:
    return h.client.request(method, path, content=content, headers=headers)


def refused(response: Any) -> bool:
    """The answer of a bad signature: 401 ``owner_signature_invalid``, "owner signature is invalid"."""
    error = response.json()["error"]
    return response.status_code == 401 and (error["code"], error["message"]) == (
        "owner_signature_invalid",
        "owner signature is invalid",
    )


def tokens_of(h: Harness) -> int:
    return sum(event == "token.issued" for event in h.audit_events())


def test_a_token_request_sent_to_a_issues_no_token_on_b(two: tuple[Harness, Harness]) -> None:
    a, b = two
    path = f"/v1/wallets/{a.wallet_id}/tokens"
    nonce = secrets.token_hex(16)
    headers = signed_for(a, "POST", path, b"", nonce)
    assert send(a, "POST", path, b"", headers).status_code == 201  # A's parent keeps a copy ...
    before = b.audit_events()
    replayed = send(b, "POST", path, b"", headers)  # ... and replays it to B
    assert refused(replayed), replayed.text
    assert b.audit_events() == before and tokens_of(b) == 1  # the token provision issued, no other
    # B claimed no nonce: the owner's own request to B with the same nonce goes through.
    assert send(b, "POST", path, b"", signed_for(b, "POST", path, b"", nonce)).status_code == 201


def test_naming_bs_audience_in_the_header_does_not_make_as_signature_verify(two: tuple[Harness, Harness]) -> None:
    """The proxy verifies the form with its own configured origin, so rewriting the audience header to B's origin
    changes what is checked, not what was signed."""
    a, b = two
    path = f"/v1/wallets/{a.wallet_id}/tokens"
    headers = {**signed_for(a, "POST", path, b""), AUDIENCE_HEADER: B}
    assert refused(send(b, "POST", path, b"", headers))
    assert tokens_of(b) == 1


def test_an_unfreeze_sent_to_a_leaves_b_frozen(two: tuple[Harness, Harness]) -> None:
    """The owner froze B's wallet (an incident there) and later unfreezes A's wallet of the same id; A's parent
    replays the unfreeze, request and owner-signed order, to B. The order names the wallet id only, so the request
    signature's audience is what keeps it on A."""
    a, b = two
    assert b.owner_call("POST", f"/v1/wallets/{b.wallet_id}/freeze", freeze_order(b, 1)).status_code == 200
    assert a.owner_call("POST", f"/v1/wallets/{a.wallet_id}/freeze", freeze_order(a, 1)).status_code == 200
    path = f"/v1/wallets/{a.wallet_id}/unfreeze"
    content = json.dumps(freeze_order(a, 2, freeze=False)).encode()
    headers = signed_for(a, "POST", path, content)
    assert send(a, "POST", path, content, headers).status_code == 200
    replayed = send(b, "POST", path, content, headers)
    assert refused(replayed), replayed.text
    assert b.store.get_wallet(b.wallet_id).frozen is True
    assert "wallet.unfrozen" not in b.audit_events()


def test_a_creation_sent_to_a_creates_nothing_on_b(two: tuple[Harness, Harness]) -> None:
    a, b = two
    content = json.dumps({"wallet_id": "w2", "owner_public_key": str(a.owner_pub)}).encode()
    nonce = secrets.token_hex(16)
    headers = signed_for(a, "POST", "/v1/wallets", content, nonce)
    assert send(a, "POST", "/v1/wallets", content, headers).status_code == 201
    replayed = send(b, "POST", "/v1/wallets", content, headers)
    assert refused(replayed), replayed.text
    with pytest.raises(NotFound):
        b.store.get_wallet("w2")
    assert "wallet.created" not in b.audit_events()[1:]  # provision's own creation only
    # No creation nonce claimed on B either.
    assert (
        send(b, "POST", "/v1/wallets", content, signed_for(b, "POST", "/v1/wallets", content, nonce)).status_code == 201
    )


@pytest.mark.parametrize("audience", [None, "", "https://a.example", "HTTPS://B.EXAMPLE", "https://b.example/"])
def test_a_missing_or_other_audience_is_refused_and_uses_no_nonce(
    two: tuple[Harness, Harness], audience: str | None
) -> None:
    """B's owner request signed for B, its audience header removed, emptied, or naming another origin or another
    spelling of B's (the proxy compares the normal form exactly): 401 ``owner_signature_invalid``, nothing changed,
    and the nonce is still free."""
    _, b = two
    path = f"/v1/wallets/{b.wallet_id}/tokens"
    nonce = secrets.token_hex(16)
    headers = signed_for(b, "POST", path, b"", nonce)
    if audience is None:
        del headers[AUDIENCE_HEADER]
    else:
        headers[AUDIENCE_HEADER] = audience
    answer = send(b, "POST", path, b"", headers)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "owner_signature_invalid", answer.text
    assert tokens_of(b) == 1
    assert send(b, "POST", path, b"", signed_for(b, "POST", path, b"", nonce)).status_code == 201


# -- the owner CLI signs the origin of its --url ----------------------------------------------------------------------


def cli_call(capsys: pytest.CaptureFixture[str], key_file: Path, url: str, path: str) -> tuple[int, str, str]:
    code = main(["owner", "--keypair", str(key_file), "call", "--url", url, "POST", path])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_owner_cli_signs_for_the_origin_of_its_url(
    two: tuple[Harness, Harness], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``owner call --url`` against A (A's client lent to the CLI, which sends wherever it is lent): A's origin in
    any spelling and with a path prefix is A's audience and accepted; B's origin is B's audience, refused by A,
    whatever answers at the address."""
    a, _ = two
    key_file = tmp_path / "owner.json"
    write_keypair_file(key_file, a.owner)
    monkeypatch.setattr("httpx.Client", lambda **_: Borrowed(a.client))
    path = f"/v1/wallets/{a.wallet_id}/tokens"
    for url in ("https://a.example", "HTTPS://A.Example:443/", "https://a.example/"):
        code, out, err = cli_call(capsys, key_file, url, path)
        assert code == 0 and json.loads(out)["token"], (url, out, err)
    code, out, _ = cli_call(capsys, key_file, "https://b.example", path)
    assert code == 1 and json.loads(out)["error"]["code"] == "owner_signature_invalid"
    assert tokens_of(a) == 4  # provision's and the three above


def test_the_owner_cli_sends_the_audience_it_signed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What reaches the parent: the audience header is the normal form of ``--url``'s origin, the signature verifies
    over a form with that audience (and no other), and the request goes under the URL as given."""
    owner = Ed25519PrivateKey.generate()
    key_file = tmp_path / "owner.json"
    write_keypair_file(key_file, owner)
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"token_id": "t", "token": "x"})

    monkeypatch.setattr("httpx.Client", lambda **_: REAL_CLIENT(transport=httpx.MockTransport(handle)))
    code, _, _ = cli_call(capsys, key_file, "HTTPS://Wallets.Example.COM:443/waiaas/", "/v1/wallets/w1/tokens")
    assert code == 0 and len(seen) == 1
    request = seen[0]
    assert (request.url.host, request.url.path) == ("wallets.example.com", "/waiaas/v1/wallets/w1/tokens")
    assert request.headers[AUDIENCE_HEADER] == "https://wallets.example.com"

    def verify(audience: str) -> object:
        return verify_owner_request(
            request.headers, method="POST", path="/v1/wallets/w1/tokens", body=b"",
            allowed_keys=frozenset({owner_public_key(owner)}), audiences=frozenset({audience}), now=time.time(),
            max_skew=300, nonces=Nonces(), scope="w1",
        )  # fmt: skip

    assert verify("https://wallets.example.com") == owner_public_key(owner)
    with pytest.raises(ApiError, match="owner signature is invalid"):
        verify("https://other.example.com")


@pytest.mark.parametrize(
    "url", ["wallets.example.com", "https://user:pw@wallets.example.com", "ftp://wallets.example.com", "https://"]
)
def test_the_owner_cli_refuses_a_url_without_an_origin_and_sends_nothing(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "owner.json"
    write_keypair_file(key_file, Ed25519PrivateKey.generate())
    monkeypatch.setattr("httpx.Client", lambda **_: pytest.fail("nothing may be sent"))
    code, out, err = cli_call(capsys, key_file, url, "/v1/wallets/w1/tokens")
    assert (code, out) == (2, "") and "\nowner call: --url " in err, err
    assert "pw" not in err


class Nonces:
    """A nonce registry that accepts every nonce (the CLI test checks the signature only)."""

    def claim(self, *_: object) -> None:
        pass
