"""``waiaas owner check-multisig --rpc-url``: the multisig check made by the owner CLI on what its own RPC endpoint
returns, without the parent. The RPC is selfhost.local_chain's JSON-RPC over a real LiteSVM (the `rpc` fixture);
the Squads program is not available offline, so the multisig and spending-limit accounts its instructions would
leave are written into the chain (`tests.support.squads_rotation`), as in test_api_multisig.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from policies.decoders.squads_vault import squads_vault_address
from policies.signing import POLICY_PURPOSE, sign_document
from tests.support.owner_rotation_rpc import RPC_URL, RPC_URL_WARNING, Cli, Rpc, rpc_url_file, secrets_of
from tests.support.policies import MERCHANT, example_policy, owner_public_key
from tests.support.squads_rotation import (
    EXAMPLE_MULTISIG,
    put_conforming_chain,
    put_spending_limit,
)

MULTISIG = EXAMPLE_MULTISIG
AGENT = Pubkey.from_string("5ZWj7a1f8tWkjBESHKgrLmXshuXxqeY9SYcfbshpAqPG")
SECRET = ("rpc-secret-token", "rpc.invalid")
"""The RPC URL's API key and host: never printed."""


@pytest.fixture
def owner(keypair: tuple[Path, Ed25519PrivateKey]) -> Pubkey:
    return owner_public_key(keypair[1])


def signed_policy(tmp_path: Path, key: Ed25519PrivateKey, name: str = "policy.json", **rules: Any) -> Path:
    """The example policy for wallet ``w1`` declaring ``MULTISIG`` (``rules`` override), signed with ``key``."""
    document = example_policy()
    document["wallet_id"], document["sequence"] = "w1", 3
    document["rules"]["squads_multisig"] = str(MULTISIG)
    document["rules"].update(rules)
    path = tmp_path / name
    path.write_text(json.dumps(sign_document(POLICY_PURPOSE, document, key)))
    return path


def conforming_chain(rpc: Rpc, owner: Pubkey, **multisig: Any) -> None:
    """`put_conforming_chain` of ``owner`` and `AGENT` (``multisig``: the multisig's fields), from vault 0."""
    put_conforming_chain(rpc.backend.svm, owner, AGENT, **multisig)


def check(cli: Cli, owner: Pubkey, policy: Path, *extra: str, agent: str = str(AGENT)) -> tuple[int, str, str]:
    return cli("--owner-public-key", str(owner), "check-multisig", "--rpc-url-file", rpc_url_file(policy.parent),
               "--policy", str(policy), "--agent-key", agent, *extra)  # fmt: skip


def failed(err: str) -> list[str]:
    """The ids of the failed checks the command wrote on stderr."""
    prefix = "owner check-multisig: failed: "
    return [line.removeprefix(prefix).split(" ")[0] for line in err.splitlines() if line.startswith(prefix)]


def test_a_conforming_multisig_exits_0_with_the_apis_report(
    rpc: Rpc, cli: Cli, owner: Pubkey, keypair: tuple[Path, Ed25519PrivateKey], tmp_path: Path
) -> None:
    conforming_chain(rpc, owner)
    code, out, err = check(cli, owner, signed_policy(tmp_path, keypair[1]))
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert list(report) == ["wallet_id", "multisig", "conforms", "checks"]  # the API's MultisigConformance
    assert (report["wallet_id"], report["multisig"], report["conforms"]) == ("w1", str(MULTISIG), True)
    assert len(report["checks"]) == 8 + 2 * 4 and all(c["ok"] for c in report["checks"])
    vault = next(c for c in report["checks"] if c["id"] == "multisig.vault")
    # No --vault: the wallet names none, so the multisig's vault 0 is its vault (as the proxy assumes).
    assert (
        vault["seen"] == f"{squads_vault_address(MULTISIG, 0)} (vault 0: the wallet names no vault, so the "
        "multisig's default)"
    )
    # Read from the owner's RPC: the multisig the policy declares, then its spending limits.
    assert [c["method"] for c in rpc.calls] == ["getAccountInfo", "getProgramAccounts"]
    assert rpc.calls[0]["params"][0] == str(MULTISIG) and rpc.urls == [RPC_URL, RPC_URL]
    # The owner key may come from the key file instead (nothing is signed with it); the URL from the command line
    # still works, with a warning that names the part holding the key and not the key.
    code, out, err = cli("--keypair", str(keypair[0]), "check-multisig", "--rpc-url", RPC_URL, "--policy",
                         str(signed_policy(tmp_path, keypair[1])), "--agent-key", str(AGENT))  # fmt: skip
    assert (code, json.loads(out)["conforms"]) == (0, True) and "failed" not in err
    assert f"\n{RPC_URL_WARNING}" in err and "give --rpc-url-file FILE instead\n" in err
    cli.assert_no_secret(*SECRET, *secrets_of(keypair[1]))


def test_a_non_conforming_multisig_exits_1_with_its_failed_checks_on_stderr(
    rpc: Rpc, cli: Cli, owner: Pubkey, keypair: tuple[Path, Ed25519PrivateKey], tmp_path: Path
) -> None:
    conforming_chain(rpc, owner, threshold=1)
    shared = put_spending_limit(rpc.backend.svm, MULTISIG, Pubkey.new_unique(), members=[owner, AGENT],
                                amount=5_000_000_000, destinations=[MERCHANT])  # fmt: skip
    policy = signed_policy(tmp_path, keypair[1])
    code, out, err = check(cli, owner, policy)
    report = json.loads(out)
    assert (code, report["conforms"]) == (1, False)
    assert [c["id"] for c in report["checks"] if not c["ok"]] == ["multisig.threshold", "spending_limit.members"]
    assert failed(err) == ["multisig.threshold", "spending_limit.members"]
    assert f"failed: spending_limit.members ({shared}): seen [" in err
    # The agent key is the owner's to give: a chain naming another agent does not conform.
    code, out, err = check(cli, owner, policy, agent=str(Pubkey.new_unique()))
    assert code == 1 and {"multisig.members", "multisig.agent_permissions"} <= set(failed(err))
    cli.assert_no_secret(*SECRET)


def test_the_vault_option(
    rpc: Rpc, cli: Cli, owner: Pubkey, keypair: tuple[Path, Ed25519PrivateKey], tmp_path: Path
) -> None:
    conforming_chain(rpc, owner)  # limits spend from vault 0
    policy = signed_policy(tmp_path, keypair[1])
    code, _, err = check(cli, owner, policy, "--vault", str(squads_vault_address(MULTISIG, 0)))
    assert (code, err) == (0, "")
    code, _, err = check(cli, owner, policy, "--vault", str(squads_vault_address(MULTISIG, 1)))
    assert code == 1 and failed(err) == ["spending_limit.vault", "spending_limit.vault"]
    code, _, err = check(cli, owner, policy, "--vault", str(Pubkey.new_unique()))
    assert code == 1 and failed(err)[0] == "multisig.vault"


def test_a_policy_another_key_signed_is_refused_before_the_chain_is_read(
    rpc: Rpc, cli: Cli, owner: Pubkey, tmp_path: Path
) -> None:
    conforming_chain(rpc, owner)
    code, out, err = check(cli, owner, signed_policy(tmp_path, Ed25519PrivateKey.generate()))
    assert (code, out) == (2, "") and rpc.calls == []
    assert f"owner check-multisig: --policy: the signature does not verify against the owner key {owner}" in err


def test_a_policy_without_a_multisig_is_refused(
    rpc: Rpc, cli: Cli, owner: Pubkey, keypair: tuple[Path, Ed25519PrivateKey], tmp_path: Path
) -> None:
    code, out, err = check(cli, owner, signed_policy(tmp_path, keypair[1], squads_multisig=None))
    assert (code, out) == (2, "") and rpc.calls == []
    assert "--policy declares no Squads multisig (rules.squads_multisig)" in err


def test_a_multisig_that_does_not_exist_exits_1_with_a_failed_exists_check(
    rpc: Rpc, cli: Cli, owner: Pubkey, keypair: tuple[Path, Ed25519PrivateKey], tmp_path: Path
) -> None:
    code, out, err = check(cli, owner, signed_policy(tmp_path, keypair[1]))  # no multisig account on chain
    report = json.loads(out)
    assert (code, report["multisig"], report["conforms"]) == (1, str(MULTISIG), False)
    assert [(c["id"], c["seen"]) for c in report["checks"]] == [("multisig.exists", "no account at this address")]
    assert failed(err) == ["multisig.exists"] and "could not read the chain" not in err
    assert [c["method"] for c in rpc.calls] == ["getAccountInfo"]  # nothing else to compare
    cli.assert_no_secret(*SECRET)


def test_an_unreadable_chain_exits_1_and_says_so(
    rpc: Rpc, cli: Cli, owner: Pubkey, keypair: tuple[Path, Ed25519PrivateKey], tmp_path: Path
) -> None:
    rpc.install(MULTISIG, b"\x00" * 64, owner=Pubkey.default())  # an account there, but not a Squads multisig
    code, out, err = check(cli, owner, signed_policy(tmp_path, keypair[1]))
    assert (code, out) == (1, "")
    assert err == "owner check-multisig: could not read the chain: account is not owned by the Squads v4 program\n"
    cli.assert_no_secret(*SECRET)


def test_bad_input_exits_2(
    rpc: Rpc, cli: Cli, owner: Pubkey, keypair: tuple[Path, Ed25519PrivateKey], tmp_path: Path
) -> None:
    conforming_chain(rpc, owner)
    policy = str(signed_policy(tmp_path, keypair[1]))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    pin = ["--owner-public-key", str(owner), "check-multisig"]
    url_file = rpc_url_file(tmp_path)
    rpc_way = ["--rpc-url-file", url_file, "--policy", policy, "--agent-key", str(AGENT)]
    cases = [
        ([*pin, "--rpc-url-file", url_file, "--policy", policy, "--agent-key", "not-a-key"],
         "--agent-key is not a base58 public key"),
        ([*pin, *rpc_way, "--vault", "0x00"], "--vault is not a base58 public key"),
        ([*pin, *rpc_way, "--url", "http://127.0.0.1:8080"], "give exactly one of --url"),
        ([*pin, "--policy", policy, "--agent-key", str(AGENT)], "give exactly one of --url"),
        ([*pin, *rpc_way, "--wallet", "w1"], "--wallet goes with --url"),
        ([*pin, "--url", "http://127.0.0.1:8080", "--wallet", "w1", "--agent-key", str(AGENT)],
         "--agent-key go with --rpc-url"),
        ([*pin, "--url", "http://127.0.0.1:8080"], "--url needs --wallet"),
        ([*pin, "--rpc-url-file", url_file, "--agent-key", str(AGENT)], "--rpc-url needs --policy and --agent-key"),
        (["check-multisig", *rpc_way], "give the owner public key"),
        ([*pin, "--rpc-url", "file:///etc/passwd", "--policy", policy, "--agent-key", str(AGENT)],
         "--rpc-url must be an http"),
        ([*pin, "--rpc-url-file", url_file, "--policy", str(garbage), "--agent-key", str(AGENT)], "envelope"),
        ([*pin, "--rpc-url-file", url_file, "--policy", str(tmp_path / "missing.json"), "--agent-key", str(AGENT)],
         "missing.json"),
    ]  # fmt: skip
    for argv, message in cases:
        code, out, err = cli(*argv)
        assert (code, out) == (2, ""), argv
        assert err.startswith("owner check-multisig: ") and message in err, (argv, err)
    assert rpc.calls == []
    cli.assert_no_secret(*SECRET)
