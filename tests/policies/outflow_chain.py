"""The chain side of the differential outflow test (`test_outflow_differential`): a LiteSVM world holding an agent
wallet with every kind of account the decoders know how to move value out of, and the oracle that reads what a
transaction did to it.

The world is built once (real transactions, `tests.support.chain`) and never changed: each transaction is
simulated (`LiteSVM.simulate_transaction`), and the oracle compares the accounts the transaction names before
(the world's state) and after (the simulation's post-accounts).

The oracle puts every account into one of three buckets, by who can move what it holds (its *parties*):

- the wallet's, when every party is a wallet key: the wallet's own System account, a token account it owns with
  no delegate or close authority of anyone else, a nonce account whose authority it is, a System account at an
  address seeded from a wallet key;
- acceptable, when no party is denied and (under an allowlist) every party is allowed or the wallet's;
- unacceptable otherwise (a program-owned account's party is its program; an uninitialised token account's is
  `ANYONE`, since anyone may initialise it; a System account holding data is `STUCK`).

Value is counted per asset: lamports (wrapped SOL included: its token amount is lamports of the account) under
``SOL``, and each mint's token amount under the mint's address.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

from solders.account import Account
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.system_program import (
    CreateAccountParams,
    CreateAccountWithSeedParams,
    InitializeNonceAccountParams,
    TransferParams,
    create_account,
    create_account_with_seed,
    initialize_nonce_account,
    transfer,
)
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

from policies import programs
from policies.decision import Decision
from policies.model import FEES, NATIVE_SOL
from policies.rules import ANY, DestinationRules
from tests.support.chain import (
    LAMPORTS_PER_SOL,
    airdrop,
    ata_address,
    create_ata,
    create_mint,
    funded_keypair,
    install_lookup_table,
    install_native_mint,
    mint_tokens,
    send,
)

OTHER_PROGRAM = Pubkey.from_string("9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin")
"""A program with no code here: an account assigned to it is out of everyone's reach but the program's."""
ANYONE = Pubkey.from_bytes(b"anyone may initialise it".ljust(32, b"\0"))
STUCK = Pubkey.from_bytes(b"system account holding data".ljust(32, b"\0"))
NONCE_SPACE = 80
TOKEN_ACCOUNT_SPACE = 165
SEED = "outflow"
TOKENS = 10**9


@dataclass(frozen=True)
class World:
    """The accounts of the differential test; ``svm`` holds them and is only ever simulated against."""

    svm: LiteSVM
    wallet: Keypair
    empty_key: Keypair
    """A second wallet key with no account yet (an agent key before it is funded, an empty vault): an instruction
    that makes its address an account of a program, or one holding data, takes it from the wallet."""
    stranger: Keypair
    """A counterparty who co-signs (pays fees, funds accounts, signs for its own accounts)."""
    allowed: Pubkey
    denied: Pubkey
    fresh: tuple[Keypair, ...]
    """Keys with no account: the new accounts a transaction may create (they sign for it)."""
    mint: Pubkey
    mint_2022: Pubkey
    wallet_nonce: Pubkey
    stranger_nonce: Pubkey
    wallet_seeded: Pubkey
    """A System account at an address seeded from the wallet key (``SEED``): only the wallet moves it."""
    wallet_spare: Pubkey
    """A second (not associated) SPL Token account of the wallet, empty: closing it moves only rent."""
    table: Pubkey
    """An address lookup table on chain (the policies pin it) holding ``table_addresses``."""
    table_addresses: tuple[Pubkey, ...]
    seeded_bases: Mapping[Pubkey, Pubkey] = field(default_factory=dict)
    """Every seeded address the generator uses -> its base key."""

    @property
    def keypairs(self) -> dict[Pubkey, Keypair]:
        return {k.pubkey(): k for k in (self.wallet, self.empty_key, self.stranger, *self.fresh)}

    @property
    def wallet_keys(self) -> frozenset[Pubkey]:
        return frozenset({self.wallet.pubkey(), self.empty_key.pubkey()})

    def token_program(self, mint: Pubkey) -> Pubkey:
        return programs.TOKEN_2022_PROGRAM if mint == self.mint_2022 else programs.TOKEN_PROGRAM

    def ata(self, owner: Pubkey, mint: Pubkey) -> Pubkey:
        return ata_address(owner, mint, self.token_program(mint))


def seeded(base: Pubkey, seed: str = SEED, owner: Pubkey = programs.SYSTEM_PROGRAM) -> Pubkey:
    return Pubkey.create_with_seed(base, seed, owner)


def _create(payer: Keypair, new: Pubkey, space: int, owner: Pubkey, *, svm: LiteSVM, extra: int = 0) -> Instruction:
    lamports = svm.minimum_balance_for_rent_exemption(space) + extra
    return create_account(CreateAccountParams(from_pubkey=payer.pubkey(), to_pubkey=new, lamports=lamports,
                                              space=space, owner=owner))  # fmt: skip


def initialize_account3_ix(program: Pubkey, account: Pubkey, mint: Pubkey, owner: Pubkey) -> Instruction:
    return Instruction(program, bytes([18]) + bytes(owner),
                       [AccountMeta(account, False, True), AccountMeta(mint, False, False)])  # fmt: skip


def sync_native_ix(account: Pubkey) -> Instruction:
    return Instruction(programs.TOKEN_PROGRAM, bytes([17]), [AccountMeta(account, False, True)])


@cache
def world() -> World:
    """The world, built once per process (the test only simulates against it)."""
    svm = LiteSVM()
    install_native_mint(svm)
    wallet, stranger = funded_keypair(svm, 100 * LAMPORTS_PER_SOL), funded_keypair(svm, 100 * LAMPORTS_PER_SOL)
    allowed, denied = Keypair().pubkey(), Keypair().pubkey()
    for key in (allowed, denied):
        airdrop(svm, key, LAMPORTS_PER_SOL)
    mint = create_mint(svm, stranger, authority=stranger.pubkey())
    mint_2022 = create_mint(svm, stranger, authority=stranger.pubkey(), token_program=programs.TOKEN_2022_PROGRAM)
    for token_mint, program in ((mint, programs.TOKEN_PROGRAM), (mint_2022, programs.TOKEN_2022_PROGRAM)):
        for owner in (wallet.pubkey(), stranger.pubkey(), allowed, denied):
            account = create_ata(svm, stranger, owner=owner, mint=token_mint, token_program=program)
            mint_tokens(svm, stranger, mint=token_mint, destination=account, authority=stranger, amount=TOKENS,
                        token_program=program)  # fmt: skip
    for owner in (wallet.pubkey(), stranger.pubkey(), allowed, denied):
        wrapped = create_ata(svm, stranger, owner=owner, mint=programs.NATIVE_MINT)
        send(svm, stranger, [transfer(TransferParams(from_pubkey=stranger.pubkey(), to_pubkey=wrapped,
                                                     lamports=LAMPORTS_PER_SOL)),
                             sync_native_ix(wrapped)])  # fmt: skip
    nonces = []
    for authority in (wallet.pubkey(), stranger.pubkey()):
        nonce = Keypair()
        system = programs.SYSTEM_PROGRAM
        create = _create(stranger, nonce.pubkey(), NONCE_SPACE, system, svm=svm, extra=LAMPORTS_PER_SOL)
        init = initialize_nonce_account(InitializeNonceAccountParams(nonce_pubkey=nonce.pubkey(), authority=authority))
        send(svm, stranger, [create, init], [nonce])
        nonces.append(nonce.pubkey())
    wallet_seeded = seeded(wallet.pubkey())
    send(svm, wallet, [create_account_with_seed(CreateAccountWithSeedParams(
        from_pubkey=wallet.pubkey(), to_pubkey=wallet_seeded, base=wallet.pubkey(), seed=SEED,
        lamports=LAMPORTS_PER_SOL, space=0, owner=programs.SYSTEM_PROGRAM))])  # fmt: skip
    spare = Keypair()
    create = _create(stranger, spare.pubkey(), TOKEN_ACCOUNT_SPACE, programs.TOKEN_PROGRAM, svm=svm)
    init = initialize_account3_ix(programs.TOKEN_PROGRAM, spare.pubkey(), mint, wallet.pubkey())
    send(svm, stranger, [create, init], [spare])
    table, table_addresses = Keypair().pubkey(), (
        allowed, denied, ata_address(allowed, mint), ata_address(denied, mint),
        ata_address(denied, programs.NATIVE_MINT), ata_address(wallet.pubkey(), programs.NATIVE_MINT), nonces[0],
        wallet_seeded, seeded(stranger.pubkey()),
        mint, programs.NATIVE_MINT, programs.SYSVAR_RECENT_BLOCKHASHES, programs.SYSVAR_RENT,
    )  # fmt: skip
    install_lookup_table(svm, table, table_addresses)
    svm.expire_blockhash()  # the nonces were initialised at this blockhash: a new one lets them advance
    bases = {seeded(key, seed, owner): key for key in (wallet.pubkey(), stranger.pubkey())
             for seed in (SEED, "other") for owner in (programs.SYSTEM_PROGRAM, programs.TOKEN_PROGRAM)}  # fmt: skip
    return World(svm, wallet, Keypair(), stranger, allowed, denied, tuple(Keypair() for _ in range(3)), mint, mint_2022,
                 nonces[0], nonces[1], wallet_seeded, spare.pubkey(), table, table_addresses, bases)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# The oracle.

_COPTION_KEY = struct.Struct("<I32s")


def _coption(data: bytes, offset: int) -> Pubkey | None:
    tag, key = _COPTION_KEY.unpack_from(data, offset)
    return Pubkey.from_bytes(key) if tag == 1 else None


@dataclass(frozen=True)
class Holding:
    """What one account holds and who can move it."""

    parties: frozenset[Pubkey]
    value: Mapping[str, int]


def holding(address: Pubkey, account: Account | None, bases: Mapping[Pubkey, Pubkey]) -> Holding:
    """Read ``account`` (None or no lamports: holds nothing)."""
    if account is None or account.lamports == 0:
        return Holding(frozenset(), {})
    lamports, data, owner = account.lamports, bytes(account.data), account.owner
    value = {NATIVE_SOL: lamports}
    if owner == programs.SYSTEM_PROGRAM:
        if not data:
            return Holding(frozenset({bases.get(address, address)}), value)
        if len(data) == NONCE_SPACE and struct.unpack_from("<I", data, 4)[0] == 1:
            return Holding(frozenset({Pubkey.from_bytes(data[8:40])}), value)
        return Holding(frozenset({STUCK}), value)
    if owner in programs.TOKEN_PROGRAMS and _is_token_account(data):
        if data[108] == 0:
            return Holding(frozenset({ANYONE}), value)
        mint, holder = Pubkey.from_bytes(data[:32]), Pubkey.from_bytes(data[32:64])
        amount = struct.unpack_from("<Q", data, 64)[0]
        delegate, delegated = _coption(data, 72), struct.unpack_from("<Q", data, 121)[0]
        close_authority = _coption(data, 129)
        parties = {holder}
        if delegate is not None and delegated:
            parties.add(delegate)
        if close_authority is not None:
            parties.add(close_authority)
        if mint not in (programs.NATIVE_MINT, programs.NATIVE_MINT_2022):
            value[str(mint)] = amount
        return Holding(frozenset(parties), value)
    if owner in programs.TOKEN_PROGRAMS and not any(data):
        return Holding(frozenset({ANYONE}), value)  # allocated for a token program, not initialised yet
    return Holding(frozenset({owner}), value)


def _is_token_account(data: bytes) -> bool:
    return len(data) == TOKEN_ACCOUNT_SPACE or (len(data) > TOKEN_ACCOUNT_SPACE and data[TOKEN_ACCOUNT_SPACE] == 2)


Bucket = str  # "wallet", "ok", "bad"


def bucket(h: Holding, wallet: frozenset[Pubkey], rules: DestinationRules) -> Bucket:
    if not h.parties:
        return "ok"
    if h.parties <= wallet:
        return "wallet"
    if h.parties & rules.deny:
        return "bad"
    if rules.allow != ANY and not h.parties <= (wallet | rules.allow):
        return "bad"
    return "ok"


@dataclass(frozen=True)
class Finding:
    asset: str
    what: str
    seen: int
    allowed: int


def counted(decision: Decision) -> dict[str, int]:
    """What a decision reserves, per asset as the oracle measures it: fees and wrapped SOL count as SOL."""
    out: dict[str, int] = {}
    for r in decision.reservations:
        asset = NATIVE_SOL if r.asset in (FEES, str(programs.NATIVE_MINT), str(programs.NATIVE_MINT_2022)) else r.asset
        out[asset] = out.get(asset, 0) + r.amount
    return out


def taken_keys(
    before: Mapping[Pubkey, Account | None], after: Mapping[Pubkey, Account | None], wallet: frozenset[Pubkey]
) -> list[Finding]:
    """A wallet key's address that the transaction makes an account of a program, or one holding data (it holds
    nothing yet, so `judge` sees no value move: what is sent to it later is out of the wallet's reach)."""
    findings = []
    for key in sorted(wallet & after.keys(), key=bytes):  # in the keys' byte order, as Pubkey orders them
        pre, post = before.get(key), after[key]
        if post is None or not post.lamports or (post.owner == programs.SYSTEM_PROGRAM and not bytes(post.data)):
            continue  # not taken: no account, an empty one, or a plain system account without data
        if pre is None or (pre.owner, bytes(pre.data)) != (post.owner, bytes(post.data)):
            findings.append(Finding(NATIVE_SOL, f"wallet key {key} taken by {post.owner}", 1, 0))
    return findings


def judge(
    before: Mapping[Pubkey, Holding],
    after: Mapping[Pubkey, Holding],
    *,
    wallet: frozenset[Pubkey],
    rules: DestinationRules,
    reserved: Mapping[str, int],
    fee_payer: Pubkey,
    stranger_fee: int,
) -> list[Finding]:
    """The differential property for one transaction the engine did not deny and the chain executed.

    1. Per asset, what the wallet's accounts lost is at most what the engine reserved.
    2. Per asset, what reached unacceptable accounts is at most what accounts not the wallet's gave up (a fee a
       stranger paid reaches nobody: it comes off what the paying account gave up): otherwise some of the wallet's
       value reached a party the destination rules refuse.
    """
    findings = []
    assets = {a for h in (*before.values(), *after.values()) for a in h.value}
    for asset in sorted(assets):
        wallet_before = wallet_after = bad_gain = others_out = 0
        for address in before.keys() | after.keys():
            pre, post = before.get(address, Holding(frozenset(), {})), after.get(address, Holding(frozenset(), {}))
            v_pre, v_post = pre.value.get(asset, 0), post.value.get(asset, 0)
            b_pre, b_post = bucket(pre, wallet, rules), bucket(post, wallet, rules)
            wallet_before += v_pre if b_pre == "wallet" else 0
            wallet_after += v_post if b_post == "wallet" else 0
            bad_gain += max(0, (v_post if b_post == "bad" else 0) - (v_pre if b_pre == "bad" else 0))
            if b_pre != "wallet":
                # A stranger's fee reaches nobody: it comes off the payer's own giving, so that what the payer
                # received in the same transaction (from the wallet, say) is not counted as given up.
                fee = stranger_fee if asset == NATIVE_SOL and address == fee_payer else 0
                others_out += max(0, v_pre - fee - (v_post if b_post == b_pre else 0))
        loss = wallet_before - wallet_after
        if loss > reserved.get(asset, 0):
            findings.append(Finding(asset, "wallet loss above what the engine counted", loss, reserved.get(asset, 0)))
        if bad_gain > max(0, others_out):
            findings.append(Finding(asset, "value reached a refused destination", bad_gain, max(0, others_out)))
    return findings


@dataclass(frozen=True)
class Outcome:
    """One transaction run against the world: ``error`` is the chain's when it refused it (then only its fee is
    judged)."""

    findings: list[Finding]
    error: str | None = None


def resolved_accounts(w: World, message: Message | MessageV0) -> list[Pubkey]:
    """The accounts a v0 message names through the world's lookup table (the only one it may use)."""
    if not isinstance(message, MessageV0):
        return []
    resolved = []
    for lookup in message.address_table_lookups:
        assert lookup.account_key == w.table
        resolved += [w.table_addresses[i] for i in (*lookup.writable_indexes, *lookup.readonly_indexes)]
    return resolved


def run_on_chain(w: World, message: Message | MessageV0, decision: Decision, rules: DestinationRules) -> Outcome:
    """Sign ``message`` with every key it needs, simulate it, and judge what it did."""
    keys = w.keypairs
    signers = [keys[k] for k in message.account_keys[: message.header.num_required_signatures]]
    tx = VersionedTransaction(message, signers)
    result = w.svm.simulate_transaction(tx)
    wallet = w.wallet_keys
    if isinstance(result, FailedTransactionMetadata):
        # A transaction that fails in execution still lands and pays its fee: at most what the engine reserved.
        fee = result.meta().fee() if message.account_keys[0] in wallet else 0
        reserved = counted(decision).get(NATIVE_SOL, 0)
        findings = [Finding(NATIVE_SOL, "fee of a failed transaction above what the engine counted", fee, reserved)]
        return Outcome([] if fee <= reserved else findings, str(result.err()))
    touched = list(message.account_keys) + resolved_accounts(w, message)
    accounts_before = {k: w.svm.get_account(k) for k in touched}
    post = dict(result.post_accounts())
    accounts_after = {k: post.get(k, accounts_before[k]) for k in touched}
    before = {k: holding(k, a, w.seeded_bases) for k, a in accounts_before.items()}
    after = {k: holding(k, a, w.seeded_bases) for k, a in accounts_after.items()}
    fee = result.meta().fee() if message.account_keys[0] not in wallet else 0
    findings = judge(before, after, wallet=wallet, rules=rules, reserved=counted(decision),
                     fee_payer=message.account_keys[0], stranger_fee=fee)  # fmt: skip
    return Outcome(findings + taken_keys(accounts_before, accounts_after, wallet))
