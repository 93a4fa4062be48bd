"""Attack corpus: System account creation onto a wallet key, each case decided by the real engine under the example
policy and then executed on LiteSVM to show what the signature would have done.

`CreateAccount` needs the signature of its new account, and succeeds when that address holds no lamports yet: an
agent key before it is funded, an empty Squads vault. Someone else pays, so the only effect on the wallet's
limits used to be none (the funder's outflow is not the wallet's), and the example policy allowed it: the agent's
own address became an account of another program (or a nonce account of the attacker), and what the owner later
sent to it landed where that program (or the attacker) rules (found in the design audit). It is now an authority
change over the wallet (FREEZE), unless the account stays a System account without data, which is only a payment
to the wallet and stays allowed.

The Squads vault cases are decided only: the compiled Squads program is not available offline (as in
`test_attack_squads`); the System instruction they carry is the one executed here for the agent key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from solders import system_program as sp
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from policies import programs
from policies.decision import Verdict
from policies.decoders.squads_vault import squads_ephemeral_signer_address, squads_transaction_address
from tests.policies.squads_wallet import ENC, MULTISIG, VAULT, decide, squads_scenario
from tests.support.chain import LAMPORTS_PER_SOL, ChainError, airdrop, balance, execute, fresh_chain, funded_keypair
from tests.support.policies import MERCHANT
from tests.support.scenario import Scenario
from tests.support.squads_encoder import compile_vault_message

PROGRAM = Pubkey.from_string("9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin")
"""Some other program: the attacker's, say (no code needs to be deployed there to own accounts)."""
NONCE_SPACE = 80
FUNDING = LAMPORTS_PER_SOL // 10
"""What the attacker's CreateAccount puts in the new account (rent-exempt at every size used here)."""
TOP_UP = 2 * LAMPORTS_PER_SOL


@dataclass
class World:
    svm: LiteSVM
    s: Scenario
    attacker: Keypair

    def create(self, new: Pubkey, *, space: int, owner: Pubkey) -> Instruction:
        return sp.create_account({"from_pubkey": self.attacker.pubkey(), "to_pubkey": new, "lamports": FUNDING,
                                  "space": space, "owner": owner})  # fmt: skip

    def unsigned(self, *instructions: Instruction, payer: Keypair | None = None) -> bytes:
        """What the attacker hands the agent to sign: paid by ``payer`` (the attacker unless given)."""
        self.s.blockhash = self.svm.latest_blockhash()
        return self.s.legacy(*instructions, payer=(payer or self.attacker).pubkey())

    def run(self, raw: bytes, *signers: Keypair) -> None:
        """Sign ``raw`` with ``signers`` (the agent's signature is what the policy decided on) and execute it."""
        execute(self.svm, bytes(VersionedTransaction(VersionedTransaction.from_bytes(raw).message, list(signers))))

    def owner_tops_up(self) -> None:
        """The owner funds the agent's address, as they would a wallet."""
        owner = funded_keypair(self.svm)
        message = Message.new_with_blockhash(
            [sp.transfer({"from_pubkey": owner.pubkey(), "to_pubkey": self.s.wallet, "lamports": TOP_UP})],
            owner.pubkey(),
            self.svm.latest_blockhash(),
        )
        execute(self.svm, bytes(VersionedTransaction(message, [owner])))

    def agent_pays_merchant(self, fee_payer: Keypair | None = None) -> None:
        """The agent pays a merchant from its own address, and its fee too unless ``fee_payer`` pays it."""
        payer = fee_payer or self.s.agent
        raw = self.unsigned(self.s.pay(1_000), payer=payer)
        assert self.s.decide(raw).verdict is Verdict.ALLOW
        self.run(raw, *{payer.pubkey(): payer, self.s.wallet: self.s.agent}.values())


@pytest.fixture
def world() -> World:
    svm = fresh_chain()
    airdrop(svm, MERCHANT, LAMPORTS_PER_SOL)
    return World(svm, Scenario(), funded_keypair(svm))  # the agent's address holds nothing yet


def _to_program(w: World, space: int) -> list[Instruction]:
    return [w.create(w.s.wallet, space=space, owner=PROGRAM)]


def _to_attackers_nonce(w: World) -> list[Instruction]:
    init = sp.initialize_nonce_account({"nonce_pubkey": w.s.wallet, "authority": w.attacker.pubkey()})
    return [w.create(w.s.wallet, space=NONCE_SPACE, owner=programs.SYSTEM_PROGRAM), init]


def _program_owns_what_the_owner_sends(w: World) -> None:
    account = w.svm.get_account(w.s.wallet)
    assert account is not None and account.owner == PROGRAM
    w.owner_tops_up()
    assert balance(w.svm, w.s.wallet) > TOP_UP
    # The agent can no longer pay a fee from its address, nor move what it holds:
    with pytest.raises(ChainError, match="InvalidAccountForFee"):
        w.agent_pays_merchant()
    with pytest.raises(ChainError, match=r"must not carry data|spent from the balance of an account it does not own"):
        w.agent_pays_merchant(fee_payer=w.attacker)


def _attacker_withdraws_what_the_owner_sends(w: World) -> None:
    w.owner_tops_up()
    attacker = w.attacker.pubkey()
    before = balance(w.svm, attacker)
    take = sp.withdraw_nonce_account({"nonce_pubkey": w.s.wallet, "authorized_pubkey": attacker,
                                      "to_pubkey": attacker, "lamports": TOP_UP})  # fmt: skip
    message = Message.new_with_blockhash([take], attacker, w.svm.latest_blockhash())
    w.run(bytes(VersionedTransaction(message, [w.attacker])), w.attacker)
    assert w.svm.get_balance(attacker) == before + TOP_UP - 5_000


@dataclass(frozen=True)
class Takeover:
    name: str
    build: Callable[[World], list[Instruction]]
    effect: Callable[[World], None]


TAKEOVERS = [
    Takeover("CreateAccount makes the agent's address another program's account, with data",
             lambda w: _to_program(w, 165), _program_owns_what_the_owner_sends),
    Takeover("CreateAccount hands the agent's address to another program, without data",
             lambda w: _to_program(w, 0), _program_owns_what_the_owner_sends),
    Takeover("CreateAccount makes the agent's address a System account with data: the attacker's nonce account",
             _to_attackers_nonce, _attacker_withdraws_what_the_owner_sends),
]  # fmt: skip


@pytest.mark.litesvm
@pytest.mark.parametrize("case", TAKEOVERS, ids=[t.name for t in TAKEOVERS])
def test_create_account_onto_the_agent_key_freezes(world: World, case: Takeover) -> None:
    raw = world.unsigned(*case.build(world))
    decision = world.s.decide(raw)
    rules = [(r.rule, r.instruction, r.seen) for r in decision.reasons]
    assert decision.verdict is Verdict.FREEZE, rules
    assert ("freeze.authority_change", 2, str(world.s.wallet)) in rules  # after the two compute-budget instructions
    assert decision.reservations == ()
    # What the agent's signature would have done:
    world.run(raw, world.attacker, world.s.agent)
    case.effect(world)


@pytest.mark.litesvm
def test_create_account_that_only_funds_the_agents_address_is_allowed(world: World) -> None:
    """A System account without data is what the address was: the funder's lamports arrive and the agent keeps
    spending from its address (no authority moves, so no freeze, and no false denial)."""
    raw = world.unsigned(world.create(world.s.wallet, space=0, owner=programs.SYSTEM_PROGRAM))
    decision = world.s.decide(raw)
    assert decision.verdict is Verdict.ALLOW, [r.to_json() for r in decision.reasons]
    world.run(raw, world.attacker, world.s.agent)
    account = world.svm.get_account(world.s.wallet)
    assert account is not None
    assert (account.owner, len(account.data)) == (programs.SYSTEM_PROGRAM, 0)
    world.agent_pays_merchant()


@pytest.mark.litesvm
@pytest.mark.parametrize("new", ["agent", "vault"])
def test_create_account_with_seed_cannot_name_a_wallet_key(world: World, new: str) -> None:
    """CreateAccountWithSeed's new address must derive from (base, seed, owner): never the agent key nor the vault.
    The decoder checks the derivation (DENY), and the chain refuses the same transaction. A guard: this was already
    refused before the CreateAccount change."""
    target = world.s.wallet if new == "agent" else VAULT
    lamports = world.svm.minimum_balance_for_rent_exemption(165)
    ix = sp.create_account_with_seed({"from_pubkey": world.attacker.pubkey(), "to_pubkey": target,
                                      "base": world.s.wallet, "seed": "x", "lamports": lamports, "space": 165,
                                      "owner": PROGRAM})  # fmt: skip
    raw = world.unsigned(ix)
    decision = world.s.decide(raw)
    assert decision.verdict is Verdict.DENY
    assert [r.message for r in decision.reasons] == ["create_account_with_seed: address does not derive from (base, "
                                                     "seed, owner)"]  # fmt: skip
    with pytest.raises(ChainError, match="does not match"):
        world.run(raw, world.attacker, world.s.agent)
    assert world.svm.get_account(target) is None


# -- the Squads vault --------------------------------------------------------------------------------------------


def _vault_creates(s: Scenario, *, space: int, owner: Pubkey) -> bytes:
    """A vault transaction whose message creates an account at the vault's own address, funded by the message's
    ephemeral signer (a PDA of the vault transaction that anyone can pre-fund: the vault itself must be empty)."""
    transaction = squads_transaction_address(MULTISIG, 1)
    funder = squads_ephemeral_signer_address(transaction, 0)
    create = sp.create_account({"from_pubkey": funder, "to_pubkey": VAULT, "lamports": 10_000_000, "space": space,
                                "owner": owner})  # fmt: skip
    accounts = {"multisig": MULTISIG, "transaction": transaction, "creator": s.wallet, "rent_payer": s.wallet,
                "system_program": programs.SYSTEM_PROGRAM}  # fmt: skip
    args = {"vault_index": 0, "ephemeral_signers": 1, "transaction_message": compile_vault_message(VAULT, [create]),
            "memo": None}  # fmt: skip
    return s.legacy(ENC.instruction("vault_transaction_create", accounts, args))


@pytest.mark.parametrize(("space", "owner"), [(165, PROGRAM), (0, PROGRAM), (NONCE_SPACE, programs.SYSTEM_PROGRAM)])
def test_create_account_onto_the_vault_freezes(space: int, owner: Pubkey) -> None:
    s = squads_scenario()
    decision = decide(s, _vault_creates(s, space=space, owner=owner))
    rules = [(r.rule, r.instruction, r.inner, r.seen) for r in decision.reasons]
    assert decision.verdict is Verdict.FREEZE, rules
    assert rules == [("freeze.authority_change", 2, 0, str(VAULT))]


def test_create_account_that_only_funds_the_vault_is_allowed() -> None:
    s = squads_scenario()
    decision = decide(s, _vault_creates(s, space=0, owner=programs.SYSTEM_PROGRAM))
    assert decision.verdict is Verdict.ALLOW, [r.to_json() for r in decision.reasons]
