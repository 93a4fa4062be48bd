"""Who a transaction names as controlling an account, or as receiving what leaves it: the parties the destination
rules judge besides the address an outflow pays (DESIGN.md section 5).

An address the wallet pays may be a fresh account that the same transaction hands to someone else. Judging only
the address let one transaction fund a denied party through an account made for it: a nonce account whose
authority InitializeNonceAccount names (the authority withdraws the lamports), a token account whose owner
InitializeAccount names (the owner closes a wrapped-SOL account, or moves the tokens), and so on. So, per
transaction (every instruction, including those a Squads vault transaction carries, in whatever order they come),
`AccountParties` records for each account:

- its **controllers**: the keys an instruction names as the one who controls it. InitializeNonceAccount's
  authority, AuthorizeNonceAccount's new authority, InitializeAccount/2/3's owner, SetAuthority's new authority
  (of any type: a close authority takes a wrapped-SOL account's lamports), Approve(Checked)'s delegate, an
  associated token account's owner, and the base of an account whose address derives from it
  (CreateAccountWithSeed, AllocateWithSeed, AssignWithSeed, TransferWithSeed: a seeded System account moves only
  with the base's signature);
- its **links**: its controllers, and for every effect on it that no wallet key authorises, its authority (the key
  whose signature moves it), what an authority change names as its new owner or authority, a delegate approved,
  and where an outflow or close out of it sends value.

`denied_parties` follows the links from a paid account, transitively (a key of the agent's own may receive the
payment and pass it on in the same transaction), and `unlisted_controllers` lists the paid account's own
controllers that an allowlist does not name. Wallet keys are neither judged nor followed: what the wallet does with
its own accounts is judged as the wallet's own effects. The owner field of CreateAccount (-AllowPrefund, -WithSeed)
and Assign names a program, not a key: it is a link (a denied program is denied), never a controller.

Fail-safe by construction: it only ever adds parties to judge, never lets anything through. What it cannot see is a
hand-over made in another transaction (an account of the agent's own paid here and emptied later): under
``destinations.allow: "any"`` a denylist stops what a transaction names, not an agent that forwards through an
address of its own. Only an allowlist binds a hostile agent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from solders.pubkey import Pubkey

from policies.document import Policy
from policies.model import (
    AccountClose,
    AuthorityChange,
    ComputeBudgetSetting,
    DecodedInstruction,
    DelegateApproval,
    NonceAdvance,
    Outflow,
    UncheckedTokenTransfer,
)
from policies.rules import ANY

_SYSTEM_CONTROLLERS: Mapping[str, tuple[str, str]] = {
    "initialize_nonce_account": ("nonce_account", "authority"),
    "authorize_nonce_account": ("nonce_account", "new_authority"),
    "create_account_with_seed": ("new_account", "base"),
    "allocate_with_seed": ("account", "base"),
    "assign_with_seed": ("account", "base"),
    "transfer_with_seed": ("from", "base"),
}
_TOKEN_CONTROLLERS: Mapping[str, tuple[str, str]] = {
    "initialize_account": ("account", "owner"),
    "initialize_account2": ("account", "owner"),
    "initialize_account3": ("account", "owner"),
    "set_authority": ("account", "new_authority"),
    "approve": ("source", "delegate"),
    "approve_checked": ("source", "delegate"),
}
_ATA_CONTROLLERS: Mapping[str, tuple[str, str]] = {
    "create": ("associated_account", "owner"),
    "create_idempotent": ("associated_account", "owner"),
}
_CONTROLLERS: Mapping[str, Mapping[str, tuple[str, str]]] = {
    "system": _SYSTEM_CONTROLLERS,
    "spl_token": _TOKEN_CONTROLLERS,
    "spl_token_2022": _TOKEN_CONTROLLERS,
    "associated_token_account": _ATA_CONTROLLERS,
}
"""Per program (the name its decoder gives, which the program id decides) and instruction name: (the account's
arg, its controller's arg). The decoders fill both args."""


class AccountParties:
    """The controllers and links of every account one transaction names (see the module docstring).

    ``wallet`` is the wallet's own keys (``EvalContext.wallet_keys``): an effect one of them authorises is judged as
    the wallet's own (an outflow by its destination, an authority change or approval freezes), so it adds no link,
    and a plain payment builds nothing (`__bool__` is then false and the evaluator skips the lookups)."""

    __slots__ = ("controllers", "links")

    def __init__(self, instructions: Iterable[DecodedInstruction], wallet: frozenset[Pubkey]) -> None:
        # Dicts as ordered sets (values None): reasons come out in the transaction's order, run after run.
        self.controllers: dict[Pubkey, dict[Pubkey, None]] = {}
        self.links: dict[Pubkey, dict[Pubkey, None]] = {}
        for ix in instructions:
            self._add_instruction(ix, wallet)

    def __bool__(self) -> bool:
        return bool(self.links)  # every controller is a link too

    def _link(self, account: Pubkey, party: Pubkey | None) -> None:
        if party is not None and party != account:
            self.links.setdefault(account, {})[party] = None

    def _add_instruction(self, ix: DecodedInstruction, wallet: frozenset[Pubkey]) -> None:
        names = _CONTROLLERS.get(ix.program)
        named = None if names is None else names.get(ix.name)
        if named is not None:
            account, controller = ix.args.get(named[0]), ix.args.get(named[1])
            if isinstance(account, Pubkey) and isinstance(controller, Pubkey) and controller != account:
                self.controllers.setdefault(account, {})[controller] = None
                self._link(account, controller)
        for effect in ix.effects:
            onward: Pubkey | None
            if isinstance(effect, Outflow | UncheckedTokenTransfer):
                account, authority, onward = effect.source, effect.authority, effect.destination
            elif isinstance(effect, ComputeBudgetSetting):
                continue
            elif isinstance(effect, AccountClose):
                account, authority, onward = effect.account, effect.authority, effect.destination
            elif isinstance(effect, AuthorityChange):
                account, authority, onward = effect.account, effect.authority, effect.new_authority
            elif isinstance(effect, DelegateApproval):
                account, authority, onward = effect.account, effect.authority, effect.delegate
            elif isinstance(effect, NonceAdvance):
                account, authority, onward = effect.nonce_account, effect.authority, None
            else:
                continue
            if authority not in wallet:
                self._link(account, authority)
                self._link(account, onward)
        for child in ix.inner:
            self._add_instruction(child, wallet)

    def findings(
        self, policy: Policy, account: Pubkey, wallet: frozenset[Pubkey], judged: object = None
    ) -> Iterator[tuple[str, str, Pubkey]]:
        """(rule, message, party) for each party of ``account`` that the destination rules refuse, but ``judged``
        (a party the caller has judged already): `denied_parties`, then `unlisted_controllers`."""
        for party in self.denied_parties(policy, account, wallet):
            if party != judged:
                yield "destinations.deny", "the transaction hands what it pays here to a party on the denylist", party
        for party in self.unlisted_controllers(policy, account, wallet):
            if party != judged:
                yield (
                    "destinations.allow",
                    "the transaction makes a party off the allowlist the controller of what it pays here",
                    party,
                )

    def denied_parties(self, policy: Policy, account: Pubkey, wallet: frozenset[Pubkey]) -> Iterator[Pubkey]:
        """Every party reachable from ``account`` through the links (not ``account`` itself, no wallet key, none
        followed through a wallet key) that the policy denies: a denied address, or a denied owner's token or
        wrapped-SOL account."""
        if account not in self.links:
            return
        deny = policy.rules.destinations.deny
        seen = {account}
        todo = [account]
        while todo:
            for party in self.links.get(todo.pop(), ()):
                if party in seen or party in wallet:
                    continue
                seen.add(party)
                todo.append(party)
                if (
                    party in deny
                    or party in policy.denied_token_accounts
                    or party in policy.denied_wrapped_sol_accounts
                ):
                    yield party

    def unlisted_controllers(self, policy: Policy, account: Pubkey, wallet: frozenset[Pubkey]) -> Iterator[Pubkey]:
        """The controllers of ``account`` itself that are neither wallet keys nor on the allowlist (none under
        ``"any"``; a denied one is left to `denied_parties`): the allowlist names who may receive, so it must name
        who gets to control what is paid."""
        allow = policy.rules.destinations.allow
        if allow == ANY:
            return
        deny = policy.rules.destinations.deny
        for controller in self.controllers.get(account, ()):
            if controller not in wallet and controller not in allow and controller not in deny:
                yield controller
