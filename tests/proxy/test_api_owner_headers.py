"""The owner key header is read in one place (`parent_proxy.owner_auth`), whatever the HTTP parser leaves around it.

uvicorn's httptools parser keeps a header value's trailing whitespace (h11 strips it; the test client passes values
as given, as httptools would). Before: a wallet creation whose ``WAIaaS-Owner-Key`` ended in whitespace verified
(the owner headers were parsed stripped) and then answered 500, because the route read the raw header again."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from parent_proxy.owner_auth import KEY_HEADER, OwnerRequest, owner_request_headers
from tests.proxy.api_harness import Harness


def create(h: Harness, wallet_id: str, key_header: str | None) -> object:
    """``POST /v1/wallets`` signed by the owner, its key header replaced by ``key_header`` (None: as signed)."""
    content = json.dumps({"wallet_id": wallet_id, "owner_public_key": str(h.owner_pub)}).encode()
    request = OwnerRequest("POST", "/v1/wallets", content, int(time.time()), secrets.token_hex(16), audience=h.origin)
    headers = owner_request_headers(request, h.owner_pub, h.owner.sign)
    if key_header is not None:
        headers[KEY_HEADER] = key_header
    headers["Content-Type"] = "application/json"
    return h.client.post("/v1/wallets", content=content, headers=headers)


@pytest.mark.parametrize("padding", [("", "  "), ("", "\t"), (" ", " \t")], ids=["spaces", "tab", "both-sides"])
def test_a_whitespace_padded_owner_key_creates_the_wallet(h: Harness, padding: tuple[str, str]) -> None:
    created = create(h, "w-padded", f"{padding[0]}{h.owner_pub}{padding[1]}")
    assert created.status_code == 201, created.text  # type: ignore[attr-defined]
    assert h.store.get_wallet("w-padded").owner_pubkey == bytes(h.owner_pub)
    assert h.audit_events() == ["wallet.created"]


@pytest.mark.parametrize(
    "key_header", ["not-a-key", "0" * 44, f"{'1' * 31}", "  ", f"{'x'}{'1' * 43}"], ids=["word", "zeros", "short",
                                                                                        "blank", "bad-char"]
)  # fmt: skip
def test_a_malformed_owner_key_is_401_and_creates_nothing(h: Harness, key_header: str) -> None:
    refused = create(h, "w-bad", key_header)
    assert refused.status_code == 401, refused.text  # type: ignore[attr-defined]
    assert refused.json()["error"]["code"] == "owner_signature_invalid"  # type: ignore[attr-defined]
    assert h.audit_events() == []
    assert create(h, "w-bad", None).status_code == 201  # type: ignore[attr-defined]
