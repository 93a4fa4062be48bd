"""The rent a wallet key pays for a Squads config transaction (nineteenth-session decoder review): counted as
``squads_rent`` when it creates the config transaction account (its size is in the instruction), and refused as a
wallet authority change when it funds an execution (what the stored actions make, the multisig's growth and new
spending limits, is not in the instruction). Before, both were allowed and neither counted. Both need the owner
as the creating or executing member, who signs the same transaction."""

from __future__ import annotations

from solders.instruction import Instruction
from solders.pubkey import Pubkey

from policies import programs
from policies.decision import Verdict
from policies.decoders.squads_rent import config_transaction_rent
from policies.decoders.squads_vault import squads_proposal_address, squads_transaction_address
from tests.policies.squads_wallet import ENC, MULTISIG, decide, squads_scenario
from tests.support.policies import MERCHANT

OWNER = Pubkey.new_unique()
SPENDING_LIMIT = {
    "create_key": OWNER, "vault_index": 0, "mint": MERCHANT, "amount": 10**12, "period": "day",
    "members": [OWNER], "destinations": [],
}  # fmt: skip
# Borsh: variant byte, create_key, vault_index, mint, amount, period, members (length + 1 key), destinations
SPENDING_LIMIT_SIZE = 1 + 32 + 1 + 32 + 8 + 1 + (4 + 32) + 4


def create(rent_payer: Pubkey) -> Instruction:
    accounts = {"multisig": MULTISIG, "transaction": squads_transaction_address(MULTISIG, 7), "creator": OWNER,
                "rent_payer": rent_payer, "system_program": programs.SYSTEM_PROGRAM}  # fmt: skip
    return ENC.instruction("config_transaction_create", accounts,
                           {"actions": [("add_spending_limit", SPENDING_LIMIT)], "memo": None})  # fmt: skip


def execute(rent_payer: Pubkey | None) -> Instruction:
    accounts = {"multisig": MULTISIG, "member": OWNER, "proposal": squads_proposal_address(MULTISIG, 7),
                "transaction": squads_transaction_address(MULTISIG, 7), "rent_payer": rent_payer,
                "system_program": programs.SYSTEM_PROGRAM if rent_payer is not None else None}  # fmt: skip
    return ENC.instruction("config_transaction_execute", accounts)


def test_the_config_transaction_rent_the_agent_pays_is_reserved() -> None:
    s = squads_scenario()
    decision = decide(s, s.legacy(create(s.wallet), budget=False))
    reserved = {r.asset: r.amount for r in decision.reservations}
    assert decision.verdict is Verdict.ALLOW, decision.reasons
    assert config_transaction_rent(SPENDING_LIMIT_SIZE) == (128 + 85 + 115) * 6_960  # 200 bytes, rent-exempt
    assert reserved["SOL"] == config_transaction_rent(SPENDING_LIMIT_SIZE)


def test_the_owner_paying_the_rent_reserves_nothing_of_the_wallet() -> None:
    s = squads_scenario()
    decision = decide(s, s.legacy(create(OWNER), budget=False))
    assert decision.verdict is Verdict.ALLOW and "SOL" not in {r.asset for r in decision.reservations}
    decision = decide(s, s.legacy(execute(OWNER), budget=False))
    assert decision.verdict is Verdict.ALLOW, decision.reasons


def test_an_execution_the_agent_funds_is_refused() -> None:
    s = squads_scenario()
    decision = decide(s, s.legacy(execute(s.wallet), budget=False))
    assert decision.verdict in (Verdict.DENY, Verdict.FREEZE)
    assert [r.rule for r in decision.reasons] == ["freeze.authority_change"]
    assert "config_transaction_execute:rent_payer" in decision.reasons[0].message
    assert decide(s, s.legacy(execute(None), budget=False)).verdict is Verdict.ALLOW  # no rent payer named
