"""The enclave protocol's message set: round trips, strict decoding, and hostile maps."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_app.errors import ProtocolError
from enclave_app.framing import encode_frame
from enclave_app.protocol import (
    EXPECTED_RESPONSE,
    MAX_ERROR_MESSAGE_CHARS,
    REQUEST_TYPES,
    RESPONSE_TYPES,
    AgentKeyResponse,
    AgentKeyRotationResponse,
    AttestationRequest,
    AttestationResponse,
    DiscardWalletRequest,
    EnclaveState,
    ErrorCode,
    ErrorResponse,
    FreezeRequest,
    InstallPolicyRequest,
    LoadWalletRequest,
    LookupTable,
    Message,
    MessageSignatureResponse,
    PingRequest,
    PolicyInstalledResponse,
    PrepareAgentKeyRequest,
    ProvisionWalletRequest,
    SignAgentKeyRotationRequest,
    SignMessageRequest,
    SignTransactionRequest,
    SpentEntry,
    StatusResponse,
    SwitchAgentKeyRequest,
    TransactionDecisionResponse,
    UnfreezeRequest,
    WalletFrozenResponse,
    WalletResponse,
    decode_request,
    decode_response,
)

KEY = bytes(range(32))
SIG = bytes(64)
DECISION = {"verdict": "allow", "policy_sequence": 3, "reasons": [], "reservations": []}

REQUESTS: list[Message] = [
    PingRequest(),
    AttestationRequest(nonce=b"n" * 16),
    ProvisionWalletRequest(wallet_id="w1", owner_public_key=KEY),
    LoadWalletRequest(wallet_id="w1", owner_public_key=KEY, agent_public_key=KEY, sealed_blob=b"blob"),
    InstallPolicyRequest(wallet_id="w1", signed_policy=b"{}"),
    SignTransactionRequest(
        wallet_id="w1",
        transaction=b"\x01" * 100,
        lookup_tables=(LookupTable(KEY, (KEY, KEY)),),
        spent=(SpentEntry("SOL", 86400, 2**64 - 1),),
        requests_in_window=3,
        denials_in_window=1,
        approval=b"{}",
    ),
    SignMessageRequest(wallet_id="w1", message=b"\xffsolana offchain"),
    FreezeRequest(wallet_id="w1", order=b"{}"),
    UnfreezeRequest(wallet_id="w1", order=b"{}"),
    PrepareAgentKeyRequest(wallet_id="w1"),
    SignAgentKeyRotationRequest(wallet_id="w1", transaction=b"\x01" * 100, order=b"{}", candidate_sealed_blob=b"blob"),
    SwitchAgentKeyRequest(wallet_id="w1", order=b"{}", candidate_sealed_blob=b"blob"),
    DiscardWalletRequest(wallet_id="w1", agent_public_key=KEY),
]
RESPONSES: list[Message] = [
    StatusResponse(state=EnclaveState.READY, wallets=2, session_public_key=KEY),
    AttestationResponse(document=b"doc"),
    WalletResponse(wallet_id="w1", agent_public_key=KEY, sealed_blob=None),
    PolicyInstalledResponse(wallet_id="w1", sequence=4, policy_hash=KEY),
    TransactionDecisionResponse(
        decision=DECISION, signature=SIG, signed_transaction=b"tx", receipt=b"r", receipt_signature=SIG
    ),
    MessageSignatureResponse(signature=SIG, receipt=b"r", receipt_signature=SIG),
    WalletFrozenResponse(wallet_id="w1", frozen=True, order_sequence=9),
    AgentKeyResponse(
        wallet_id="w1",
        agent_public_key=KEY,
        new_agent_public_key=KEY[::-1],
        sealed_blob=b"blob",
        receipt=b"r",
        receipt_signature=SIG,
    ),
    AgentKeyRotationResponse(signature=SIG, signed_transaction=b"tx", receipt=b"r", receipt_signature=SIG),
    ErrorResponse(code=ErrorCode.BAD_REQUEST, message="no"),
]


def test_the_message_set_is_closed_and_complete() -> None:
    assert {type(m) for m in REQUESTS} == set(REQUEST_TYPES.values()) == set(EXPECTED_RESPONSE)
    assert {type(m) for m in RESPONSES} == set(RESPONSE_TYPES.values())


@pytest.mark.parametrize("message", REQUESTS, ids=lambda m: m.TYPE)
def test_requests_round_trip_through_a_frame(message: Message) -> None:
    wire = message.to_wire()
    assert wire["v"] == 1 and wire["type"] == message.TYPE
    encode_frame(wire)
    assert decode_request(wire) == message


@pytest.mark.parametrize("message", RESPONSES, ids=lambda m: m.TYPE)
def test_responses_round_trip(message: Message) -> None:
    assert decode_response(message.to_wire()) == message


def _wire(**changes: Any) -> dict[str, Any]:
    wire = ProvisionWalletRequest(wallet_id="w1", owner_public_key=KEY).to_wire()
    wire.update(changes)
    return wire


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([1, 2], "must be a CBOR map"),
        ({"type": "ping"}, "unsupported protocol version"),
        (_wire(v=2), "unsupported protocol version"),
        (_wire(v=True), "unsupported protocol version"),
        (_wire(type="shutdown"), "unknown message type"),
        (_wire(type=["ping"]), "unknown message type"),
        (_wire(extra=1), "missing or extra fields"),
        ({"v": 1, "type": "provision_wallet", "wallet_id": "w1"}, "missing or extra fields"),
        (_wire(wallet_id=""), "wallet_id is not"),
        (_wire(wallet_id="w" * 65), "wallet_id is not"),  # what no policy can name (policies.identifiers)
        (_wire(wallet_id="acme:agent-1"), "wallet_id is not"),
        (_wire(wallet_id="_w1"), "wallet_id is not"),
        (_wire(wallet_id=b"w1"), "wallet_id is not"),
        (_wire(wallet_id="w2\x1b[1D1"), "wallet_id is not"),  # shown as "w1" on the owner's terminal
        (_wire(wallet_id="w1\n"), "wallet_id is not"),
        (_wire(wallet_id="w 1"), "wallet_id is not"),
        (_wire(wallet_id="w1\u202e"), "wallet_id is not"),
        (_wire(wallet_id="wället"), "wallet_id is not"),
        (_wire(wallet_id="."), "wallet_id is not"),  # the URL dot segments: no path of the API could name it
        (_wire(wallet_id=".."), "wallet_id is not"),
        (_wire(owner_public_key=KEY[:31]), "byte field of wrong type or size"),
        (_wire(owner_public_key=bytearray(KEY)), "byte field of wrong type or size"),
        (_wire(type="status", state="ready", wallets=True, session_public_key=KEY), "unknown message type"),
    ],
)
def test_malformed_requests_are_refused(value: Any, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_request(value)


def test_a_response_type_is_not_a_request() -> None:
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode_request(RESPONSES[0].to_wire())


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"requests_in_window": True}, "integer field of wrong type or range"),
        ({"requests_in_window": -1}, "integer field of wrong type or range"),
        ({"denials_in_window": 2**32}, "integer field of wrong type or range"),
        ({"transaction": b"x" * 1233}, "byte field of wrong type or size"),
        ({"spent": [{"asset": "SOL", "window_seconds": 60}]}, "SpentEntry has missing or extra fields"),
        ({"spent": [{"asset": "SOL", "window_seconds": 60, "amount": 2**64}]}, "integer field"),
        ({"spent": "SOL"}, "array field of wrong type or size"),
        ({"lookup_tables": [{"address": KEY, "addresses": [KEY] * 257}]}, "array field of wrong type or size"),
        ({"approval": ""}, "byte field of wrong type or size"),
    ],
)
def test_sign_request_fields_are_checked(changes: dict[str, Any], match: str) -> None:
    wire = REQUESTS[5].to_wire()
    wire.update(changes)
    with pytest.raises(ProtocolError, match=match):
        decode_request(wire)


@pytest.mark.parametrize(
    ("message", "match"),
    [
        ({"v": 1, "type": "error", "code": "nope", "message": ""}, "enumerated field out of range"),
        ({"v": 1, "type": "error", "code": 3, "message": ""}, "enumerated field of wrong type"),
        (
            {"v": 1, "type": "wallet_frozen", "wallet_id": "w", "frozen": 1, "order_sequence": 1},
            "boolean field of wrong type",
        ),
        (
            {**RESPONSES[4].to_wire(), "decision": {"verdict": "maybe", "reasons": []}},
            "decision lacks a verdict or reasons",
        ),
        ({**RESPONSES[4].to_wire(), "decision": {1: "allow"}}, "decision must be a map with text keys"),
    ],
)
def test_malformed_responses_are_refused(message: dict[str, Any], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_response(message)


def test_encoding_checks_values_too() -> None:
    with pytest.raises(ProtocolError, match="byte field of wrong type or size"):
        AttestationRequest(nonce=b"short").to_wire()


_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.binary(max_size=40) | st.text(max_size=40)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(sorted(REQUEST_TYPES)),
    fields=st.dictionaries(st.sampled_from(["wallet_id", "nonce", "transaction", "order", "spent", "x"]), _values),
)
def test_hostile_maps_give_a_protocol_error_or_a_valid_request(kind: str, fields: dict[str, Any]) -> None:
    try:
        request = decode_request({"v": 1, "type": kind, **fields})
    except ProtocolError:
        return
    assert decode_request(request.to_wire()) == request


@pytest.mark.parametrize(
    "kind", [*REQUEST_TYPES.values(), *RESPONSE_TYPES.values(), LookupTable, SpentEntry], ids=lambda k: k.__name__
)
def test_fields_are_declared_in_dataclass_order(kind: type[Message]) -> None:
    # Decoding builds each message positionally from FIELDS: the two orders must be the same.
    assert tuple(field.name for field in dataclasses.fields(kind)) == tuple(name for name, _ in kind.FIELDS)  # type: ignore[arg-type]


def test_a_decision_with_an_unhashable_verdict_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="decision lacks a verdict or reasons"):
        decode_response({**RESPONSES[4].to_wire(), "decision": {"verdict": ["allow"], "reasons": []}})


@pytest.mark.parametrize("message", REQUESTS + RESPONSES, ids=lambda m: f"{type(m).__name__}")
def test_every_byte_field_refuses_empty_text_and_bytearray_values(message: Message) -> None:
    # Every byte field of the protocol has a lower bound of at least one byte, and only exact ``bytes`` pass: a
    # text or a bytearray of an accepted length is refused too (the type and the size are both checked).
    decode = decode_request if message in REQUESTS else decode_response
    wire = message.to_wire()
    fields = [name for name, value in wire.items() if type(value) is bytes]
    no_bytes = (PingRequest, PrepareAgentKeyRequest, WalletFrozenResponse, ErrorResponse)
    assert bool(fields) is not isinstance(message, no_bytes)
    for name in fields:
        for wrong in (b"", wire[name].decode("latin-1"), bytearray(wire[name])):
            with pytest.raises(ProtocolError, match="byte field of wrong type or size"):
                decode({**wire, name: wrong})


def test_nested_byte_fields_refuse_text_of_an_accepted_length() -> None:
    wire = REQUESTS[5].to_wire()
    table: dict[str, object] = {"address": KEY.decode("latin-1"), "addresses": [KEY]}
    with pytest.raises(ProtocolError, match="byte field of wrong type or size"):
        decode_request({**wire, "lookup_tables": [table]})
    table = {"address": KEY, "addresses": [KEY, KEY.decode("latin-1")]}
    with pytest.raises(ProtocolError, match="byte field of wrong type or size"):
        decode_request({**wire, "lookup_tables": [table]})


def test_an_error_message_may_be_empty_and_is_bounded() -> None:
    empty = ErrorResponse(code=ErrorCode.BUSY, message="")
    assert decode_response(empty.to_wire()) == empty
    longest = ErrorResponse(code=ErrorCode.BUSY, message="x" * MAX_ERROR_MESSAGE_CHARS)
    assert decode_response(longest.to_wire()) == longest
    with pytest.raises(ProtocolError, match="text field of wrong type or size"):
        decode_response({**longest.to_wire(), "message": "x" * (MAX_ERROR_MESSAGE_CHARS + 1)})
