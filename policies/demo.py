"""``waiaas demo``: a scripted walk-through of the policy engine on the built-in example policy.

It plays the owner (signs the example policy), the signer (verifies the signature, decodes and evaluates each
request) and the chain (an embedded LiteSVM, where the allowed transfer is executed and balances are shown).
Every key is generated fresh for the run and only public keys are printed. Exits 0 only if every request got the
verdict the script expects.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from policies.canonical import parse_json_object
from policies.decision import Decision, Verdict
from policies.document import Policy
from policies.errors import DecodeError
from policies.evaluate import EvalContext, evaluate
from policies.examples import example_policy_json
from policies.programs import TOKEN_PROGRAM, associated_token_address
from policies.signing import POLICY_PURPOSE, load_signed_policy, sign_document
from policies.transaction import decode_transaction

LAMPORTS_PER_SOL = 1_000_000_000
MERCHANT = Pubkey.from_string("FHEqRxoKaHqjfmpq5sDHwcTRetKh7uJny2UVN4pcd24J")
BLOCKED = Pubkey.from_string("3R2khGdRVoeaEHJz3FaRq6GEJRta8VPBaxy9vo4jgoJv")
EXAMPLE_MINT = Pubkey.from_string("FJrj4SdzrJU6z5mV3ymwa9rouE9Wiicue9zoJHbaGxxY")


def _sol(lamports: int) -> str:
    return f"{lamports / LAMPORTS_PER_SOL:.4f} SOL"


class _Walkthrough:
    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.failures = 0
        self.svm = LiteSVM()
        self.agent = Keypair()
        self.wallet = self.agent.pubkey()
        self.svm.airdrop(self.wallet, 20 * LAMPORTS_PER_SOL)
        self.blockhash: Hash = self.svm.latest_blockhash()
        self.policy: Policy | None = None

    def step(self, title: str) -> None:
        self.out(f"\n== {title}")

    def install_policy(self) -> None:
        self.step("The owner signs the example policy; the signer verifies it")
        owner = Ed25519PrivateKey.generate()
        owner_key = Pubkey.from_bytes(owner.public_key().public_bytes_raw())
        envelope = sign_document(POLICY_PURPOSE, parse_json_object(example_policy_json()), owner)
        self.policy = load_signed_policy(json.dumps(envelope), owner=owner_key, wallet_id="demo-wallet")
        self.out(f"owner key      {owner_key}")
        self.out(f"agent key      {self.wallet}  (balance {_sol(self.svm.get_balance(self.wallet) or 0)})")
        self.out(f"policy         wallet {self.policy.wallet_id}, sequence {self.policy.sequence}, signature verified")
        for lim in self.policy.rules.limits:
            tier = lim.per_transaction
            self.out(f"  limit {lim.id:10} per transaction: automatic {tier.automatic}, approval {tier.approval}")
        for period in self.policy.rules.fees.periods:
            tier = period.tier
            self.out(f"  fees  {period.id:10} per {period.window_seconds}s: automatic {tier.automatic}, "
                     f"approval {tier.approval} lamports")  # fmt: skip

    def message(self, instructions: list[Instruction]) -> Message:
        budget = [set_compute_unit_price(1_000), set_compute_unit_limit(20_000)]
        return Message.new_with_blockhash([*budget, *instructions], self.wallet, self.blockhash)

    def decide(self, title: str, raw: bytes, expected: Verdict, spent_sol: int = 0) -> Decision:
        if self.policy is None:
            raise RuntimeError("install_policy first")
        self.step(title)
        spent = dict.fromkeys(self.policy.spend_windows(), 0)
        spent[("SOL", 86_400)] = spent_sol
        ctx = EvalContext(datetime.now(UTC), frozenset({self.wallet}), spent, 0, 0)
        tx: Any
        try:
            tx = decode_transaction(raw)
        except DecodeError as exc:
            tx = exc
        decision = evaluate(self.policy, tx, ctx)
        self.out(f"verdict        {decision.verdict.label.upper()}")
        for reason in decision.reasons:
            where = "" if reason.instruction is None else f" (instruction {reason.instruction})"
            self.out(f"  {reason.rule}{where}: {reason.message}")
        for r in decision.reservations:
            self.out(f"  reserve {r.amount} of {r.asset}")
        if decision.verdict is not expected:
            self.failures += 1
            self.out(f"  UNEXPECTED: the script expected {expected.label.upper()}")
        return decision

    def pay(self, lamports: int, to: Pubkey = MERCHANT) -> Instruction:
        return transfer(TransferParams(from_pubkey=self.wallet, to_pubkey=to, lamports=lamports))

    def run(self) -> int:
        self.install_policy()
        small = Transaction([self.agent], self.message([self.pay(LAMPORTS_PER_SOL // 2)]), self.blockhash)
        unsigned = Transaction.new_unsigned(small.message)
        decision = self.decide("Agent pays a merchant 0.5 SOL", bytes(unsigned), Verdict.ALLOW)
        if decision.allowed:
            result = self.svm.send_transaction(small)
            ok = not hasattr(result, "err")
            self.out(f"  signed and executed on LiteSVM: {'ok' if ok else result}")
            self.out(
                f"  merchant {_sol(self.svm.get_balance(MERCHANT) or 0)}, "
                f"agent {_sol(self.svm.get_balance(self.wallet) or 0)}"
            )
            self.failures += 0 if ok else 1

        def unsigned_tx(*ixs: Instruction) -> bytes:
            return bytes(Transaction.new_unsigned(self.message(list(ixs))))

        self.decide(
            "Agent pays 3 SOL: above the automatic threshold",
            unsigned_tx(self.pay(3 * LAMPORTS_PER_SOL)),
            Verdict.ESCALATE,
        )
        self.decide(
            "Agent pays 0.9 SOL after 4.5 SOL today: the daily threshold escalates",
            unsigned_tx(self.pay(9 * LAMPORTS_PER_SOL // 10)),
            Verdict.ESCALATE,
            spent_sol=45 * LAMPORTS_PER_SOL // 10,
        )
        self.decide(
            "Agent pays 15 SOL: above the approval ceiling", unsigned_tx(self.pay(15 * LAMPORTS_PER_SOL)), Verdict.DENY
        )
        self.decide(
            "A second, hidden transfer to a stranger",
            unsigned_tx(self.pay(1000), self.pay(1000, Keypair().pubkey())),
            Verdict.DENY,
        )
        self.decide("Transfer to a denylisted address", unsigned_tx(self.pay(1000, BLOCKED)), Verdict.DENY)
        approve = Instruction(
            TOKEN_PROGRAM,
            bytes([4]) + (2**64 - 1).to_bytes(8, "little"),  # Approve(u64::MAX)
            [
                AccountMeta(associated_token_address(self.wallet, EXAMPLE_MINT, TOKEN_PROGRAM), False, True),
                AccountMeta(Keypair().pubkey(), False, False),
                AccountMeta(self.wallet, True, False),
            ],
        )
        self.decide("Attack: approve a delegate over the wallet's tokens", unsigned_tx(approve), Verdict.FREEZE)
        self.decide("Garbage instead of a transaction", b"\x01" + b"\x00" * 80, Verdict.DENY)

        self.out(f"\n{'all steps behaved as expected' if not self.failures else f'{self.failures} step(s) misbehaved'}")
        return 0 if not self.failures else 1


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser("demo", help="walk through the policy engine on built-in examples")
    demo.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return _Walkthrough(print).run()


if __name__ == "__main__":
    sys.exit(_run(argparse.Namespace()))
