"""PUT /v1/wallets/{id}/policy with a policy that declares a Squads multisig: the proxy reads the multisig and its
spending limits through its chain adapter and installs the policy only if they conform
(`parent_proxy.multisig_onchain.check_install`); a refusal stores nothing and sends nothing to the enclave. Also the
vault of a wallet created without one (its multisig's vault 0), before and after an agent-key rotation. The real
proxy, store, enclave and embedded chain (LiteSVM); the Squads accounts are written into the chain by the test
(`tests.support.squads_rotation`), as in test_api_multisig.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from solders.account import Account
from solders.pubkey import Pubkey

from parent_proxy.chain import RpcChain
from parent_proxy.squads_spending_limit_account import SPENDING_LIMIT_DISCRIMINATOR
from policies.decoders.squads_vault import squads_vault_address
from tests.proxy.api_harness import Harness, provision, running_harness, spy_calls, svm
from tests.proxy.rotation_requests import agent_key_path, chain_shows, multisig_wallet, rotation_body, switch_body
from tests.support.policies import MERCHANT
from tests.support.squads_encoder import PROGRAM_ID
from tests.support.squads_rotation import (
    EXAMPLE_CREATE_KEY,
    EXAMPLE_MULTISIG,
    EXAMPLE_VAULT,
    put_conforming_chain,
    put_multisig,
    put_spending_limit,
    rotation_transaction,
)

CREATE_KEY, MULTISIG, VAULT = EXAMPLE_CREATE_KEY, EXAMPLE_MULTISIG, EXAMPLE_VAULT


def conforming_chain(h: Harness, **fields: Any) -> None:
    """`put_conforming_chain` for the harness's owner and agent (``fields``: its keyword arguments)."""
    put_conforming_chain(svm(h), h.owner_pub, h.agent, **fields)


def install(h: Harness, sequence: int, **rules: Any) -> Any:
    return h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": h.policy(sequence, **rules)})


def declaring(h: Harness, sequence: int) -> Any:
    return install(h, sequence, squads_multisig=str(MULTISIG))


def wallet_view(h: Harness) -> dict[str, Any]:
    answer = h.client.get(f"/v1/wallets/{h.wallet_id}", headers={"Authorization": f"Bearer {h.token}"})
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def report(h: Harness) -> dict[str, Any]:
    answer = h.owner_call("GET", f"/v1/wallets/{h.wallet_id}/multisig")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def error(answer: Any) -> tuple[int, str]:
    return answer.status_code, str(answer.json()["error"]["code"])


class Unchanged:
    """What a refused install must leave as it was: the wallet view (policy sequence and hash), the audit log, and
    the enclave, which is told nothing (neither asked to forget the wallet's policy nor given one)."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.view = wallet_view(h)
        self.events = h.audit_events()
        self.enclave: list[Any] = spy_calls(h.services.relay, "ensure_wallet")
        forget = h.services.relay.forget

        def forgotten(wallet_id: str | None = None, *, flying: str | None = None) -> None:
            self.enclave.append(("forget", wallet_id))
            forget(wallet_id, flying=flying)

        h.services.relay.forget = forgotten  # type: ignore[method-assign]

    def check(self) -> None:
        assert wallet_view(self.h) == self.view
        assert self.h.audit_events() == self.events
        assert self.enclave == []


def test_a_conforming_multisig_is_read_and_the_policy_installed(h: Harness) -> None:
    provision(h)  # the example policy, sequence 1, declares no multisig
    conforming_chain(h)
    multisig_reads = spy_calls(h.services.chain, "multisig_account")
    limit_reads = spy_calls(h.services.chain, "spending_limits")
    installed = declaring(h, 2)
    assert installed.status_code == 200, installed.text
    assert installed.json()["enclave_installed"] is True and wallet_view(h)["policy_sequence"] == 2
    assert (multisig_reads, limit_reads) == ([MULTISIG], [MULTISIG])  # the declared multisig and its limits, read
    assert report(h)["conforms"] is True


def test_a_non_conforming_multisig_is_refused_naming_each_failed_check_and_nothing_changes(h: Harness) -> None:
    provision(h)
    conforming_chain(h, threshold=1)
    shared = put_spending_limit(svm(h), MULTISIG, Pubkey.new_unique(), members=[h.owner_pub, h.agent],
                                amount=5_000_000_000, destinations=[MERCHANT])  # fmt: skip
    unchanged = Unchanged(h)
    refused = declaring(h, 2)
    assert error(refused) == (409, "multisig_nonconforming")
    body = refused.json()["error"]
    assert "failed checks: multisig.threshold, spending_limit.members" in body["message"]
    assert [(r["id"], r["subject"], r["seen"]) for r in body["reasons"]] == [
        ("multisig.threshold", str(MULTISIG), "1"),
        ("spending_limit.members", str(shared), "[" + ", ".join(map(str, sorted([h.owner_pub, h.agent], key=bytes)))
         + "]"),
    ]  # fmt: skip
    assert set(body["reasons"][0]) == {"id", "subject", "seen", "expected"}
    unchanged.check()
    # Only the chain stood in the way: set right, the same policy goes in.
    put_multisig(svm(h), CREATE_KEY, [h.owner_pub, h.agent])
    svm(h).set_account(shared, Account(lamports=0, data=b"", owner=Pubkey.default(), executable=False))
    assert declaring(h, 2).status_code == 200


def test_a_multisig_that_does_not_exist_is_refused_as_multisig_exists_and_nothing_changes(h: Harness) -> None:
    provision(h)
    unchanged = Unchanged(h)
    refused = declaring(h, 2)  # nothing at the declared address
    assert error(refused) == (409, "multisig_nonconforming")
    assert [r["id"] for r in refused.json()["error"]["reasons"]] == ["multisig.exists"]
    unchanged.check()


def failing_rpc(calls: list[str]) -> RpcChain:
    """The proxy's RPC adapter whose endpoint cannot be reached (the transport is the seam)."""

    def unreachable(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content)["method"])
        raise httpx.ConnectError("connection refused", request=request)

    return RpcChain(httpx.AsyncClient(transport=httpx.MockTransport(unreachable)), "http://rpc.invalid/")


def test_a_chain_that_cannot_be_read_refuses_the_install_with_503_and_nothing_changes(h: Harness) -> None:
    provision(h)
    conforming_chain(h)
    # 1. A spending limit of the multisig that does not parse: the limits cannot be read, never a pass.
    garbage = SPENDING_LIMIT_DISCRIMINATOR + bytes(MULTISIG) + b"\x00" * 7
    svm(h).set_account(Pubkey.new_unique(), Account(lamports=10**9, data=garbage, owner=PROGRAM_ID, executable=False))
    unchanged = Unchanged(h)
    refused = declaring(h, 2)
    assert error(refused) == (503, "chain_unavailable")
    assert "spending limit account data too short" in refused.json()["error"]["message"]
    unchanged.check()
    # 2. The RPC endpoint down.
    calls: list[str] = []
    h.services.chain = failing_rpc(calls)
    refused = declaring(h, 2)
    assert error(refused) == (503, "chain_unavailable")
    assert "RPC getAccountInfo failed: ConnectError" in refused.json()["error"]["message"]
    assert calls == ["getAccountInfo"]
    unchanged.check()


def test_a_policy_that_declares_no_multisig_is_installed_without_reading_the_chain(h: Harness) -> None:
    provision(h)
    calls: list[str] = []
    h.services.chain = failing_rpc(calls)
    assert error(declaring(h, 2)) == (503, "chain_unavailable")  # the multisig one needs the chain
    installed = install(h, 2, squads_multisig=None)
    assert installed.status_code == 200, installed.text
    assert calls == ["getAccountInfo"] and wallet_view(h)["policy_sequence"] == 2


def test_a_wallet_created_without_a_vault_is_checked_against_its_multisigs_vault_0(h: Harness) -> None:
    provision(h)  # no vault_address: the agent key is stored in its place
    assert wallet_view(h)["vault_address"] == str(h.agent)  # no multisig declared: the agent key's own account
    conforming_chain(h, vault_index=1)  # limits that spend from another vault than 0
    refused = declaring(h, 2)
    assert error(refused) == (409, "multisig_nonconforming")
    assert [r["id"] for r in refused.json()["error"]["reasons"]] == ["spending_limit.vault"] * 2
    for account, _ in list(svm(h).get_program_accounts(PROGRAM_ID)):
        svm(h).set_account(account, Account(lamports=0, data=b"", owner=Pubkey.default(), executable=False))
    conforming_chain(h)  # vault 0
    assert declaring(h, 2).status_code == 200
    vault = next(c for c in report(h)["checks"] if c["id"] == "multisig.vault")
    assert vault == {"id": "multisig.vault", "subject": str(MULTISIG), "ok": True,
                     "seen": f"{VAULT} (vault 0: the wallet names no vault, so the multisig's default)",
                     "expected": "a vault PDA of this multisig"}  # fmt: skip
    assert wallet_view(h)["vault_address"] == str(VAULT)  # the agent is shown the vault it is checked with


def test_a_vault_recorded_at_creation_is_the_one_checked(h: Harness) -> None:
    other = squads_vault_address(Pubkey.new_unique(), 0)  # another multisig's vault
    body = {"wallet_id": h.wallet_id, "owner_public_key": str(h.owner_pub), "vault_address": str(other)}
    created = h.owner_call("POST", "/v1/wallets", body)
    assert created.status_code == 201, created.text
    h.agent = Pubkey.from_string(created.json()["agent_public_key"])
    conforming_chain(h)
    refused = declaring(h, 1)
    assert error(refused) == (409, "multisig_nonconforming")
    reasons = refused.json()["error"]["reasons"]
    assert [r["id"] for r in reasons] == ["multisig.vault", "spending_limit.vault", "spending_limit.vault"]
    assert reasons[0]["seen"] == f"{other} (not a vault of this multisig)"


def test_after_an_agent_key_rotation_the_wallet_still_names_no_vault(h: Harness) -> None:
    multisig = multisig_wallet(h)  # created without a vault; the multisig on chain before the policy went in
    old = h.agent
    new = Pubkey.from_string(h.owner_call("POST", agent_key_path(h, "/candidate")).json()["candidate_public_key"])
    raw = rotation_transaction(multisig, owner=h.owner_pub, agent=old, new_agent=new)
    assert h.owner_call("POST", agent_key_path(h, "/rotation"), rotation_body(h, raw, new)).status_code == 200
    # Landed on chain, not yet switched: the wallet's agent key is no member, so a policy install waits.
    chain_shows(h, [h.owner_pub, new])
    assert error(declaring(h, 2)) == (409, "multisig_nonconforming")
    assert h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new)).status_code == 200
    # The stored vault is now a retired agent key: still "no vault", so vault 0.
    stored = h.store.get_wallet(h.wallet_id)
    assert (stored.vault_address, stored.agent_pubkey) == (bytes(old), bytes(new))
    checks = report(h)["checks"]
    assert all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]
    h.agent = new
    assert declaring(h, 2).status_code == 200
    assert wallet_view(h)["vault_address"] == str(VAULT)


# --------------------------------------------------------------- WAIAAS_REQUIRE_MULTISIG (`Services.require_multisig`)


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[Harness]:
    """The proxy as deployed: every policy must declare a multisig (the harness's own default is false)."""
    yield from running_harness(tmp_path, require_multisig=True)


def refused_without_multisig(h: Harness, sequence: int) -> None:
    """A policy that declares no multisig is refused with 422 naming the rule and the setting, before the chain is
    read, and nothing changes (`Unchanged`)."""
    unchanged = Unchanged(h)
    reads = spy_calls(h.services.chain, "multisig_account")
    refused = install(h, sequence, squads_multisig=None)
    assert error(refused) == (422, "invalid_request")
    message = refused.json()["error"]["message"]
    assert "rules.squads_multisig is null" in message and "WAIAAS_REQUIRE_MULTISIG=true" in message
    unchanged.check()  # nothing stored, no record, nothing sent to the enclave
    assert reads == []


def test_a_proxy_that_requires_a_multisig_refuses_a_policy_without_one_and_nothing_changes(strict: Harness) -> None:
    h = strict
    created = h.owner_call("POST", "/v1/wallets", {"wallet_id": h.wallet_id, "owner_public_key": str(h.owner_pub)})
    h.agent = Pubkey.from_string(created.json()["agent_public_key"])
    h.token = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/tokens").json()["token"]
    refused_without_multisig(h, 1)  # the wallet's first policy
    assert (wallet_view(h)["policy_sequence"], wallet_view(h)["squads_multisig"]) == (0, None)
    conforming_chain(h)
    assert declaring(h, 1).status_code == 200  # one that declares a conforming multisig goes in
    assert wallet_view(h)["squads_multisig"] == str(MULTISIG)
    refused_without_multisig(h, 2)  # and cannot be replaced by one that declares none
    assert wallet_view(h)["policy_sequence"] == 1


def test_with_the_requirement_off_a_policy_without_a_multisig_installs_and_the_view_says_so(h: Harness) -> None:
    assert h.services.require_multisig is False  # the harness's default, as on the self-host local chain
    provision(h)  # the example policy: no multisig
    view = wallet_view(h)
    assert (view["policy_sequence"], view["squads_multisig"]) == (1, None)
    # The requirement turned on later (the proxy restarted with it): the policy in force stays, as the view shows,
    # and the next one without a multisig is refused.
    h.services.require_multisig = True
    assert error(install(h, 2, squads_multisig=None)) == (422, "invalid_request")
    assert (wallet_view(h)["policy_sequence"], wallet_view(h)["squads_multisig"]) == (1, None)
