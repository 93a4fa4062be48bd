"""Attack and benign cases for Squads v4 transactions, evaluated by the real decoder and evaluator.

The wallet is a Squads multisig: the agent key signs and pays, and the policy's ``squads_multisig`` names the
wallet's multisig, whose vault then counts as the wallet's inside its instructions. The example policy is used with
the Squads program added to its ``programs``. Instructions are built by the IDL-driven encoder
(`tests.support.squads_encoder`). The compiled Squads program is not available offline, so these transactions are
not executed on LiteSVM: the verdicts are the engine's, the on-chain behaviour is taken from the program sources.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import spl.token.instructions as tok
import spl.token.models as spl
from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer

from policies import programs
from policies.decision import Verdict
from policies.decoders.squads_vault import squads_proposal_address, squads_transaction_address
from policies.programs import associated_token_address
from tests.policies.squads_wallet import ENC, MULTISIG, VAULT, decide, spend, squads_scenario
from tests.support.policies import EXAMPLE_MINT, MERCHANT
from tests.support.scenario import FEE, Scenario
from tests.support.squads_encoder import compile_vault_message, proposal_rent, vault_transaction_rent

STRANGER = Pubkey.from_string("9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin")
SOL = 1_000_000_000


def vault_tx(s: Scenario, *inner: Instruction, index: int = 1) -> Instruction:
    accounts = {"multisig": MULTISIG, "transaction": squads_transaction_address(MULTISIG, index),
                "creator": s.wallet, "rent_payer": s.wallet, "system_program": programs.SYSTEM_PROGRAM}  # fmt: skip
    args = {"vault_index": 0, "ephemeral_signers": 0, "transaction_message": compile_vault_message(VAULT, inner),
            "memo": None}  # fmt: skip
    return ENC.instruction("vault_transaction_create", accounts, args)


def vault_pay(lamports: int, to: Pubkey = MERCHANT) -> Instruction:
    return transfer(TransferParams(from_pubkey=VAULT, to_pubkey=to, lamports=lamports))


def propose_and_approve(s: Scenario, index: int = 1) -> list[Instruction]:
    proposal = squads_proposal_address(MULTISIG, index)
    create = ENC.instruction("proposal_create", {"multisig": MULTISIG, "proposal": proposal, "creator": s.wallet,
                             "rent_payer": s.wallet, "system_program": programs.SYSTEM_PROGRAM},
                             {"transaction_index": index, "draft": False})  # fmt: skip
    return [create, approve(s, index)]


def approve(s: Scenario, index: int) -> Instruction:
    accounts = {"multisig": MULTISIG, "member": s.wallet, "proposal": squads_proposal_address(MULTISIG, index)}
    return ENC.instruction("proposal_approve", accounts, {"memo": None})


def add_member(s: Scenario) -> Instruction:
    accounts = {"multisig": MULTISIG, "transaction": squads_transaction_address(MULTISIG, 1), "creator": s.wallet,
                "rent_payer": s.wallet, "system_program": programs.SYSTEM_PROGRAM}  # fmt: skip
    action = ("add_member", {"new_member": {"key": STRANGER, "permissions": {"mask": 7}}})
    return ENC.instruction("config_transaction_create", accounts, {"actions": [action], "memo": None})


def delegate(s: Scenario) -> Instruction:
    return tok.approve(spl.ApproveParams(program_id=programs.TOKEN_PROGRAM, source=associated_token_address(
        VAULT, EXAMPLE_MINT, programs.TOKEN_PROGRAM), delegate=STRANGER, owner=VAULT, amount=10**9))  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Scenario], list[Instruction]]
    verdict: Verdict
    rule: str | None
    inner: int | None = None


CASES = [
    Case("vault transaction hides a transfer to a stranger",
         lambda s: [vault_tx(s, vault_pay(1_000), vault_pay(1_000, STRANGER))], Verdict.DENY, "destinations.allow", 1),
    Case("vault transaction approves a delegate", lambda s: [vault_tx(s, delegate(s))], Verdict.FREEZE,
         "freeze.delegate_approval", 0),
    Case("vault transaction above the automatic threshold", lambda s: [vault_tx(s, vault_pay(2 * SOL))],
         Verdict.ESCALATE, "limits.sol.per_transaction"),
    Case("spending limit above the automatic threshold", lambda s: [spend(s, 2 * SOL)], Verdict.ESCALATE,
         "limits.sol.per_transaction"),
    Case("spending limit to a stranger", lambda s: [spend(s, 1_000, STRANGER)], Verdict.DENY, "destinations.allow"),
    Case("spending limit of a token to a stranger", lambda s: [spend(s, 1_000, STRANGER, mint=EXAMPLE_MINT)],
         Verdict.DENY, "destinations.allow"),
    Case("config transaction adds a member", lambda s: [add_member(s)], Verdict.FREEZE, "freeze.authority_change"),
    Case("approval of a transaction not in view", lambda s: [approve(s, 7)], Verdict.DENY, "decode.opaque"),
    Case("approval of another index than the one created", lambda s: [vault_tx(s, vault_pay(1_000)),
         *propose_and_approve(s, 2)], Verdict.DENY, "decode.opaque"),
    Case("nested vault message too deep", lambda s: [vault_tx(s, vault_tx(s, vault_pay(1_000)))], Verdict.DENY,
         "decode.opaque", 0),
    Case("agent votes against a proposal", lambda s: [ENC.instruction("proposal_reject", {
         "multisig": MULTISIG, "member": s.wallet, "proposal": squads_proposal_address(MULTISIG, 3)}, {"memo": None})],
         Verdict.DENY, "restricted"),
    Case("benign: vault transaction pays a merchant", lambda s: [vault_tx(s, vault_pay(1_000))], Verdict.ALLOW, None),
    Case("benign: create, propose and approve in one transaction",
         lambda s: [vault_tx(s, vault_pay(1_000)), *propose_and_approve(s)], Verdict.ALLOW, None),
    Case("benign: spending limit pays a merchant", lambda s: [spend(s, 1_000)], Verdict.ALLOW, None),
    Case("benign: token spending limit pays a merchant", lambda s: [spend(s, 1_000, mint=EXAMPLE_MINT)],
         Verdict.ALLOW, None),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_squads_case(case: Case) -> None:
    s = squads_scenario()
    decision = decide(s, s.legacy(*case.build(s)))
    rules = [(r.rule, r.instruction, r.inner) for r in decision.reasons]
    assert decision.verdict is case.verdict, f"{case.name}: got {decision.verdict.label} {rules}"
    if case.rule is None:
        assert decision.reasons == ()
    else:
        assert any(rule == case.rule and inner == case.inner for rule, _, inner in rules), rules
        if not case.rule.startswith("limits."):  # limits are per transaction; the rest name the instruction
            assert any(rule == case.rule and (index or 0) >= 2 for rule, index, _ in rules), rules


def test_vault_outflows_are_reserved_against_the_limits() -> None:
    s = squads_scenario()
    decision = decide(s, s.legacy(vault_tx(s, vault_pay(1_000), vault_pay(2_000)), spend(s, 500)))
    assert decision.verdict is Verdict.ALLOW
    rent = vault_transaction_rent(compile_vault_message(VAULT, [vault_pay(1_000), vault_pay(2_000)]))
    assert [(r.asset, r.amount) for r in decision.reservations] == [("SOL", 3_500 + rent), ("fees", FEE)]


def test_the_rent_of_squads_accounts_counts_against_the_limits() -> None:
    """Before: the rent the agent's key deposits for vault transactions and proposals was not counted, so a
    compromised agent could lock up SOL in Squads accounts as fast as the rate rule allowed (found in review)."""
    s = squads_scenario()
    memo = Instruction(programs.MEMO_V2_PROGRAM, b"x" * 600, [AccountMeta(VAULT, True, False)])
    create = vault_tx(s, memo)
    decision = decide(s, s.legacy(create, *propose_and_approve(s)))
    rent = vault_transaction_rent(compile_vault_message(VAULT, [memo])) + proposal_rent(10)
    assert decision.verdict is Verdict.ALLOW
    assert [(r.asset, r.amount) for r in decision.reservations] == [("SOL", rent), ("fees", FEE)]
    # spent up to the automatic daily threshold: the same creation now needs the owner
    s.spent = {("SOL", 86_400): 5 * SOL - rent + 1}
    assert decide(s, s.legacy(create, *propose_and_approve(s))).verdict is Verdict.ESCALATE


def test_without_the_squads_program_on_the_allowlist_everything_is_denied() -> None:
    s = Scenario()
    decision = decide(s, s.legacy(vault_tx(s, vault_pay(1_000))))
    assert decision.verdict is Verdict.DENY
    assert "programs.allow" in [r.rule for r in decision.reasons]


def test_squads_instructions_on_another_multisig_are_denied() -> None:
    """Without this rule a vault the wallet does not own would be nobody's, and its outflows would go uncounted."""
    s = squads_scenario()
    raw = s.legacy(vault_tx(s, vault_pay(50 * SOL, STRANGER)))
    for multisig in (Pubkey.new_unique(), None):
        decision = decide(s, raw, multisig=multisig)
        assert decision.verdict is Verdict.DENY
        assert [r.rule for r in decision.reasons] == ["squads.multisig"]  # that vault's payment is not the wallet's


def test_a_vault_of_another_multisig_is_not_the_wallets_so_its_effects_do_not_freeze() -> None:
    """The vault counts as the wallet's only inside instructions on the policy's own multisig (docs/policies.md,
    Squads v4): another multisig's vault approving a delegate is denied for the multisig, not frozen as the
    wallet's own authority change."""
    s = squads_scenario()
    raw = s.legacy(vault_tx(s, delegate(s)))
    assert decide(s, raw).verdict is Verdict.FREEZE  # on the wallet's multisig: the vault's approval freezes
    decision = decide(s, raw, multisig=Pubkey.new_unique())
    assert (decision.verdict, [r.rule for r in decision.reasons]) == (Verdict.DENY, ["squads.multisig"])


def test_the_vault_counts_only_inside_the_wallets_multisig_instructions() -> None:
    s = squads_scenario()
    decision = decide(s, s.legacy(vault_tx(s, vault_pay(2 * SOL))))
    assert decision.verdict is Verdict.ESCALATE
    rent = vault_transaction_rent(compile_vault_message(VAULT, [vault_pay(2 * SOL)]))
    assert [(r.asset, r.amount) for r in decision.reservations] == [("SOL", 2 * SOL + rent), ("fees", FEE)]
