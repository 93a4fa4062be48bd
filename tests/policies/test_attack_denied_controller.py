"""Attack corpus: the wallet funds an account that the same transaction hands to a denied party.

Under ``destinations.allow: "any"`` only the denylist keeps a party out. The engine used to judge only the address
an outflow pays, so one transaction could fund a fresh account and, in the same transaction, name the denied key as
the one who controls it: the authority of a nonce account (it withdraws the SOL), the owner of a wrapped-SOL token
account (it closes it and takes the SOL) or of a token account of an allowlisted mint (it holds the tokens), the
new owner, close authority or delegate of a token account, the base of a seeded System account, or simply the
recipient of what the fresh account passes on. Every case was allowed before (found in the seventeenth session's
bypass hunt); each is now denied with rule ``destinations.deny`` naming the denied key
(`policies.control`). Each test first decides the same transaction with a party that is on no list (allowed: no
false denial), then with the denied key, then executes the denied version on LiteSVM and lets the denied key take
what the wallet paid, to show what the signature would have done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import spl.token.instructions as tok
import spl.token.models as spl
from solders import system_program as sp
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from policies import programs
from policies.decision import Decision, Verdict
from policies.decoders.squads_vault import squads_ephemeral_signer_address, squads_transaction_address
from tests.policies.squads_wallet import ENC, MULTISIG, VAULT, decide, squads_scenario
from tests.support.chain import (
    LAMPORTS_PER_SOL,
    airdrop,
    ata_address,
    balance,
    create_ata,
    create_mint,
    execute,
    fresh_chain,
    funded_keypair,
    install_native_mint,
    mint_tokens,
    send,
    token_balance,
)
from tests.support.policies import MERCHANT
from tests.support.scenario import Scenario
from tests.support.squads_encoder import compile_vault_message

PAID = LAMPORTS_PER_SOL // 10
"""What the wallet puts in the account (below the example policy's automatic SOL limit)."""
TOKENS = 50_000_000
"""What the wallet sends of the allowlisted mint (below its automatic limit)."""
NONCE_SPACE = 80
TOKEN_ACCOUNT_SPACE = 165
SEED = "waiaas"


@dataclass
class World:
    svm: LiteSVM
    s: Scenario
    blocked: Keypair
    """The denied party. Its key is ours here only to show what it takes."""
    stranger: Keypair
    """A party on no list: the same transaction naming it is allowed."""
    helper: Keypair
    """Pays the fees of the denied party's take-out, so that its balance shows exactly what it took."""
    mints: dict[Pubkey, Pubkey]
    """An allowlisted mint the wallet holds, per token program."""
    spare_mint: Pubkey
    """A mint the policy does not name (SPL Token)."""

    def decide(self, instructions: Sequence[Instruction], payer: Pubkey | None = None) -> Decision:
        self.s.blockhash = self.svm.latest_blockhash()
        return self.s.decide(self.s.legacy(*instructions, payer=payer))

    def run(self, instructions: Sequence[Instruction], signers: Sequence[Keypair]) -> None:
        """Sign with the agent key (what the policy decided on) and ``signers``, and execute."""
        self.s.blockhash = self.svm.latest_blockhash()
        message = VersionedTransaction.from_bytes(self.s.legacy(*instructions)).message
        execute(self.svm, bytes(VersionedTransaction(message, [self.s.agent, *signers])))

    def as_blocked(self, instructions: Sequence[Instruction]) -> None:
        send(self.svm, self.helper, instructions, [self.blocked])

    def wallet_token_account(self, program: Pubkey) -> Pubkey:
        return ata_address(self.s.wallet, self.mints[program], program)


@pytest.fixture
def world() -> World:
    svm = fresh_chain()
    install_native_mint(svm)
    s = Scenario()
    blocked, stranger = funded_keypair(svm, LAMPORTS_PER_SOL), funded_keypair(svm, LAMPORTS_PER_SOL)
    airdrop(svm, s.wallet, 10 * LAMPORTS_PER_SOL)
    authority = funded_keypair(svm)
    mints = {}
    for program in programs.TOKEN_PROGRAMS:
        mint = create_mint(svm, s.agent, authority=authority.pubkey(), token_program=program)
        own = create_ata(svm, s.agent, owner=s.wallet, mint=mint, token_program=program)
        mint_tokens(svm, s.agent, mint=mint, destination=own, authority=authority, amount=10**9, token_program=program)
        mints[program] = mint
    rules = s.doc["rules"]
    rules["destinations"] = {"allow": "any", "deny": [str(blocked.pubkey())]}
    rules["mints"] = [str(m) for m in mints.values()]
    rules["limits"][1]["asset"] = str(mints[programs.TOKEN_PROGRAM])
    token_2022 = str(mints[programs.TOKEN_2022_PROGRAM])
    rules["limits"].append({**rules["limits"][1], "id": "token-2022", "asset": token_2022, "periods": []})
    spare = create_mint(svm, s.agent, authority=authority.pubkey())
    return World(svm, s, blocked, stranger, funded_keypair(svm), mints, spare)


def _create(w: World, new: Pubkey, *, lamports: int = PAID, space: int, owner: Pubkey) -> Instruction:
    return sp.create_account({"from_pubkey": w.s.wallet, "to_pubkey": new, "lamports": lamports, "space": space,
                              "owner": owner})  # fmt: skip


def _init_nonce(account: Pubkey, authority: Pubkey) -> Instruction:
    return sp.initialize_nonce_account({"nonce_pubkey": account, "authority": authority})


def _init_token(tag: int, account: Pubkey, mint: Pubkey, owner: Pubkey, program: Pubkey) -> Instruction:
    params = {"program_id": program, "account": account, "mint": mint, "owner": owner}
    if tag == 1:
        return tok.initialize_account(spl.InitializeAccountParams(**params))
    if tag == 16:
        return tok.initialize_account2(spl.InitializeAccount2Params(**params))
    return tok.initialize_account3(spl.InitializeAccount3Params(**params))


def _pay_tokens(w: World, destination: Pubkey, program: Pubkey) -> Instruction:
    return tok.transfer_checked(spl.TransferCheckedParams(
        program_id=program, source=w.wallet_token_account(program), mint=w.mints[program], dest=destination,
        owner=w.s.wallet, amount=TOKENS, decimals=6))  # fmt: skip


# -- what the denied party does with what it was handed ----------------------------------------------------------


def _withdraw_nonce(w: World, account: Pubkey) -> None:
    w.svm.expire_blockhash()  # a nonce account can be emptied once its stored nonce is no longer recent
    b = w.blocked.pubkey()
    w.as_blocked([sp.withdraw_nonce_account({"nonce_pubkey": account, "authorized_pubkey": b, "to_pubkey": b,
                                             "lamports": balance(w.svm, account)})])  # fmt: skip


def _close_to_itself(w: World, account: Pubkey) -> None:
    b = w.blocked.pubkey()
    w.as_blocked([tok.close_account(spl.CloseAccountParams(program_id=programs.TOKEN_PROGRAM, account=account,
                                                           dest=b, owner=b))])  # fmt: skip


def _take_with_seed(w: World, account: Pubkey) -> None:
    b = w.blocked.pubkey()
    w.as_blocked([sp.transfer_with_seed({"from_pubkey": account, "from_base": b, "from_seed": SEED,
                                         "from_owner": programs.SYSTEM_PROGRAM, "to_pubkey": b,
                                         "lamports": PAID})])  # fmt: skip


def _keeps_what_it_received(w: World, account: Pubkey) -> None:
    """Nothing to do: the lamports reached the denied key in the transaction itself."""


def _move_tokens(program: Pubkey) -> Callable[[World, Pubkey], None]:
    def move(w: World, account: Pubkey) -> None:
        b, mint = w.blocked.pubkey(), w.mints[program]
        w.as_blocked([
            tok.create_associated_token_account(w.helper.pubkey(), b, mint, program),
            tok.transfer_checked(spl.TransferCheckedParams(program_id=program, source=account, mint=mint,
                                                           dest=ata_address(b, mint, program), owner=b,
                                                           amount=TOKENS, decimals=6)),
        ])  # fmt: skip

    return move


# -- the cases: (instructions, extra signers, the account the wallet funds) for a given party ----------------------

Built = tuple[list[Instruction], list[Keypair], Pubkey]


def _nonce_for(w: World, party: Keypair) -> Built:
    new = Keypair()
    ixs = [_create(w, new.pubkey(), space=NONCE_SPACE, owner=programs.SYSTEM_PROGRAM),
           _init_nonce(new.pubkey(), party.pubkey())]  # fmt: skip
    return ixs, [new], new.pubkey()


def _wrapped_sol_for(tag: int) -> Callable[[World, Keypair], Built]:
    def build(w: World, party: Keypair) -> Built:
        new = Keypair()
        native, program = programs.NATIVE_MINT, programs.TOKEN_PROGRAM
        ixs = [_create(w, new.pubkey(), space=TOKEN_ACCOUNT_SPACE, owner=program),
               _init_token(tag, new.pubkey(), native, party.pubkey(), program)]  # fmt: skip
        return ixs, [new], new.pubkey()

    return build


def _tokens_for(program: Pubkey) -> Callable[[World, Keypair], Built]:
    def build(w: World, party: Keypair) -> Built:
        new = Keypair()
        rent = w.svm.minimum_balance_for_rent_exemption(TOKEN_ACCOUNT_SPACE)
        ixs = [_create(w, new.pubkey(), lamports=rent, space=TOKEN_ACCOUNT_SPACE, owner=program),
               _init_token(18, new.pubkey(), w.mints[program], party.pubkey(), program),
               _pay_tokens(w, new.pubkey(), program)]  # fmt: skip
        return ixs, [new], new.pubkey()

    return build


def _token_authority_to(kind: spl.AuthorityType) -> Callable[[World, Keypair], Built]:
    """A wrapped-SOL account owned by a key of the agent's own, which hands it on with SetAuthority."""

    def build(w: World, party: Keypair) -> Built:
        new, own = Keypair(), Keypair()
        ixs = [_create(w, new.pubkey(), space=TOKEN_ACCOUNT_SPACE, owner=programs.TOKEN_PROGRAM),
               _init_token(18, new.pubkey(), programs.NATIVE_MINT, own.pubkey(), programs.TOKEN_PROGRAM),
               tok.set_authority(spl.SetAuthorityParams(program_id=programs.TOKEN_PROGRAM, account=new.pubkey(),
                                                        authority=kind, current_authority=own.pubkey(),
                                                        new_authority=party.pubkey()))]  # fmt: skip
        return ixs, [new, own], new.pubkey()

    return build


def _nonce_authorized_to(w: World, party: Keypair) -> Built:
    new, own = Keypair(), Keypair()
    ixs = [_create(w, new.pubkey(), space=NONCE_SPACE, owner=programs.SYSTEM_PROGRAM),
           _init_nonce(new.pubkey(), own.pubkey()),
           sp.authorize_nonce_account({"nonce_pubkey": new.pubkey(), "authorized_pubkey": own.pubkey(),
                                       "new_authority": party.pubkey()})]  # fmt: skip
    return ixs, [new, own], new.pubkey()


def _delegate(w: World, party: Keypair) -> Built:
    new, own = Keypair(), Keypair()
    program = programs.TOKEN_PROGRAM
    rent = w.svm.minimum_balance_for_rent_exemption(TOKEN_ACCOUNT_SPACE)
    ixs = [_create(w, new.pubkey(), lamports=rent, space=TOKEN_ACCOUNT_SPACE, owner=program),
           _init_token(18, new.pubkey(), w.mints[program], own.pubkey(), program),
           tok.approve(spl.ApproveParams(program_id=program, source=new.pubkey(), delegate=party.pubkey(),
                                         owner=own.pubkey(), amount=TOKENS)),
           _pay_tokens(w, new.pubkey(), program)]  # fmt: skip
    return ixs, [new, own], new.pubkey()


def _seeded(w: World, party: Keypair) -> Built:
    """A System account whose address derives from the party's key: TransferWithSeed spends it with the party's
    signature (CreateAccountWithSeed needs that signature too: the party takes part)."""
    new = Pubkey.create_with_seed(party.pubkey(), SEED, programs.SYSTEM_PROGRAM)
    ix = sp.create_account_with_seed({"from_pubkey": w.s.wallet, "to_pubkey": new, "base": party.pubkey(),
                                      "seed": SEED, "lamports": PAID, "space": 0,
                                      "owner": programs.SYSTEM_PROGRAM})  # fmt: skip
    return [ix], [party], new


def _funded_then_made_a_nonce(w: World, party: Keypair) -> Built:
    """The payment comes first, to a plain address; the same transaction then makes it a nonce account."""
    new = Keypair()
    ixs = [sp.transfer({"from_pubkey": w.s.wallet, "to_pubkey": new.pubkey(), "lamports": PAID}),
           sp.allocate({"pubkey": new.pubkey(), "space": NONCE_SPACE}),
           _init_nonce(new.pubkey(), party.pubkey())]  # fmt: skip
    return ixs, [new], new.pubkey()


def _associated_account_paid_in_sol(w: World, party: Keypair) -> Built:
    """A key of the agent's own pays for the party's associated account of a mint the policy does not name (so the
    address is no denied token account), and the wallet sends SOL there: the owner closes the empty account and
    takes the lamports."""
    own = Keypair()
    airdrop(w.svm, own.pubkey(), LAMPORTS_PER_SOL)
    account = ata_address(party.pubkey(), w.spare_mint)
    ixs = [tok.create_associated_token_account(own.pubkey(), party.pubkey(), w.spare_mint),
           sp.transfer({"from_pubkey": w.s.wallet, "to_pubkey": account, "lamports": PAID})]  # fmt: skip
    return ixs, [own], account


def _passed_on(w: World, party: Keypair) -> Built:
    """A key of the agent's own receives the payment and passes it on in the same transaction."""
    own = Keypair()
    ixs = [sp.transfer({"from_pubkey": w.s.wallet, "to_pubkey": own.pubkey(), "lamports": PAID}),
           sp.transfer({"from_pubkey": own.pubkey(), "to_pubkey": party.pubkey(), "lamports": PAID})]  # fmt: skip
    return ixs, [own], own.pubkey()


@dataclass(frozen=True)
class Handover:
    name: str
    build: Callable[[World, Keypair], Built]
    take: Callable[[World, Pubkey], None]
    token_program: Pubkey | None = None
    """Set when the denied party ends up with tokens of the allowlisted mint under that program (else SOL)."""
    rent_too: bool = False
    """The denied party also takes the token account's rent (paid by a key of the agent's own)."""


HANDOVERS = [
    Handover("A: nonce account whose authority is the denied key", _nonce_for, _withdraw_nonce),
    *(Handover(f"B: wrapped-SOL account owned by the denied key (InitializeAccount tag {tag})", _wrapped_sol_for(tag),
               _close_to_itself) for tag in (1, 16, 18)),
    *(Handover(f"C: allowlisted tokens into an account owned by the denied key ({label})", _tokens_for(program),
               _move_tokens(program), program)
      for label, program in (("SPL Token", programs.TOKEN_PROGRAM), ("Token-2022", programs.TOKEN_2022_PROGRAM))),
    Handover("D: SetAuthority makes the denied key the owner", _token_authority_to(spl.AuthorityType.ACCOUNT_OWNER),
             _close_to_itself),
    Handover("D: SetAuthority makes the denied key the close authority",
             _token_authority_to(spl.AuthorityType.CLOSE_ACCOUNT), _close_to_itself),
    Handover("E: AuthorizeNonceAccount hands the nonce account to the denied key", _nonce_authorized_to,
             _withdraw_nonce),
    Handover("F: the denied key is the delegate of the token account paid", _delegate,
             _move_tokens(programs.TOKEN_PROGRAM), programs.TOKEN_PROGRAM),
    Handover("G: a seeded System account whose base is the denied key", _seeded, _take_with_seed),
    Handover("H: paid first, made the denied key's nonce account after", _funded_then_made_a_nonce, _withdraw_nonce),
    Handover("I: the account paid passes it on to the denied key", _passed_on, _keeps_what_it_received),
    Handover("J: SOL into the denied key's associated account of a mint off the list", _associated_account_paid_in_sol,
             _close_to_itself, rent_too=True),
]  # fmt: skip


def _deny_reasons(decision: Decision) -> list[tuple[str, str | int | None]]:
    return [(r.rule, r.seen) for r in decision.reasons if r.verdict is Verdict.DENY]


def _held(w: World, case: Handover) -> int:
    if case.token_program is None:
        return w.svm.get_balance(w.blocked.pubkey()) or 0
    return token_balance(w.svm, ata_address(w.blocked.pubkey(), w.mints[case.token_program], case.token_program))


@pytest.mark.litesvm
@pytest.mark.parametrize("case", HANDOVERS, ids=[c.name for c in HANDOVERS])
def test_funding_an_account_the_transaction_hands_to_a_denied_key_is_denied(world: World, case: Handover) -> None:
    ixs, _, _ = case.build(world, world.stranger)
    control = world.decide(ixs)
    assert control.verdict is Verdict.ALLOW, [r.to_json() for r in control.reasons]

    ixs, signers, account = case.build(world, world.blocked)
    decision = world.decide(ixs)
    assert decision.verdict is Verdict.DENY, [r.to_json() for r in decision.reasons]
    assert ("destinations.deny", str(world.blocked.pubkey())) in _deny_reasons(decision)
    assert decision.reservations == ()
    # What the agent's signature would have done:
    before = _held(world, case)
    world.run(ixs, signers)
    case.take(world, account)
    rent = world.svm.minimum_balance_for_rent_exemption(TOKEN_ACCOUNT_SPACE) if case.rent_too else 0
    assert _held(world, case) - before == (PAID + rent if case.token_program is None else TOKENS)


@pytest.mark.litesvm
def test_an_allowlisted_address_made_into_a_strangers_nonce_account_is_denied(world: World) -> None:
    """Under an allowlist the address paid must be listed, and so must the key the transaction names as its
    controller: an allowlisted party that signs its fresh address over to a stranger (InitializeNonceAccount) would
    otherwise pass the wallet's SOL to someone off the list. Before: ALLOW (the address was on the list)."""
    listed = Keypair()
    world.s.doc["rules"]["destinations"] = {"allow": [str(listed.pubkey()), str(MERCHANT)], "deny": []}
    world.s._policy = None

    def build(controller: Pubkey) -> list[Instruction]:
        return [_create(world, listed.pubkey(), space=NONCE_SPACE, owner=programs.SYSTEM_PROGRAM),
                _init_nonce(listed.pubkey(), controller)]  # fmt: skip

    for allowed in (MERCHANT, world.s.wallet):  # a listed party, the wallet itself
        assert world.decide(build(allowed)).verdict is Verdict.ALLOW
    decision = world.decide(build(world.stranger.pubkey()))
    assert decision.verdict is Verdict.DENY, [r.to_json() for r in decision.reasons]
    assert _deny_reasons(decision) == [("destinations.allow", str(world.stranger.pubkey()))]
    world.run(build(world.stranger.pubkey()), [listed])
    world.svm.expire_blockhash()
    s = world.stranger.pubkey()
    take = sp.withdraw_nonce_account({"nonce_pubkey": listed.pubkey(), "authorized_pubkey": s, "to_pubkey": s,
                                      "lamports": PAID})  # fmt: skip
    before = world.svm.get_balance(s) or 0
    execute(world.svm, bytes(VersionedTransaction(
        Message.new_with_blockhash([take], world.helper.pubkey(), world.svm.latest_blockhash()),
        [world.helper, world.stranger])))  # fmt: skip
    assert (world.svm.get_balance(s) or 0) - before == PAID


def test_a_vault_transaction_that_makes_a_nonce_account_for_a_denied_key_is_denied() -> None:
    """The same hand-over inside a Squads vault transaction (decided only: the Squads program is not available
    offline): the vault funds a nonce account (the message's ephemeral signer) whose authority is the denied key."""
    s = squads_scenario()
    s.doc["rules"]["destinations"]["allow"] = "any"
    blocked = Pubkey.from_string(s.doc["rules"]["destinations"]["deny"][0])
    transaction = squads_transaction_address(MULTISIG, 1)
    nonce = squads_ephemeral_signer_address(transaction, 0)

    def build(authority: Pubkey) -> bytes:
        create = sp.create_account({"from_pubkey": VAULT, "to_pubkey": nonce, "lamports": PAID,
                                    "space": NONCE_SPACE, "owner": programs.SYSTEM_PROGRAM})  # fmt: skip
        message = compile_vault_message(VAULT, [create, _init_nonce(nonce, authority)])
        accounts = {"multisig": MULTISIG, "transaction": transaction, "creator": s.wallet, "rent_payer": s.wallet,
                    "system_program": programs.SYSTEM_PROGRAM}  # fmt: skip
        args = {"vault_index": 0, "ephemeral_signers": 1, "transaction_message": message, "memo": None}
        return s.legacy(ENC.instruction("vault_transaction_create", accounts, args))

    assert decide(s, build(MERCHANT)).verdict is Verdict.ALLOW
    decision = decide(s, build(blocked))
    assert decision.verdict is Verdict.DENY
    assert [(r.rule, r.instruction, r.inner, r.seen) for r in decision.reasons] == [
        ("destinations.deny", 2, 0, str(blocked))
    ]
