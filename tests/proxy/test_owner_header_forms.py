"""Owner headers of the wrong form are refused before anything else, even when the owner signed them.

`parent_proxy.owner_auth.parse_owner_headers` (step 1 of `verify_owner_request`): the timestamp is 1-12 ASCII digits,
the nonce 16-64 of ``A-Z a-z 0-9 _ -`` (docs/api.md, Owner request signatures); anything else is 401
``owner_signature_invalid`` and no nonce is claimed. Found by mutation testing: no test sent a malformed timestamp
or nonce, so the check could be removed unnoticed. Each request here is signed by the owner over exactly the values
sent (Python's ``int`` reads non-ASCII digits, so a timestamp in them names the same second), so only the form
check refuses it.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from parent_proxy.api_errors import ApiError
from parent_proxy.owner_auth import TIMESTAMP_HEADER, OwnerRequest, owner_request_headers, verify_owner_request
from tests.support.policies import owner_public_key

NOW = 1_700_000_000
ORIGIN = "https://a.example"
PATH = "/v1/wallets/w1/freeze"


class Nonces:
    """Records the nonces claimed (a claim is the last step, after every check passed)."""

    def __init__(self) -> None:
        self.claimed: list[str] = []

    def claim(self, scope: str | None, owner: object, nonce: str, now: float, accepted_until: float) -> None:
        self.claimed.append(nonce)


def _verify(headers: dict[str, str], owner: Ed25519PrivateKey, nonces: Nonces) -> object:
    return verify_owner_request(
        headers, method="POST", path=PATH, body=b"", allowed_keys=frozenset({owner_public_key(owner)}),
        audiences=frozenset({ORIGIN}), now=NOW, max_skew=300, nonces=nonces, scope="w1",
    )  # fmt: skip


def _signed(owner: Ed25519PrivateKey, nonce: str) -> dict[str, str]:
    request = OwnerRequest("POST", PATH, b"", NOW, nonce, audience=ORIGIN)
    return owner_request_headers(request, owner_public_key(owner), owner.sign)


@pytest.mark.parametrize("nonce", ["n" * 16, "n" * 64, "Az09_-" * 3])
def test_a_signed_request_with_a_well_formed_nonce_is_accepted(nonce: str) -> None:
    owner, nonces = Ed25519PrivateKey.generate(), Nonces()
    assert _verify(_signed(owner, nonce), owner, nonces) == owner_public_key(owner)
    assert nonces.claimed == [nonce]


@pytest.mark.parametrize("nonce", ["n" * 15, "n" * 65, "n" * 15 + ".", "n" * 15 + "=", "n" * 15 + "\u00e9"])
def test_a_signed_request_with_a_malformed_nonce_is_refused_and_claims_nothing(nonce: str) -> None:
    owner, nonces = Ed25519PrivateKey.generate(), Nonces()
    with pytest.raises(ApiError, match=r"^owner_signature_invalid: malformed owner timestamp or nonce$"):
        _verify(_signed(owner, nonce), owner, nonces)
    assert nonces.claimed == []


@pytest.mark.parametrize(
    "timestamp",
    [
        "\uff11\uff17" + "\uff10" * 8,  # 1700000000 in fullwidth digits: int() reads it
        "+" + str(NOW),
        "0" + str(NOW) + "00",  # 13 digits (a value in ms, say)
        str(NOW) + ".0",
    ],
)
def test_a_signed_request_with_a_malformed_timestamp_is_refused_and_claims_nothing(timestamp: str) -> None:
    owner, nonces = Ed25519PrivateKey.generate(), Nonces()
    headers = {**_signed(owner, "n" * 32), TIMESTAMP_HEADER: timestamp}
    with pytest.raises(ApiError, match=r"^owner_signature_invalid: malformed owner timestamp or nonce$"):
        _verify(headers, owner, nonces)
    assert nonces.claimed == []
