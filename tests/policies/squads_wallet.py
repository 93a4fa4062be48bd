"""A wallet that is a Squads multisig, for policy tests: its scenario, a spending-limit use, a decision."""

from __future__ import annotations

from solders.instruction import Instruction
from solders.pubkey import Pubkey

from policies import programs
from policies.decision import Decision
from policies.decoders.squads import squads_vault_address
from policies.errors import DecodeError
from policies.evaluate import evaluate
from policies.model import DecodedTransaction
from policies.programs import associated_token_address
from policies.transaction import decode_transaction
from tests.support.policies import MERCHANT
from tests.support.scenario import Scenario
from tests.support.squads_encoder import SquadsEncoder

ENC = SquadsEncoder()
MULTISIG = Pubkey.from_string("7Yb4ZqFQmKQ6nqpYkY5ZbL8kS4hW1bWq3m8qfXkJ9XnA")
VAULT = squads_vault_address(MULTISIG, 0)


def squads_scenario() -> Scenario:
    s = Scenario()
    s.doc["rules"]["programs"].append(str(programs.SQUADS_V4_PROGRAM))
    return s


def decide(s: Scenario, raw: bytes, multisig: Pubkey | None = MULTISIG) -> Decision:
    """Evaluate with the agent key as the wallet key and ``multisig`` as the policy's declared multisig."""
    s.doc["rules"]["squads_multisig"] = None if multisig is None else str(multisig)
    s._policy = None  # the document changed: parse it again
    ctx = s.context()
    tx: DecodedTransaction | DecodeError
    try:
        tx = decode_transaction(raw)
    except DecodeError as exc:
        tx = exc
    return evaluate(s.policy, tx, ctx)


def spend(s: Scenario, amount: int, to: Pubkey = MERCHANT, *, mint: Pubkey | None = None) -> Instruction:
    accounts: dict[str, Pubkey | None] = {
        "multisig": MULTISIG, "member": s.wallet, "spending_limit": Pubkey.new_unique(), "vault": VAULT,
        "destination": to, "system_program": programs.SYSTEM_PROGRAM, "mint": None, "vault_token_account": None,
        "destination_token_account": None, "token_program": None,
    }  # fmt: skip
    if mint is not None:
        accounts.update(
            system_program=None,
            mint=mint,
            token_program=programs.TOKEN_PROGRAM,
            vault_token_account=associated_token_address(VAULT, mint, programs.TOKEN_PROGRAM),
            destination_token_account=associated_token_address(to, mint, programs.TOKEN_PROGRAM),
        )
    return ENC.instruction("spending_limit_use", accounts, {"amount": amount, "decimals": 9 if mint is None else 6,
                                                            "memo": None})  # fmt: skip
