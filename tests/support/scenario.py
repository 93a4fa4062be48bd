"""A wallet, its policy and an evaluation context, for corpus tests: build a transaction, get a `Decision`.

Transactions are built with solders and the SPL instruction builders, serialized unsigned (the signer adds the
wallet's signature), then decoded and evaluated by the real engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction, VersionedTransaction

from policies.decision import Decision
from policies.document import Policy, policy_from_object
from policies.errors import DecodeError
from policies.evaluate import EvalContext, evaluate
from policies.transaction import decode_transaction
from tests.support.policies import MERCHANT, example_policy

NOON = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # a Wednesday
FEE = 5_000 + 50
"""The fee of a transaction the wallet alone signs with `Scenario.budget` (5000 per signature, plus 1000
micro-lamports times 50 000 units): reserved under ``fees`` by the example policy."""
BLOCKHASH = Hash.new_unique()


@dataclass
class Scenario:
    """One agent wallet under one policy. ``doc`` may be edited before the first `decide`."""

    agent: Keypair = field(default_factory=Keypair)
    doc: dict[str, Any] = field(default_factory=example_policy)
    now: datetime = NOON
    spent: dict[tuple[str, int], int] = field(default_factory=dict)
    requests: int = 0
    denials: int = 0
    blockhash: Hash = BLOCKHASH
    _policy: Policy | None = None

    @property
    def wallet(self) -> Pubkey:
        return self.agent.pubkey()

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            self._policy = policy_from_object(self.doc)
        return self._policy

    def pay(self, lamports: int, to: Pubkey = MERCHANT) -> Instruction:
        return transfer(TransferParams(from_pubkey=self.wallet, to_pubkey=to, lamports=lamports))

    @staticmethod
    def budget(price: int = 1_000, limit: int = 50_000) -> list[Instruction]:
        return [set_compute_unit_price(price), set_compute_unit_limit(limit)]

    def legacy(self, *instructions: Instruction, payer: Pubkey | None = None, budget: bool = True) -> bytes:
        ixs = [*(self.budget() if budget else []), *instructions]
        message = Message.new_with_blockhash(ixs, payer or self.wallet, self.blockhash)
        return bytes(Transaction.new_unsigned(message))

    def v0(self, *instructions: Instruction, tables: Sequence[AddressLookupTableAccount] = ()) -> bytes:
        message = MessageV0.try_compile(self.wallet, [*self.budget(), *instructions], list(tables), self.blockhash)
        unsigned = [Signature.default()] * message.header.num_required_signatures
        return bytes(VersionedTransaction.populate(message, unsigned))

    def signed(self, raw: bytes) -> bytes:
        """``raw`` (an unsigned transaction paid by the wallet) signed by the agent key."""
        return bytes(VersionedTransaction(VersionedTransaction.from_bytes(raw).message, [self.agent]))

    def context(self) -> EvalContext:
        spent = dict.fromkeys(self.policy.spend_windows(), 0)
        spent.update(self.spent)
        return EvalContext(self.now, frozenset({self.wallet}), spent, self.requests, self.denials)

    def decide(self, raw: bytes, lookup_tables: Mapping[Pubkey, Sequence[Pubkey]] | None = None) -> Decision:
        tx: Any
        try:
            tx = decode_transaction(raw, lookup_tables=lookup_tables)
        except DecodeError as exc:
            tx = exc
        return evaluate(self.policy, tx, self.context())
