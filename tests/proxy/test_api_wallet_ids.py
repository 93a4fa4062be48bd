"""One wallet-id rule (`policies.identifiers`) for the API, the policy documents, the enclave, the store and the
owner's tools.

Policy-schema review (twenty-first session): the API took 1-128 of ``A-Z a-z 0-9 . _ : -`` while a policy's
``wallet_id`` takes 1-64, no ``:``, the first a letter or digit. ``POST /v1/wallets`` with ``acme:agent-1`` made and
sealed an agent key (201), and then every policy for it was 422: a wallet that could never sign. Now each id is
either refused at creation with nothing made (no enclave call, no wallet, no audit record) or works end to end.
"""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_app.errors import ProtocolError
from enclave_app.protocol_wire import _wallet_id as enclave_wallet_id
from parent_proxy.errors import InvalidInput, NotFound
from parent_proxy.owner_cli_common import OwnerInputError, wallet_id_option
from parent_proxy.schemas import WALLET_ID
from parent_proxy.store.validation import check_wallet
from policies.document import policy_from_object
from policies.errors import PolicyDocumentError
from policies.identifiers import MAX_WALLET_ID_CHARS, WALLET_ID_PATTERN, is_wallet_id
from tests.proxy.api_harness import Harness, provision, spy_calls
from tests.proxy.conftest import make_wallet
from tests.proxy.harness_calls import records
from tests.support.policies import MERCHANT, example_policy, policy_schema

FORMERLY_API_ONLY = ["acme:agent-1", "_w1", "-w1", ".a", "...", "a:", ":", "w" * 65, "w" * 128]
"""Ids the API took and no policy could name."""
EDGES = ["a", "a.", "A_L0P61.1", "a-b.c_d", "0", "w" * 64]
"""Ids every component takes."""


@pytest.mark.parametrize("wallet_id", FORMERLY_API_ONLY)
def test_an_id_no_policy_can_name_is_refused_at_creation_with_nothing_made(h: Harness, wallet_id: str) -> None:
    sent = spy_calls(h.services.relay._client, "_call")  # every request to the enclave goes through it
    before = records(h)
    answer = h.owner_call("POST", "/v1/wallets", {"wallet_id": wallet_id, "owner_public_key": str(h.owner_pub)})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_request" and "body.wallet_id" in answer.json()["error"]["message"]
    assert sent == []  # no agent key was made or sealed
    assert records(h) == before
    with pytest.raises((NotFound, InvalidInput)):
        h.store.get_wallet(wallet_id)
    assert h.owner_call("POST", f"/v1/wallets/{wallet_id}/tokens").status_code == 404  # no path names it


@pytest.mark.parametrize("wallet_id", EDGES)
def test_an_id_the_api_takes_works_end_to_end(h: Harness, wallet_id: str) -> None:
    h.wallet_id = wallet_id
    provision(h)  # create (201), issue a token, install the example policy for it (200)
    signed = h.sign(h.transfer(1_000, MERCHANT))
    assert signed.status_code == 200, signed.text
    policy = h.client.get(f"/v1/wallets/{wallet_id}/policy", headers={"Authorization": f"Bearer {h.token}"})
    assert policy.json()["document"]["wallet_id"] == wallet_id


def _parser_takes(wallet_id: str) -> bool:
    try:
        policy_from_object({**example_policy(), "wallet_id": wallet_id})
    except PolicyDocumentError as exc:
        assert exc.field == "wallet_id"
        return False
    return True


def _enclave_takes(wallet_id: str) -> bool:
    try:
        enclave_wallet_id(wallet_id)
    except ProtocolError:
        return False
    return True


def _store_takes(wallet_id: str) -> bool:
    try:
        check_wallet(make_wallet(wallet_id))
    except InvalidInput as exc:
        assert exc.field == "wallet_id"
        return False
    return True


def _owner_tools_take(wallet_id: str) -> bool:
    try:
        wallet_id_option(wallet_id, "--wallet")
    except OwnerInputError:
        return False
    return True


SCHEMA_WALLET_ID = policy_schema()["$defs"]["wallet_id"]["pattern"]
ALPHABET = string.ascii_letters + string.digits + "._-:#/ \n\u00e9\u202e"


def _verdicts(wallet_id: str) -> list[bool]:
    api = re.fullmatch(WALLET_ID, wallet_id) is not None  # the path's and the creation body's pattern
    # The schema's pattern as an ECMA-262 engine reads it: its "$" is the end of the string (Python's "$" would
    # also match before a final newline: fullmatch reads it as ECMA-262 does).
    schema = re.fullmatch(SCHEMA_WALLET_ID, wallet_id) is not None
    return [is_wallet_id(wallet_id), api, schema, _parser_takes(wallet_id), _enclave_takes(wallet_id),
            _store_takes(wallet_id), _owner_tools_take(wallet_id)]  # fmt: skip


@pytest.mark.parametrize("wallet_id", [*FORMERLY_API_ONLY, *EDGES, "", ".", "..", "w#1", "w/1", "w 1", "w1\n", "é"])
def test_every_component_takes_the_same_ids(wallet_id: str) -> None:
    verdicts = _verdicts(wallet_id)
    assert verdicts == [verdicts[0]] * len(verdicts), wallet_id
    assert verdicts[0] is (wallet_id in EDGES)


@settings(max_examples=300)
@given(st.text(ALPHABET, max_size=MAX_WALLET_ID_CHARS + 2))
def test_every_component_takes_the_same_ids_for_any_text(wallet_id: str) -> None:
    verdicts = _verdicts(wallet_id)
    assert verdicts == [verdicts[0]] * len(verdicts)


def test_the_schema_states_the_rule_and_no_id_holds_a_store_key_separator() -> None:
    assert policy_schema()["$defs"]["wallet_id"]["pattern"] == WALLET_ID_PATTERN
    assert policy_schema()["properties"]["wallet_id"] == {"$ref": "#/$defs/wallet_id"}
    for separator in "#/:":  # DynamoDB's W#<id> and <id>#<kind>, the data bucket's sealed/<id>/<key>
        assert not is_wallet_id(f"w{separator}1")
