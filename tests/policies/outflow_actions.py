"""The generator side of the differential outflow test: hypothesis strategies for transactions made of the
instructions the decoders support, over the accounts of `tests.policies.outflow_chain.World`.

Each action is one instruction or a short recipe that usually succeeds on chain (fund a new account and
initialise it as a nonce or token account; wrap SOL). Instructions are encoded by hand, byte for byte as the
programs read them, so that nothing the engine decodes came from a builder it might share a mistake with.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

from hypothesis import strategies as st
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey

from policies import programs
from tests.policies.outflow_chain import (
    NONCE_SPACE,
    OTHER_PROGRAM,
    SEED,
    TOKEN_ACCOUNT_SPACE,
    World,
    initialize_account3_ix,
    seeded,
)

Action = list[Instruction]
AnyMessage = Message | MessageV0


class TokenMove(NamedTuple):
    mint: Pubkey
    holder: Pubkey
    source: Pubkey
    destination: Pubkey


AMOUNTS = (0, 1, 5_000, 890_880, 2_039_280, 10**7, 10**9)
TOKEN_AMOUNTS = (0, 1, 10**6, 10**9, 10**9 + 1)
SPACES = (0, NONCE_SPACE, TOKEN_ACCOUNT_SPACE)


def _meta(key: Pubkey, *, signer: bool = False, writable: bool = True) -> AccountMeta:
    return AccountMeta(key, signer, writable)


def _system(tag: int, payload: bytes, metas: list[AccountMeta]) -> Instruction:
    return Instruction(programs.SYSTEM_PROGRAM, struct.pack("<I", tag) + payload, metas)


def _seed(seed: str) -> bytes:
    raw = seed.encode()
    return struct.pack("<Q", len(raw)) + raw


def sol_transfer(source: Pubkey, to: Pubkey, lamports: int) -> Instruction:
    return _system(2, struct.pack("<Q", lamports), [_meta(source, signer=True), _meta(to)])


def create_account(funder: Pubkey, new: Pubkey, lamports: int, space: int, owner: Pubkey) -> Instruction:
    payload = struct.pack("<QQ", lamports, space) + bytes(owner)
    return _system(0, payload, [_meta(funder, signer=True), _meta(new, signer=True)])


def rent(space: int) -> int:
    return (128 + space) * 6960


def _token(program: Pubkey, data: bytes, metas: list[AccountMeta]) -> Instruction:
    return Instruction(program, data, metas)


class Actions:
    """Strategies for the actions over one world (keys are drawn from small pools so that accounts recur)."""

    def __init__(self, w: World) -> None:
        self.w = w
        me, them = w.wallet.pubkey(), w.stranger.pubkey()
        self.me, self.them = me, them
        self.fresh = [k.pubkey() for k in w.fresh]
        self.payers = st.sampled_from([me, me, them])
        self.funders = st.sampled_from([me, me, them, self.fresh[0]])
        """Who pays for an action: mostly the wallet; the stranger or a fresh key (funded by an earlier action of
        the same transaction) hands value on."""
        self.holders = st.sampled_from([me, me, them])
        """Whose token accounts and nonce account an action moves (the stranger's too: hand-overs)."""
        self.parties = st.sampled_from([me, them, w.allowed, w.denied, *self.fresh])
        self.mints = st.sampled_from([w.mint, w.mint_2022, programs.NATIVE_MINT])
        wrapped = w.ata(me, programs.NATIVE_MINT)
        self.recipients = st.sampled_from([
            me, them, w.allowed, w.denied, w.empty_key.pubkey(), *self.fresh, w.wallet_nonce, w.wallet_seeded, wrapped,
            w.ata(w.allowed, w.mint), w.ata(w.denied, w.mint), w.ata(w.denied, programs.NATIVE_MINT),
            seeded(me, "other"), seeded(them), w.ata(them, programs.NATIVE_MINT),
        ])  # fmt: skip
        """Where value may go. Not here: a denied party's accounts that no instruction names and the policy cannot
        derive (its associated account of a mint the policy does not list, say), the documented reach of a denylist
        (`test_outflow_denylist_reach`)."""

    def action(self) -> st.SearchStrategy[Action]:
        makers: list[Callable[[], st.SearchStrategy[Action]]] = [
            self.transfer, self.create, self.create_with_seed, self.transfer_with_seed, self.nonce_ops,
            self.assign_allocate, self.transfer_checked, self.transfer_unchecked, self.approve, self.close,
            self.burn, self.sync_native, self.new_token_account, self.new_nonce, self.initialize_mint,
            self.set_authority, self.ata_create, self.wrap, self.memo, self.seeded_authority, self.token_benign,
            # those the engine usually allows, twice as often
            self.transfer, self.transfer, self.transfer, self.transfer_checked, self.transfer_checked,
            self.new_token_account, self.new_nonce, self.ata_create, self.wrap, self.close,
        ]  # fmt: skip
        return st.one_of([make() for make in makers])

    def transfer(self) -> st.SearchStrategy[Action]:
        return st.builds(lambda s, t, n: [sol_transfer(s, t, n)], self.funders, self.recipients,
                         st.sampled_from(AMOUNTS))  # fmt: skip

    def create(self) -> st.SearchStrategy[Action]:
        w = self.w
        owners = st.sampled_from([programs.SYSTEM_PROGRAM, programs.TOKEN_PROGRAM, OTHER_PROGRAM])
        return st.builds(
            lambda f, n, space, owner, extra: [create_account(f, n, rent(space) + extra, space, owner)],
            self.funders, st.sampled_from([*self.fresh[1:], self.me, w.empty_key.pubkey()]), st.sampled_from(SPACES),
            owners,
            st.sampled_from((0, 1, 10**9)),
        )  # fmt: skip

    def create_with_seed(self) -> st.SearchStrategy[Action]:
        def build(funder: Pubkey, base: Pubkey, seed: str, owner: Pubkey, size: tuple[int, int]) -> Action:
            space, extra = size
            new = seeded(base, seed, owner)
            payload = bytes(base) + _seed(seed) + struct.pack("<QQ", rent(space) + extra, space) + bytes(owner)
            metas = [_meta(funder, signer=True), _meta(new)]
            if base != funder:
                metas.append(_meta(base, signer=True, writable=False))
            return [_system(3, payload, metas)]

        return st.builds(build, self.payers, st.sampled_from([self.me, self.them]), st.sampled_from([SEED, "other"]),
                         st.sampled_from([programs.SYSTEM_PROGRAM, programs.TOKEN_PROGRAM]),
                         st.tuples(st.sampled_from((0, TOKEN_ACCOUNT_SPACE)), st.sampled_from((0, 10**9))))  # fmt: skip

    def transfer_with_seed(self) -> st.SearchStrategy[Action]:
        def build(to: Pubkey, lamports: int) -> Action:
            payload = struct.pack("<Q", lamports) + _seed(SEED) + bytes(programs.SYSTEM_PROGRAM)
            metas = [_meta(self.w.wallet_seeded), _meta(self.me, signer=True, writable=False), _meta(to)]
            return [_system(11, payload, metas)]

        return st.builds(build, self.recipients, st.sampled_from(AMOUNTS))

    def nonce_ops(self) -> st.SearchStrategy[Action]:
        w = self.w
        blockhashes, sysrent = programs.SYSVAR_RECENT_BLOCKHASHES, programs.SYSVAR_RENT
        ro = {"writable": False}

        def withdraw(holder: Pubkey, to: Pubkey, lamports: int) -> Action:
            nonce, authority = (w.wallet_nonce, self.me) if holder == self.me else (w.stranger_nonce, self.them)
            metas = [_meta(nonce), _meta(to), _meta(blockhashes, **ro), _meta(sysrent, **ro),
                     _meta(authority, signer=True, writable=False)]  # fmt: skip
            return [_system(5, struct.pack("<Q", lamports), metas)]

        def authorize(holder: Pubkey, new: Pubkey) -> Action:
            nonce = w.wallet_nonce if holder == self.me else w.stranger_nonce
            return [_system(7, bytes(new), [_meta(nonce), _meta(holder, signer=True, writable=False)])]

        return st.one_of(
            st.builds(withdraw, self.holders, self.recipients, st.sampled_from(AMOUNTS)),
            st.builds(authorize, self.holders, self.parties),
            st.just(self.advance()),
        )

    def advance(self) -> Action:
        metas = [_meta(self.w.wallet_nonce), _meta(programs.SYSVAR_RECENT_BLOCKHASHES, writable=False),
                 _meta(self.me, signer=True, writable=False)]  # fmt: skip
        return [_system(4, b"", metas)]

    def assign_allocate(self) -> st.SearchStrategy[Action]:
        accounts = st.sampled_from([self.me, self.w.empty_key.pubkey(), *self.fresh])
        return st.one_of(
            st.builds(lambda a, o: [_system(1, bytes(o), [_meta(a, signer=True)])], accounts,
                      st.sampled_from([programs.TOKEN_PROGRAM, OTHER_PROGRAM])),
            st.builds(lambda a, n: [_system(8, struct.pack("<Q", n), [_meta(a, signer=True)])], accounts,
                      st.sampled_from((0, NONCE_SPACE))),
        )  # fmt: skip

    def _token_pair(self) -> st.SearchStrategy[TokenMove]:
        """(mint, holder, the holder's account of it, a destination account): the holder is mostly the wallet."""
        owners = st.sampled_from([self.me, self.them, self.w.allowed, self.w.denied])
        return st.builds(lambda m, h, o: TokenMove(m, h, self.w.ata(h, m), self.w.ata(o, m)), self.mints,
                         self.holders, owners)  # fmt: skip

    def _signed_by(self, move: TokenMove, data: bytes, *metas: AccountMeta) -> Action:
        signer = _meta(move.holder, signer=True, writable=False)
        return [_token(self.w.token_program(move.mint), data, [*metas, signer])]

    def transfer_checked(self) -> st.SearchStrategy[Action]:
        def build(move: TokenMove, amount: int, to_fresh: Pubkey | None) -> Action:
            data = bytes([12]) + struct.pack("<Q", amount) + bytes([9 if move.mint == programs.NATIVE_MINT else 6])
            return self._signed_by(move, data, _meta(move.source), _meta(move.mint, writable=False),
                                   _meta(to_fresh or move.destination))  # fmt: skip

        return st.builds(build, self._token_pair(), st.sampled_from(TOKEN_AMOUNTS),
                         st.none() | st.sampled_from(self.fresh))  # fmt: skip

    def transfer_unchecked(self) -> st.SearchStrategy[Action]:
        def build(move: TokenMove, amount: int) -> Action:
            data = bytes([3]) + struct.pack("<Q", amount)
            return self._signed_by(move, data, _meta(move.source), _meta(move.destination))

        return st.builds(build, self._token_pair(), st.sampled_from(TOKEN_AMOUNTS))

    def approve(self) -> st.SearchStrategy[Action]:
        def build(move: TokenMove, delegate: Pubkey, amount: int) -> Action:
            data = bytes([4]) + struct.pack("<Q", amount)
            return self._signed_by(move, data, _meta(move.source), _meta(delegate, writable=False))

        return st.builds(build, self._token_pair(), self.parties, st.sampled_from(TOKEN_AMOUNTS))

    def close(self) -> st.SearchStrategy[Action]:
        w = self.w
        accounts = st.sampled_from([(w.wallet_spare, self.me), (w.ata(self.me, programs.NATIVE_MINT), self.me),
                                    (w.ata(self.me, w.mint), self.me),
                                    (w.ata(self.them, programs.NATIVE_MINT), self.them)])  # fmt: skip

        def build(account: tuple[Pubkey, Pubkey], dest: Pubkey) -> Action:
            move = TokenMove(programs.NATIVE_MINT, account[1], account[0], dest)
            return self._signed_by(move, bytes([9]), _meta(move.source), _meta(dest))

        return st.builds(build, accounts, self.recipients)

    def burn(self) -> st.SearchStrategy[Action]:
        def build(move: TokenMove, amount: int) -> Action:
            return self._signed_by(move, bytes([8]) + struct.pack("<Q", amount), _meta(move.source), _meta(move.mint))

        return st.builds(build, self._token_pair(), st.sampled_from(TOKEN_AMOUNTS))

    def sync_native(self) -> st.SearchStrategy[Action]:
        wrapped = self.w.ata(self.me, programs.NATIVE_MINT)
        return st.just([_token(programs.TOKEN_PROGRAM, bytes([17]), [_meta(wrapped)])])

    def new_token_account(self) -> st.SearchStrategy[Action]:
        def build(funder: Pubkey, new: Pubkey, mint: Pubkey, owner: Pubkey, extra: int) -> Action:
            program = self.w.token_program(mint)
            space = TOKEN_ACCOUNT_SPACE
            return [create_account(funder, new, rent(space) + extra, space, program),
                    initialize_account3_ix(program, new, mint, owner)]  # fmt: skip

        return st.builds(build, self.payers, st.sampled_from(self.fresh), self.mints, self.parties,
                         st.sampled_from((0, 10**9)))  # fmt: skip

    def new_nonce(self) -> st.SearchStrategy[Action]:
        def build(funder: Pubkey, new: Pubkey, authority: Pubkey, extra: int) -> Action:
            ro = {"writable": False}
            init = _system(6, bytes(authority), [_meta(new), _meta(programs.SYSVAR_RECENT_BLOCKHASHES, **ro),
                                                 _meta(programs.SYSVAR_RENT, **ro)])  # fmt: skip
            return [create_account(funder, new, rent(NONCE_SPACE) + extra, NONCE_SPACE, programs.SYSTEM_PROGRAM),
                    init]  # fmt: skip

        return st.builds(build, self.payers, st.sampled_from(self.fresh), self.parties,
                         st.sampled_from((0, 10**9)))  # fmt: skip

    def initialize_mint(self) -> st.SearchStrategy[Action]:
        def build(new: Pubkey) -> Action:
            data = bytes([20, 6]) + bytes(self.me) + b"\x00"
            return [create_account(self.me, new, rent(82), 82, programs.TOKEN_PROGRAM),
                    _token(programs.TOKEN_PROGRAM, data, [_meta(new)])]  # fmt: skip

        return st.builds(build, st.sampled_from(self.fresh))

    def set_authority(self) -> st.SearchStrategy[Action]:
        def build(move: TokenMove, kind: int, new: Pubkey) -> Action:
            return self._signed_by(move, bytes([6, kind, 1]) + bytes(new), _meta(move.source))

        return st.builds(build, self._token_pair(), st.sampled_from((2, 3)), self.parties)

    def ata_create(self) -> st.SearchStrategy[Action]:
        def build(payer: Pubkey, owner: Pubkey, mint: Pubkey, idempotent: bool) -> Action:
            program = self.w.token_program(mint)
            metas = [_meta(payer, signer=True), _meta(self.w.ata(owner, mint)), _meta(owner, writable=False),
                     _meta(mint, writable=False), _meta(programs.SYSTEM_PROGRAM, writable=False),
                     _meta(program, writable=False)]  # fmt: skip
            return [Instruction(programs.ASSOCIATED_TOKEN_PROGRAM, b"\x01" if idempotent else b"", metas)]

        return st.builds(build, self.funders, self.parties, self.mints, st.booleans())

    def wrap(self) -> st.SearchStrategy[Action]:
        wrapped = self.w.ata(self.me, programs.NATIVE_MINT)
        return st.builds(lambda n: [sol_transfer(self.me, wrapped, n),
                                    _token(programs.TOKEN_PROGRAM, bytes([17]), [_meta(wrapped)])],
                         st.sampled_from(AMOUNTS))  # fmt: skip

    def seeded_authority(self) -> st.SearchStrategy[Action]:
        """AllocateWithSeed / AssignWithSeed of the wallet's seeded account (base: the wallet key)."""

        def build(assign: bool, owner: Pubkey) -> Action:
            payload = bytes(self.me) + _seed(SEED) + (b"" if assign else struct.pack("<Q", NONCE_SPACE)) + bytes(owner)
            metas = [_meta(self.w.wallet_seeded), _meta(self.me, signer=True, writable=False)]
            return [_system(10 if assign else 9, payload, metas)]

        return st.builds(build, st.booleans(), st.sampled_from([programs.SYSTEM_PROGRAM, OTHER_PROGRAM]))

    def token_benign(self) -> st.SearchStrategy[Action]:
        """Revoke, and the other initialisations of a new token account (InitializeAccount reads its owner from
        the accounts, InitializeAccount2 from the data; ImmutableOwner first)."""

        def revoke(move: TokenMove) -> Action:
            return self._signed_by(move, bytes([5]), _meta(move.source))

        def initialize(funder: Pubkey, new: Pubkey, mint: Pubkey, owner: Pubkey, tag: int) -> Action:
            program = self.w.token_program(mint)
            space = TOKEN_ACCOUNT_SPACE if program == programs.TOKEN_PROGRAM else TOKEN_ACCOUNT_SPACE + 5
            rent_sysvar = _meta(programs.SYSVAR_RENT, writable=False)
            if tag == 1:
                init = _token(program, bytes([1]), [_meta(new), _meta(mint, writable=False),
                                                    _meta(owner, writable=False), rent_sysvar])  # fmt: skip
            else:
                init = _token(program, bytes([16]) + bytes(owner), [_meta(new), _meta(mint, writable=False),
                                                                    rent_sysvar])  # fmt: skip
            first = [create_account(funder, new, rent(space), space, program)]
            if program == programs.TOKEN_2022_PROGRAM:
                first.append(_token(program, bytes([22]), [_meta(new)]))
            return [*first, init]

        return st.one_of(
            st.builds(revoke, self._token_pair()),
            st.builds(initialize, self.payers, st.sampled_from(self.fresh), self.mints, self.parties,
                      st.sampled_from((1, 16))),
        )  # fmt: skip

    def memo(self) -> st.SearchStrategy[Action]:
        return st.just([Instruction(programs.MEMO_V2_PROGRAM, b"outflow", [])])

    def budget(self) -> st.SearchStrategy[Action]:
        price = st.builds(lambda p: [Instruction(programs.COMPUTE_BUDGET_PROGRAM, b"\x03" + struct.pack("<Q", p), [])],
                          st.sampled_from((0, 1, 1_000, 10**6)))  # fmt: skip
        limit = st.builds(lambda u: [Instruction(programs.COMPUTE_BUDGET_PROGRAM, b"\x02" + struct.pack("<I", u), [])],
                          st.sampled_from((10_000, 200_000, 1_400_000)))  # fmt: skip
        return st.builds(lambda p, u: [*(p or []), *(u or [])], st.none() | price, st.none() | limit)

    def message(self, blockhash: Hash, max_actions: int = 3) -> st.SearchStrategy[AnyMessage]:
        """A legacy or v0 message (with or without the world's lookup table) of a compute budget and one to
        ``max_actions`` actions, paid by the wallet or the stranger, sometimes led by the wallet nonce's
        AdvanceNonceAccount."""
        advance = self.advance()

        table = AddressLookupTableAccount(self.w.table, list(self.w.table_addresses))

        def build(
            budget: Action, actions: list[Action], payer: Pubkey, durable: bool, form: str
        ) -> Message | MessageV0:
            instructions = [*(advance if durable else []), *budget, *(ix for action in actions for ix in action)]
            if form == "legacy":
                return Message.new_with_blockhash(instructions, payer, blockhash)
            return MessageV0.try_compile(payer, instructions, [table] if form == "v0+table" else [], blockhash)

        return st.builds(build, self.budget(), st.lists(self.action(), min_size=1, max_size=max_actions), self.payers,
                         st.booleans(), st.sampled_from(["legacy", "v0", "v0+table", "v0+table"]))  # fmt: skip
