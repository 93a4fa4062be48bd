"""parent_proxy.multisig_conformance: the wallet's multisig and spending limits, written by the IDL-driven test
encoder (`tests.support.squads_rotation`) and read back by the proxy's own readers, against the signed policy.
Each non-conforming case names exactly the checks it must fail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from solders.pubkey import Pubkey

from parent_proxy.multisig_conformance import (
    PERIOD_SECONDS,
    ConformanceReport,
    WalletKeys,
    automatic_allowance,
    missing_multisig,
    multisig_conformance,
    vault_index,
)
from parent_proxy.squads_multisig_account import parse_multisig_account
from parent_proxy.squads_spending_limit_account import (
    PERIOD_DAY,
    PERIOD_MONTH,
    PERIOD_ONE_TIME,
    PERIOD_WEEK,
    SpendingLimitAccount,
    parse_spending_limit_account,
)
from policies.decoders.squads_vault import squads_vault_address
from policies.document import Policy, policy_from_object
from tests.support.policies import BLOCKED, EXAMPLE_MINT, MERCHANT, TREASURY, example_policy
from tests.support.squads_encoder import PROGRAM_ID
from tests.support.squads_rotation import (
    EXAMPLE_CREATE_KEY,
    EXAMPLE_MULTISIG,
    EXAMPLE_VAULT,
    multisig_account_data,
    multisig_address,
    spending_limit_account_data,
    spending_limit_address,
)

OWNER = Pubkey.from_string("5ZWj7a1f8tWkjBESHKgrLmXshuXxqeY9SYcfbshpAqPG")
AGENT = Pubkey.from_string("8opHzTAnfzRpPEx21XtnrVTX28YQuCpAjcn1PczScKh")
CREATE_KEY, MULTISIG, VAULT = EXAMPLE_CREATE_KEY, EXAMPLE_MULTISIG, EXAMPLE_VAULT
SOL_DAILY = 5_000_000_000
"""The example policy's automatic SOL per day (its token: 500_000_000 per day)."""
TOKEN_DAILY = 500_000_000
MULTISIG_IDS = ["multisig.declared", "multisig.members", "multisig.owner_permissions", "multisig.agent_permissions",
                "multisig.threshold", "multisig.config_authority", "multisig.time_lock", "multisig.vault"]  # fmt: skip
LIMIT_IDS = ["spending_limit.members", "spending_limit.vault", "spending_limit.destinations", "spending_limit.amount"]


def limit(**fields: Any) -> dict[str, Any]:
    """`spending_limit_account_data` arguments: by default a SOL limit the example policy conforms to."""
    value: dict[str, Any] = {"multisig": MULTISIG, "create_key": Pubkey.new_unique(), "members": [AGENT],
                             "mint": Pubkey.default(), "amount": SOL_DAILY, "period": PERIOD_DAY,
                             "destinations": [MERCHANT], "vault_index": 0}  # fmt: skip
    value.update(fields)
    return value


def token_limit(**fields: Any) -> dict[str, Any]:
    return limit(**{"mint": EXAMPLE_MINT, "amount": TOKEN_DAILY, "destinations": [TREASURY], **fields})


@dataclass
class Case:
    multisig: dict[str, Any] = field(default_factory=dict)
    """`multisig_account_data` keyword arguments (``members`` too)."""
    limits: list[dict[str, Any]] = field(default_factory=lambda: [limit(), token_limit()])
    rules: dict[str, Any] = field(default_factory=dict)
    """Policy rules replaced in the example policy (``squads_multisig`` is the multisig's unless given)."""
    wallet_vault: Pubkey | None = VAULT


def read_limit(value: dict[str, Any]) -> SpendingLimitAccount:
    address = spending_limit_address(value["multisig"], value["create_key"])[0]
    rest = {k: v for k, v in value.items() if k not in ("multisig", "create_key")}
    data = spending_limit_account_data(value["multisig"], value["create_key"], **rest)
    return parse_spending_limit_account(address, PROGRAM_ID, data)


def policy(**rules: Any) -> Policy:
    document = example_policy()
    document["rules"]["squads_multisig"] = str(MULTISIG)
    document["rules"].update(rules)
    return policy_from_object(document)


def report(case: Case) -> ConformanceReport:
    fields = dict(case.multisig)
    members = fields.pop("members", [OWNER, AGENT])
    account = parse_multisig_account(MULTISIG, PROGRAM_ID, multisig_account_data(CREATE_KEY, members, **fields))
    limits = [read_limit(value) for value in case.limits]
    return multisig_conformance(WalletKeys(OWNER, AGENT, case.wallet_vault), policy(**case.rules), account, limits)


def failed(case: Case) -> set[str]:
    return {check.id for check in report(case).checks if not check.ok}


def test_a_conforming_wallet() -> None:
    answer = report(Case())
    assert answer.conforms and answer.multisig == MULTISIG
    assert [c.id for c in answer.checks] == MULTISIG_IDS + LIMIT_IDS + LIMIT_IDS
    assert all(c.ok for c in answer.checks)
    amounts = [c for c in answer.checks if c.id == "spending_limit.amount"]
    assert amounts[0].seen == f"SOL: the policy allows up to {SOL_DAILY} automatically in any 86400 s"
    assert amounts[0].expected == f"at most the limit's {SOL_DAILY} per Day"
    assert amounts[1].seen == f"{EXAMPLE_MINT}: the policy allows up to {TOKEN_DAILY} automatically in any 86400 s"


def test_check_subjects_name_the_accounts() -> None:
    values = [limit(), token_limit()]
    answer = report(Case(limits=values))
    addresses = [str(spending_limit_address(MULTISIG, v["create_key"])[0]) for v in values]
    assert [c.subject for c in answer.checks] == [str(MULTISIG)] * 8 + [addresses[0]] * 4 + [addresses[1]] * 4


def test_no_spending_limit_still_conforms_on_the_multisig_checks() -> None:
    """Without a limit the agent key moves nothing of the vault alone: nothing to exceed (module docstring)."""
    answer = report(Case(limits=[]))
    assert answer.conforms and [c.id for c in answer.checks] == MULTISIG_IDS


STRANGER = Pubkey.from_string("GvpCiTgq9dmEeojCDBivoLoZqc4AkbUDACpqPMwYLWKh")
OTHER_MULTISIG = multisig_address(Pubkey.from_string("BPFLoaderUpgradeab1e11111111111111111111111"))[0]

NON_CONFORMING: dict[str, tuple[Callable[[], Case], set[str]]] = {
    "another multisig declared": (lambda: Case(rules={"squads_multisig": str(OTHER_MULTISIG)}),
                                  {"multisig.declared"}),
    "a third member": (lambda: Case(multisig={"members": [OWNER, AGENT, STRANGER]}), {"multisig.members"}),
    "the agent key missing": (lambda: Case(multisig={"members": [OWNER, STRANGER]}),
                              {"multisig.members", "multisig.agent_permissions"}),
    "the owner key missing": (lambda: Case(multisig={"members": [STRANGER, AGENT]}),
                              {"multisig.members", "multisig.owner_permissions"}),
    "the owner cannot execute": (lambda: Case(multisig={"permissions": {OWNER: 3}}), {"multisig.owner_permissions"}),
    "the agent cannot vote": (lambda: Case(multisig={"permissions": {AGENT: 5}}), {"multisig.agent_permissions"}),
    "threshold 1": (lambda: Case(multisig={"threshold": 1}), {"multisig.threshold"}),
    "a config authority": (lambda: Case(multisig={"config_authority": STRANGER}), {"multisig.config_authority"}),
    "a time lock": (lambda: Case(multisig={"time_lock": 60}), {"multisig.time_lock"}),
    "the wallet's vault is the agent key": (lambda: Case(wallet_vault=AGENT),
                                            {"multisig.vault", "spending_limit.vault"}),
    "the wallet's vault is another multisig's": (lambda: Case(wallet_vault=squads_vault_address(OTHER_MULTISIG, 0)),
                                                 {"multisig.vault", "spending_limit.vault"}),
    "a limit the owner may use too": (lambda: Case(limits=[limit(members=[OWNER, AGENT])]),
                                      {"spending_limit.members"}),
    "a limit of another key": (lambda: Case(limits=[limit(members=[STRANGER])]), {"spending_limit.members"}),
    "a limit on another vault": (lambda: Case(limits=[limit(vault_index=1)]), {"spending_limit.vault"}),
    "a limit to any destination, policy allowlist": (lambda: Case(limits=[limit(destinations=[])]),
                                                     {"spending_limit.destinations"}),
    "a limit destination off the allowlist": (lambda: Case(limits=[limit(destinations=[MERCHANT, STRANGER])]),
                                              {"spending_limit.destinations"}),
    "a limit destination on the denylist": (
        lambda: Case(limits=[limit(destinations=[BLOCKED])], rules={"destinations": {"allow": "any",
                                                                                     "deny": [str(BLOCKED)]}}),
        {"spending_limit.destinations"}),
    "a limit to any destination, policy denylist": (
        lambda: Case(limits=[limit(destinations=[])], rules={"destinations": {"allow": "any",
                                                                              "deny": [str(BLOCKED)]}}),
        {"spending_limit.destinations"}),
    "a SOL limit below the policy's day": (lambda: Case(limits=[limit(amount=SOL_DAILY - 1)]),
                                           {"spending_limit.amount"}),
    "a token limit below the policy's day": (lambda: Case(limits=[token_limit(amount=TOKEN_DAILY - 1)]),
                                             {"spending_limit.amount"}),
    "a weekly limit below seven policy days": (
        lambda: Case(limits=[limit(period=PERIOD_WEEK, amount=7 * SOL_DAILY - 1)]), {"spending_limit.amount"}),
    "a monthly limit below thirty policy days": (
        lambda: Case(limits=[limit(period=PERIOD_MONTH, amount=30 * SOL_DAILY - 1)]), {"spending_limit.amount"}),
    "a one-time limit the policy keeps granting": (
        lambda: Case(limits=[limit(period=PERIOD_ONE_TIME, amount=10**18)]), {"spending_limit.amount"}),
    "a limit of another multisig": (lambda: Case(limits=[limit(multisig=OTHER_MULTISIG)]),
                                    {"spending_limit.multisig"}),
}  # fmt: skip


@pytest.mark.parametrize("name", NON_CONFORMING)
def test_each_departure_fails_exactly_its_checks(name: str) -> None:
    build, expected = NON_CONFORMING[name]
    answer = report(build())
    assert {c.id for c in answer.checks if not c.ok} == expected
    assert not answer.conforms


def test_limits_at_the_policys_allowance_conform() -> None:
    """The boundary of each period: the policy's allowance over the period exactly equals the amount."""
    limits = [limit(period=PERIOD_WEEK, amount=7 * SOL_DAILY), limit(period=PERIOD_MONTH, amount=30 * SOL_DAILY),
              limit(amount=SOL_DAILY), token_limit(amount=TOKEN_DAILY)]  # fmt: skip
    assert report(Case(limits=limits)).conforms


def test_any_destination_passes_when_the_policy_allows_any_and_denies_none() -> None:
    rules = {"destinations": {"allow": "any", "deny": []}}
    assert report(Case(limits=[limit(destinations=[])], rules=rules)).conforms
    assert report(Case(limits=[limit(destinations=[STRANGER])], rules=rules)).conforms


def test_a_one_time_limit_conforms_only_for_a_mint_the_policy_never_grants() -> None:
    other_mint = Pubkey.from_string("So11111111111111111111111111111111111111112")
    assert report(Case(limits=[limit(period=PERIOD_ONE_TIME, mint=other_mint, amount=1)])).conforms


def test_another_vault_index_of_the_multisig() -> None:
    vault = squads_vault_address(MULTISIG, 3)
    assert vault_index(MULTISIG, vault) == 3 and vault_index(MULTISIG, VAULT) == 0
    assert vault_index(MULTISIG, AGENT) is None
    assert report(Case(wallet_vault=vault, limits=[limit(vault_index=3)])).conforms
    assert failed(Case(wallet_vault=vault, limits=[limit(vault_index=0)])) == {"spending_limit.vault"}


def test_a_wallet_that_names_no_vault_is_compared_with_vault_0() -> None:
    answer = report(Case(wallet_vault=None))
    assert answer.conforms and [c.id for c in answer.checks] == MULTISIG_IDS + LIMIT_IDS + LIMIT_IDS
    vault = next(c for c in answer.checks if c.id == "multisig.vault")
    assert vault.seen == f"{VAULT} (vault 0: the wallet names no vault, so the multisig's default)"
    assert failed(Case(wallet_vault=None, limits=[limit(vault_index=1)])) == {"spending_limit.vault"}
    limit_vault = next(c for c in report(Case(wallet_vault=None, limits=[limit(vault_index=1)])).checks
                       if c.id == "spending_limit.vault")  # fmt: skip
    assert (limit_vault.seen, limit_vault.expected) == ("vault 1", "the wallet's vault (vault 0)")


def test_a_multisig_that_does_not_exist_is_one_failed_exists_check() -> None:
    answer = missing_multisig(MULTISIG)
    assert answer.multisig == MULTISIG and not answer.conforms
    assert [(c.id, c.subject, c.ok, c.seen) for c in answer.checks] == [
        ("multisig.exists", str(MULTISIG), False, "no account at this address")
    ]


def test_the_failed_checks_say_what_was_seen_and_expected() -> None:
    answer = report(Case(multisig={"threshold": 1, "permissions": {AGENT: 1}}, limits=[limit(members=[OWNER])]))
    by_id = {c.id: c for c in answer.checks if not c.ok}
    assert (by_id["multisig.threshold"].seen, by_id["multisig.threshold"].expected) == ("1", "2")
    assert (by_id["multisig.agent_permissions"].seen, by_id["multisig.agent_permissions"].expected) == (
        "Initiate", "at least Vote")  # fmt: skip
    assert by_id["spending_limit.members"].seen == f"[{OWNER}]"
    assert by_id["spending_limit.members"].expected == f"exactly the agent key [{AGENT}]"


# -- the policy's automatic allowance ------------------------------------------------------------------------------


def test_allowance_is_the_tightest_of_the_periods_and_the_request_rate() -> None:
    periods = [{"id": "h", "window_seconds": 3600, "automatic": "1000", "approval": "2000"},
               {"id": "d", "window_seconds": 86400, "automatic": "30000", "approval": "90000"}]  # fmt: skip
    per_transaction = {"automatic": "10", "approval": "100"}
    limits = [{"id": "sol", "asset": "SOL", "per_transaction": per_transaction, "periods": periods}]
    hourly = policy(limits=limits, rate={"max_requests": 60, "window_seconds": 60})
    assert automatic_allowance(hourly, "SOL", 3600) == 1000  # the hour
    assert automatic_allowance(hourly, "SOL", 86400) == 24_000  # 24 hours: below the day's 30 000
    assert automatic_allowance(hourly, "SOL", 7 * 86400) == 7 * 24_000  # below 7 days of 30 000
    assert automatic_allowance(hourly, "SOL", 5400) == 2000  # 1.5 hours span two windows
    slow = policy(limits=limits, rate={"max_requests": 1, "window_seconds": 3600})
    assert automatic_allowance(slow, "SOL", 86400) == 10 * 24  # one request of at most 10 per hour
    no_periods = [{**limits[0], "periods": []}]
    assert automatic_allowance(policy(limits=no_periods), "SOL", 86400) == 10 * 60 * 1440
    # A mint without a limit is denied: nothing automatic (the parser refuses a limit of a mint off the allowlist).
    assert automatic_allowance(hourly, str(EXAMPLE_MINT), 86400) == 0
    assert automatic_allowance(policy(), str(EXAMPLE_MINT), 86400) == TOKEN_DAILY


def test_the_periods_are_the_programs() -> None:
    assert PERIOD_SECONDS == {PERIOD_DAY: 86_400, PERIOD_WEEK: 604_800, PERIOD_MONTH: 2_592_000}
