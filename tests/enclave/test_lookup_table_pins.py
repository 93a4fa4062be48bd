"""Lookup tables in the enclave resolve from the owner's pins (``rules.lookup_tables``), never from the contents a
hostile parent supplies: a parent claiming that a table index holds an allowlisted merchant cannot turn a payment to
a denylisted address into an allowed one (found in review: the enclave used to trust the parent's contents)."""

from __future__ import annotations

import asyncio

from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.hash import Hash
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from enclave_app.protocol import (
    LookupTable,
    SignTransactionRequest,
    TransactionDecisionResponse,
)
from enclave_app.server import Handler
from tests.enclave.sign_requests import spent
from tests.support.policies import BLOCKED, MERCHANT
from tests.support.policy_handler import AGENT, WALLET, policy_handler

TABLE = Pubkey.from_string("4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T")


def _handler(pins: list[dict[str, object]]) -> Handler:
    return policy_handler(lookup_tables=pins)


def _pay_through_table(true_contents: list[Pubkey], destination: Pubkey) -> bytes:
    """A v0 payment whose destination is loaded from TABLE (compiled against its true contents)."""
    ix = transfer(TransferParams(from_pubkey=AGENT, to_pubkey=destination, lamports=1_000))
    table = AddressLookupTableAccount(TABLE, true_contents)
    message = MessageV0.try_compile(AGENT, [ix], [table], Hash.new_unique())
    return bytes(VersionedTransaction.populate(message, [Signature.default()]))


def _sign(handler: Handler, raw: bytes, claimed: list[Pubkey]) -> TransactionDecisionResponse:
    tables = (LookupTable(bytes(TABLE), tuple(bytes(a) for a in claimed)),)
    answer = asyncio.run(handler.handle(SignTransactionRequest(WALLET, raw, lookup_tables=tables, spent=spent())))
    assert isinstance(answer, TransactionDecisionResponse), answer
    return answer


def test_a_parent_lying_about_table_contents_is_refused() -> None:
    """On chain the table holds BLOCKED; the owner pinned it so; the parent claims MERCHANT."""
    handler = _handler([{"address": str(TABLE), "addresses": [str(BLOCKED)]}])
    answer = _sign(handler, _pay_through_table([BLOCKED], BLOCKED), claimed=[MERCHANT])
    assert answer.signature is None
    assert answer.decision["verdict"] == "deny"
    assert "differ from the owner's pin" in answer.decision["reasons"][0]["message"]


def test_the_pinned_contents_decide_even_without_supplied_contents() -> None:
    handler = _handler([{"address": str(TABLE), "addresses": [str(BLOCKED)]}])
    tables: tuple[LookupTable, ...] = ()
    raw = _pay_through_table([BLOCKED], BLOCKED)
    answer = asyncio.run(handler.handle(SignTransactionRequest(WALLET, raw, lookup_tables=tables, spent=spent())))
    assert isinstance(answer, TransactionDecisionResponse)
    assert answer.signature is None
    assert [r["rule"] for r in answer.decision["reasons"]] == ["destinations.deny"]


def test_an_unpinned_table_is_refused_whatever_the_parent_supplies() -> None:
    handler = _handler([])
    answer = _sign(handler, _pay_through_table([MERCHANT], MERCHANT), claimed=[MERCHANT])
    assert answer.signature is None
    assert "not pinned" in answer.decision["reasons"][0]["message"]


def test_a_pinned_table_paying_a_merchant_is_signed() -> None:
    handler = _handler([{"address": str(TABLE), "addresses": [str(MERCHANT), str(BLOCKED)]}])
    answer = _sign(handler, _pay_through_table([MERCHANT, BLOCKED], MERCHANT), claimed=[MERCHANT, BLOCKED])
    assert answer.decision["verdict"] == "allow"
    assert answer.signature is not None


def test_a_pin_longer_than_the_supplied_table_is_refused() -> None:
    """The owner pinned two entries; the table holds one (the second index is not on chain yet, so whoever holds
    the table's authority may still append another address there). Before: only the common prefix was compared,
    and the payment through index 0 was signed."""
    handler = _handler([{"address": str(TABLE), "addresses": [str(MERCHANT), str(BLOCKED)]}])
    answer = _sign(handler, _pay_through_table([MERCHANT], MERCHANT), claimed=[MERCHANT])
    assert answer.signature is None
    assert answer.decision["verdict"] == "deny"
    assert "shorter than the owner's pin (1 < 2 entries)" in answer.decision["reasons"][0]["message"]
