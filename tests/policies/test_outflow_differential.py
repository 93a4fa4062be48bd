"""Differential property: what the policy engine counts against what the chain moves.

Random transactions over the instructions the decoders support (System transfers, account creation with and
without seed, seeded transfers, nonce operations, assign and allocate; SPL Token and Token-2022 transfers checked
and unchecked, approvals, revokes, closes, burns, SyncNative, account and mint initialisation, authority changes;
ATA creation; compute budget; memo; one to three of them in any order, legacy or v0 with or without a pinned
lookup table, paid by the wallet or by a co-signing stranger) are decided by the real engine and simulated on
LiteSVM (`tests.policies.outflow_chain`). For every transaction the engine does not deny and the chain executes:
the wallet's measured loss per asset (lamports of its accounts and of those it controls as owner or authority,
fees included, wrapped SOL as SOL; each mint's token amount) is at most what the engine reserved; no wallet key's
empty address is made an account of a program or one holding data; and nothing of the wallet's reaches an account
a party the destination rules refuse can move (DESIGN.md section 5: limits per asset, destinations, freeze
triggers). Four policies are drawn: an allowlist naming one merchant or ``"any"`` with a denylist, each with and
without wrapped SOL among the mints. A transaction the chain refuses may be counted (over-counting is safe): only
its fee, which it still pays, is held to what the engine reserved.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from policies import programs
from policies.decision import Decision, Reservation, Verdict
from policies.document import Policy, policy_from_object
from policies.errors import DecodeError
from policies.evaluate import EvalContext, evaluate
from policies.lookup_tables import resolve_lookup_tables
from policies.transaction import decode_transaction
from tests.policies.outflow_actions import Actions, sol_transfer
from tests.policies.outflow_chain import Holding, World, judge, run_on_chain, world
from tests.support.policies import example_policy
from tests.support.scenario import NOON

BIG = str(10**15)


def outflow_policy(w: World, *, allowlist: bool, wrapped_sol: bool = True) -> Policy:
    """Limits high enough that amounts escalate rather than deny, every program and mint of the world allowed (wrapped
    SOL only with ``wrapped_sol``: its denied owners' accounts are then denied as token accounts too), the wallet's
    nonce account usable: what is left to deny is what the engine must refuse on its own."""
    doc: dict[str, Any] = example_policy()
    rules = doc["rules"]
    mints = [str(w.mint), str(w.mint_2022), *([str(programs.NATIVE_MINT)] if wrapped_sol else [])]
    rules["limits"] = [
        {"id": f"a{i}", "asset": asset, "per_transaction": {"automatic": "1000", "approval": BIG},
         "periods": [{"id": f"p{i}", "window_seconds": 86400, "automatic": "1000", "approval": BIG}]}
        for i, asset in enumerate(["SOL", *mints])
    ]  # fmt: skip
    rules["mints"] = mints
    rules["destinations"] = {"allow": [str(w.allowed)] if allowlist else "any", "deny": [str(w.denied)]}
    rules["fees"] = {"max_compute_unit_price": 10**6, "max_compute_unit_limit": 1_400_000,
                     "max_total_fee_lamports": 10**7}  # fmt: skip
    rules["durable_nonce"] = {"allowed": True, "nonce_accounts": [str(w.wallet_nonce)]}
    rules["freeze"]["denials"] = None
    rules["lookup_tables"] = [{"address": str(w.table), "addresses": [str(a) for a in w.table_addresses]}]
    rules["rate"] = {"max_requests": 10**6, "window_seconds": 60}
    return policy_from_object(doc)


def decide(policy: Policy, w: World, message: Message | MessageV0) -> Decision:
    raw = bytes(VersionedTransaction.populate(message, [Signature.default()] * message.header.num_required_signatures))
    tx: Any
    try:
        tx = decode_transaction(raw, lookup_tables=resolve_lookup_tables(policy))
    except DecodeError as exc:
        tx = exc
    ctx = EvalContext(NOON, w.wallet_keys, dict.fromkeys(policy.spend_windows(), 0), 0, 0)
    return evaluate(policy, tx, ctx)


def check(w: World, policy: Policy, message: Message | MessageV0) -> tuple[Decision, list[Any] | None]:
    decision = decide(policy, w, message)
    if decision.verdict > Verdict.ESCALATE:
        return decision, None
    return decision, run_on_chain(w, message, decision, policy.rules.destinations).findings


_WORLD = world()
_ACTIONS = Actions(_WORLD)
_POLICIES = {flag: outflow_policy(_WORLD, allowlist=flag) for flag in (True, False)}
_POLICY_CHOICES = [outflow_policy(_WORLD, allowlist=a, wrapped_sol=b) for a in (True, False) for b in (True, False)]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=_ACTIONS.message(_WORLD.svm.latest_blockhash(), max_actions=1), policy=st.sampled_from(_POLICY_CHOICES))
def test_one_action_never_moves_more_than_the_engine_counts(message: Message | MessageV0, policy: Policy) -> None:
    _, findings = check(_WORLD, policy, message)
    assert not findings, (findings, message)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=_ACTIONS.message(_WORLD.svm.latest_blockhash()), policy=st.sampled_from(_POLICY_CHOICES))
def test_combined_actions_never_move_more_than_the_engine_counts(message: Message | MessageV0, policy: Policy) -> None:
    _, findings = check(_WORLD, policy, message)
    assert not findings, (findings, message)


# The oracle has teeth: it finds what an engine that counted nothing, or let any destination through, would miss.


def test_the_oracle_sees_an_uncounted_payment() -> None:
    w = _WORLD
    message = Message.new_with_blockhash([sol_transfer(w.wallet.pubkey(), w.allowed, 10**6)], w.wallet.pubkey(),
                                         w.svm.latest_blockhash())  # fmt: skip
    decision = decide(_POLICIES[True], w, message)
    assert decision.verdict is Verdict.ESCALATE
    honest = run_on_chain(w, message, decision, _POLICIES[True].rules.destinations).findings
    assert honest == []
    short = Decision(decision.verdict, decision.reasons, (Reservation("SOL", 10**6),), decision.policy_sequence)
    findings = run_on_chain(w, message, short, _POLICIES[True].rules.destinations).findings
    assert [(f.asset, f.seen, f.allowed) for f in findings] == [("SOL", 10**6 + 5_000,
                                                                                           10**6)]  # fmt: skip


@pytest.mark.parametrize("to", ["denied", "denied_ata"])
def test_the_oracle_sees_a_refused_destination(to: str) -> None:
    w = _WORLD
    dest: Pubkey = w.denied if to == "denied" else w.ata(w.denied, w.mint)
    message = Message.new_with_blockhash([sol_transfer(w.wallet.pubkey(), dest, 10**6)], w.wallet.pubkey(),
                                         w.svm.latest_blockhash())  # fmt: skip
    policy = _POLICIES[False]
    assert decide(policy, w, message).verdict is Verdict.DENY
    counted_all = Decision(Verdict.ALLOW, (), (Reservation("SOL", 10**6), Reservation("fees", 5_000)), 1)
    findings = run_on_chain(w, message, counted_all, policy.rules.destinations).findings
    assert [f.what for f in findings] == ["value reached a refused destination"]


def test_a_stranger_paid_by_the_wallet_closing_its_own_account_to_a_denied_party_is_no_finding() -> None:
    """Found by mutation testing's runs (a Hypothesis example): the wallet pays the fee-paying stranger 1 lamport and
    the stranger closes its own token account to a denied party. None of the wallet's value reaches that party, but
    the oracle took the fee off the total after netting the stranger's account, so the lamport the stranger received
    hid one lamport of what it gave up. The same close of an account the wallet paid into is still a finding."""
    wallet_key, stranger, closed = (Pubkey.new_unique() for _ in range(3))
    rules = outflow_policy(_WORLD, allowlist=False).rules.destinations
    denied = next(iter(rules.deny))
    fee, value = 5000, 1_002_039_280

    def run(paid_into: Pubkey) -> list[Any]:
        before = {wallet_key: Holding(frozenset({wallet_key}), {"SOL": 100}),
                  stranger: Holding(frozenset({stranger}), {"SOL": 10_000}),
                  closed: Holding(frozenset({stranger}), {"SOL": value})}  # fmt: skip
        after = {wallet_key: Holding(frozenset({wallet_key}), {"SOL": 99}),
                 stranger: Holding(frozenset({stranger}), {"SOL": 10_000 - fee + (paid_into == stranger)}),
                 closed: Holding(frozenset(), {}),
                 denied: Holding(frozenset({denied}), {"SOL": value + (paid_into == closed)})}  # fmt: skip
        wallet = frozenset({wallet_key})
        return judge(before, after, wallet=wallet, rules=rules, reserved={"SOL": 1}, fee_payer=stranger,
                     stranger_fee=fee)  # fmt: skip

    assert run(paid_into=stranger) == []
    assert [f.what for f in run(paid_into=closed)] == ["value reached a refused destination"]
