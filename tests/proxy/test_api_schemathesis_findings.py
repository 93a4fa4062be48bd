"""Regressions for bugs the schemathesis fuzzer (test_api_schemathesis.py) found, each the exact request it sent:

1. ``POST /v1/wallets`` answered 500 to an ``owner_public_key`` or ``vault_address`` that matches the documented
   base58 pattern but is not 32 bytes (for the vault only after the enclave had provisioned a key): now 422, and
   every input is checked before the enclave makes a key.
2. Creating a wallet whose id already exists answered 503 enclave_unavailable (a client would retry forever): now
   409 conflict, checked in the store before provisioning, and the enclave's wallet-exists refusal maps to 409.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.api_contract_checks import SCHEMA, call_kwargs, make_checks
from tests.proxy.api_harness import Harness, provision, running_harness

CREATE_WALLET = SCHEMA["/v1/wallets"]["POST"]
# The exact values the fuzzer generated (derandomized, 25 examples per operation).
WRONG_SIZE_VAULT = "CRztCo9g1oWUzdJbM8KUTLrZiuiZakRHZMSw5opF"  # matches ^[1-9A-HJ-NP-Za-km-z]{32,44}$; not 32 bytes
FUZZED_WALLET_ID = "BmRV7RLtLmGVdzzxREY9SkPiG8ajdNkgHfPp3PiQGQ9a"


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    for h in running_harness(tmp_path):
        provision(h)
        yield h


def create_wallet(harness: Harness, body: dict[str, Any], status: int, code: str | None = None) -> None:
    """POST /v1/wallets, owner-signed over the final body: asserts the expected status (and error code) first, then
    runs every check of the fuzzer on the response."""
    case = CREATE_WALLET.Case(body=body, media_type="application/json")
    kwargs = call_kwargs(case, harness)
    response = case.call(**kwargs)
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["error"]["code"] == code, response.text
    case.validate_response(response, checks=make_checks(harness), transport_kwargs=kwargs)


def test_wallet_creation_with_a_wrong_size_vault_address_is_422(harness: Harness) -> None:
    body = {"wallet_id": "A_L0P61.0", "owner_public_key": str(harness.owner_pub), "vault_address": WRONG_SIZE_VAULT}
    create_wallet(harness, body, 422, "invalid_request")


def test_wallet_creation_with_a_wrong_size_owner_key_is_422(harness: Harness) -> None:
    body = {"wallet_id": "A_L0P61.1", "owner_public_key": WRONG_SIZE_VAULT}
    create_wallet(harness, body, 422, "invalid_request")


def test_creating_an_existing_wallet_is_409_conflict(harness: Harness) -> None:
    body = {"wallet_id": FUZZED_WALLET_ID, "owner_public_key": str(harness.owner_pub)}
    create_wallet(harness, body, 201)
    create_wallet(harness, body, 409, "conflict")
