"""``waiaas owner rotation-transaction | sign-rotation | sign-key-switch | cosign``: with a local owner keypair file
and with KMS (the test KMS on moto, STS role chain on moto), the RPC answered by selfhost.local_chain's JSON-RPC
methods over a real LiteSVM behind an httpx MockTransport. The orders are checked with policies.orders, the
transaction with policies.rotation, the signatures with solders."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from parent_proxy import owner_cli_common
from policies.model import DecodedTransaction
from policies.orders import AgentKeyOrder, check_rotation_order, check_switch_order
from policies.rotation import check_rotation_transaction
from policies.transaction import decode_transaction
from tests.proxy.hooked_client import record_signs
from tests.support.aws_env import use_test_credentials
from tests.support.owner_rotation_rpc import (
    RPC_URL,
    Cli,
    Rpc,
    agent_cosigns,
    built_rotation,
    message_hash_printed,
    message_of,
    multisig_account,
    rpc_url_file,
    secrets_of,
    unsigned,
    wallet,
)
from tests.support.policies import owner_public_key
from tests.support.squads_rotation import put_spending_limit, spending_limit_address


def config_actions(decoded: DecodedTransaction) -> tuple[Any, ...]:
    """The actions of the transaction's one ``config_transaction_create``: (name, fields) pairs."""
    (config,) = [ix for ix in decoded.instructions if ix.name == "config_transaction_create"]
    actions = config.args["actions"]
    assert isinstance(actions, tuple)
    return actions


# -- rotation-transaction --------------------------------------------------------------------------------------------


def test_rotation_transaction_replaces_the_spending_limits_naming_the_agent(
    rpc: Rpc, cli: Cli, keypair: tuple[Path, Ed25519PrivateKey]
) -> None:
    """Each spending limit of the multisig naming the old agent is removed and re-added for the new key (same
    vault, mint, amount, period, destinations); a limit not naming it, or of another multisig, is left alone."""
    _, key = keypair
    owner = owner_public_key(key)
    multisig, agent = wallet(rpc, owner, index=3)
    new_agent, merchant, mint = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    svm = rpc.backend.svm
    sol = put_spending_limit(svm, multisig, Pubkey.new_unique(), members=[agent.pubkey()], amount=5 * 10**8)
    token = put_spending_limit(svm, multisig, Pubkey.new_unique(), members=[agent.pubkey()], mint=mint,
                               amount=10**6, period=2, destinations=[merchant], vault_index=1)  # fmt: skip
    put_spending_limit(svm, multisig, Pubkey.new_unique(), members=[owner])
    put_spending_limit(svm, Pubkey.new_unique(), Pubkey.new_unique(), members=[agent.pubkey()])
    code, out, err = cli("--owner-public-key", str(owner), "rotation-transaction", "--rpc-url", RPC_URL,
                         "--multisig", str(multisig), "--new-agent-key", str(new_agent))  # fmt: skip
    assert code == 0, err
    decoded = decode_transaction(base64.b64decode(out.strip()))
    check_rotation_transaction(decoded, multisig=multisig, agent=agent.pubkey(), new_agent=new_agent)
    actions = list(config_actions(decoded))
    assert actions[:2] == [("add_member", {"key": new_agent, "permissions": 2}),
                           ("remove_member", {"old_member": agent.pubkey()})]  # fmt: skip
    removed = [fields["spending_limit"] for name, fields in actions if name == "remove_spending_limit"]
    added = [fields for name, fields in actions if name == "add_spending_limit"]
    assert sorted(removed, key=bytes) == sorted([sol, token], key=bytes) and len(added) == 2
    by_mint = {fields["mint"]: fields for fields in added}
    assert by_mint[Pubkey.default()]["members"] == (new_agent,) and by_mint[Pubkey.default()]["amount"] == 5 * 10**8
    assert by_mint[mint]["members"] == (new_agent,)
    assert (by_mint[mint]["amount"], by_mint[mint]["period"], by_mint[mint]["destinations"],
            by_mint[mint]["vault_index"]) == (10**6, "week", (merchant,), 1)  # fmt: skip
    # The execution carries each old limit and its replacement, writable: the program finds them by address.
    (execute,) = [ix for ix in decoded.instructions if ix.name == "config_transaction_execute"]
    replacements = {spending_limit_address(multisig, fields["create_key"])[0] for fields in added}
    extra = {meta.pubkey for meta in execute.accounts[6:] if meta.is_writable}
    assert extra == {sol, token} | replacements
    # The terms read from the chain are shown, each replaced limit's in full.
    assert f"add member {new_agent} (permissions 2: Vote)" in err
    assert f"remove member {agent.pubkey()}" in err
    assert (f"spending limit {sol} is closed and replaced by a limit with members [{new_agent}], vault 0, "
            "SOL (lamports), amount 500000000 per day, destinations ANY address") in err  # fmt: skip
    assert (f"spending limit {token} is closed and replaced by a limit with members [{new_agent}], vault 1, "
            f"mint {mint} (base units), amount 1000000 per week, destinations [{merchant}]") in err  # fmt: skip


def test_rotation_transaction_refuses_a_spending_limit_naming_the_agent_and_another_key(
    rpc: Rpc, cli: Cli, keypair: tuple[Path, Ed25519PrivateKey]
) -> None:
    """A limit naming the agent and another key (the owner, or a key an RPC made up) is not copied into the rotation:
    the command refuses and names the limit; nothing is printed on stdout. Named with --close-spending-limit, it is
    closed in the rotation without a replacement (the enclave votes for no other config transaction)."""
    path, key = keypair
    owner = owner_public_key(key)
    for other in (owner, Pubkey.new_unique()):
        multisig, agent = wallet(rpc, owner)
        own = put_spending_limit(rpc.backend.svm, multisig, Pubkey.new_unique(), members=[agent.pubkey()])
        shared = put_spending_limit(rpc.backend.svm, multisig, Pubkey.new_unique(), members=[agent.pubkey(), other])
        new_agent = Pubkey.new_unique()
        build = ["--owner-public-key", str(owner), "rotation-transaction", "--rpc-url", RPC_URL, "--multisig",
                 str(multisig), "--new-agent-key", str(new_agent)]  # fmt: skip
        code, out, err = cli(*build)
        assert (code, out) == (2, ""), err
        assert f"spending limit {shared} names [" in err and str(other) in err
        assert "a rotation moves only the agent's own limits" in err and f"--close-spending-limit {shared}" in err
        # Closed instead: its removal alone; the agent's own limit is still replaced.
        code, out, err = cli(*build, "--close-spending-limit", str(shared))
        assert code == 0, err
        assert f"spending limit {shared} is closed, without a replacement" in err
        decoded = decode_transaction(base64.b64decode(out.strip()))
        check_rotation_transaction(decoded, multisig=multisig, agent=agent.pubkey(), new_agent=new_agent)
        assert [(name, fields.get("spending_limit")) for name, fields in config_actions(decoded)[2:]] == [
            ("remove_spending_limit", own),
            ("add_spending_limit", None),
            ("remove_spending_limit", shared),
        ]
        (execute,) = [ix for ix in decoded.instructions if ix.name == "config_transaction_execute"]
        assert execute.accounts[-1].pubkey == shared and execute.accounts[-1].is_writable
        code, _, err = cli("--keypair", str(path), "sign-rotation", "--wallet-id", "w1", "--transaction", out.strip(),
                           "--agent-key", str(agent.pubkey()), "--new-agent-key", str(new_agent))  # fmt: skip
        assert code == 0 and f"spending limit {shared} is closed, without a replacement" in err
        code, _, err = cli("--keypair", str(path), "cosign", "--transaction", agent_cosigns(out.strip(), agent),
                           "--message-hash", message_hash_printed(err))  # fmt: skip
        assert code == 0, err
    # Only a limit naming the agent can be closed this way.
    code, out, err = cli(*build, "--close-spending-limit", str(Pubkey.new_unique()))
    assert (code, out) == (2, "") and f"not a spending limit of the multisig naming {agent.pubkey()}" in err


def test_rotation_transaction_refuses_more_spending_limits_than_fit(
    rpc: Rpc, cli: Cli, keypair: tuple[Path, Ed25519PrivateKey]
) -> None:
    _, key = keypair
    owner = owner_public_key(key)
    multisig, agent = wallet(rpc, owner)
    for _ in range(4):
        put_spending_limit(rpc.backend.svm, multisig, Pubkey.new_unique(), members=[agent.pubkey()])
    code, out, err = cli("--owner-public-key", str(owner), "rotation-transaction", "--rpc-url", RPC_URL,
                         "--multisig", str(multisig), "--new-agent-key", str(Pubkey.new_unique()))  # fmt: skip
    assert (code, out) == (2, "") and "4 spending limits replaced, 0 closed) is larger than a Solana packet" in err, err


def test_rotation_transaction_reads_the_multisig_and_builds_the_next_index(
    rpc: Rpc, cli: Cli, keypair: tuple[Path, Ed25519PrivateKey]
) -> None:
    path, key = keypair
    owner = owner_public_key(key)
    multisig, agent = wallet(rpc, owner, index=11)
    new_agent = Pubkey.new_unique()
    code, out, err = cli("--owner-public-key", str(owner), "rotation-transaction", "--rpc-url", RPC_URL,
                         "--multisig", str(multisig), "--new-agent-key", str(new_agent))  # fmt: skip
    assert code == 0, err
    tx = unsigned(out.strip())
    assert list(tx.signatures) == [Signature.default()] * 2
    assert str(tx.message.recent_blockhash) == str(rpc.backend.svm.latest_blockhash())
    decoded = decode_transaction(bytes(tx))
    check_rotation_transaction(decoded, multisig=multisig, agent=agent.pubkey(), new_agent=new_agent)
    (proposal,) = [ix for ix in decoded.instructions if ix.name == "proposal_create"]
    assert proposal.args["transaction_index"] == 12  # the multisig's index + 1
    assert decoded.fee_payer == owner
    assert [c["method"] for c in rpc.calls] == ["getAccountInfo", "getProgramAccounts", "getLatestBlockhash"]
    assert rpc.calls[0]["params"][0] == str(multisig)
    assert [name for name, _ in config_actions(decoded)] == ["add_member", "remove_member"]  # no spending limit
    assert "config transaction 12" in err and "rpc-secret-token" not in out + err
    # The same with the owner key itself (its public key is all it takes), the agent named, a priority fee.
    code, out, err = cli("--keypair", str(path), "rotation-transaction", "--rpc-url", RPC_URL, "--multisig",
                         str(multisig), "--new-agent-key", str(new_agent), "--agent-key", str(agent.pubkey()),
                         "--permissions", "3", "--compute-unit-price", "1000")  # fmt: skip
    assert code == 0, err
    decoded = decode_transaction(base64.b64decode(out.strip()))
    assert decoded.instructions[0].name == "set_compute_unit_price" and decoded.fee_payer == owner
    assert config_actions(decoded)[0][1]["permissions"] == 3
    cli.assert_no_secret(*secrets_of(key), "rpc-secret-token")


def test_rotation_transaction_refusals(rpc: Rpc, cli: Cli, tmp_path: Path) -> None:
    owner = Pubkey.new_unique()
    multisig, agent = wallet(rpc, owner)
    url_file = rpc_url_file(tmp_path)
    base = ["rotation-transaction", "--rpc-url-file", url_file, "--multisig", str(multisig)]
    pin = ["--owner-public-key", str(owner)]
    missing = Pubkey.new_unique()  # no account there: the chain's answer, bad input (exit 1 before, like a failed read)
    cases: list[tuple[list[str], int, str]] = [
        ([*pin, *base, "--new-agent-key", str(agent.pubkey())], 2, "new agent key is already a member"),
        ([*pin, *base, "--new-agent-key", str(owner)], 2, "new agent key is already a member"),
        (["--owner-public-key", str(Pubkey.new_unique()), *base, "--new-agent-key", str(Pubkey.new_unique())], 2,
         "name the agent key to replace"),
        ([*pin, *base, "--new-agent-key", str(Pubkey.new_unique()), "--agent-key", str(Pubkey.new_unique())], 2,
         "agent key is not a member"),
        ([*pin, *base, "--new-agent-key", str(Pubkey.new_unique()), "--permissions", "8"], 2, "permissions"),
        ([*pin, *base, "--new-agent-key", str(Pubkey.new_unique()), "--permissions", "1"], 2, "with Vote"),
        ([*pin, *base, "--new-agent-key", "nope"], 2, "--new-agent-key is not a base58 public key"),
        ([*base, "--new-agent-key", str(Pubkey.new_unique())], 2, "give the owner public key"),
        ([*pin, "rotation-transaction", "--rpc-url", "file:///etc/passwd", "--multisig", str(multisig),
          "--new-agent-key", str(Pubkey.new_unique())], 2, "--rpc-url must be an http"),
        ([*pin, "rotation-transaction", "--rpc-url-file", url_file, "--multisig", str(missing),
          "--new-agent-key", str(Pubkey.new_unique())], 2, f"the multisig {missing} does not exist on chain"),
    ]  # fmt: skip
    for argv, exit_code, message in cases:
        code, out, err = cli(*argv)
        assert (code, out) == (exit_code, ""), err
        assert message in err and err.startswith("owner rotation-transaction: ")
    # A time-locked or 1-of-2 multisig cannot execute the rotation in one transaction.
    for kwargs, message in (({"time_lock": 60}, "time lock of 60 s"), ({"threshold": 1}, "threshold is 1")):
        locked, _ = wallet(rpc, owner, **kwargs)
        code, out, err = cli(*pin, "rotation-transaction", "--rpc-url", RPC_URL, "--multisig", str(locked),
                             "--new-agent-key", str(Pubkey.new_unique()))  # fmt: skip
        assert (code, out) == (2, "") and message in err
    # An account of another program at the address.
    address, data = multisig_account([(owner, 7), (Pubkey.new_unique(), 7)])
    rpc.install(address, data, owner=Pubkey.new_unique())
    code, out, err = cli(*pin, "rotation-transaction", "--rpc-url", RPC_URL, "--multisig", str(address),
                         "--new-agent-key", str(Pubkey.new_unique()))  # fmt: skip
    assert (code, out) == (1, "") and "not owned by the Squads v4 program" in err
    cli.assert_no_secret("rpc-secret-token")


def test_plain_http_rpc_is_refused_unless_loopback(rpc: Rpc, cli: Cli) -> None:
    """What the RPC answers decides what the owner builds and signs (a rotation copies the spending limits it reads):
    plain http that leaves the machine could be rewritten on the way, so only https, or http to a loopback host."""
    owner = Pubkey.new_unique()
    multisig, _ = wallet(rpc, owner)
    pin = ["--owner-public-key", str(owner)]
    for url in ("http://rpc.example.com/?api-key=rpc-secret-token", "http://10.0.0.5:8899", "http://0.0.0.0:8899",
                "http://127.0.0.1.example.com:8899", "http://localhost.example.com", "http://user@127.0.0.1@evil.test/",
                "http://[::1"):  # fmt: skip
        build = ["rotation-transaction", "--rpc-url", url, "--multisig", str(multisig), "--new-agent-key",
                 str(Pubkey.new_unique())]  # fmt: skip
        advance = ["advance-nonce-transaction", "--rpc-url", url, "--nonce-account", str(Pubkey.new_unique())]
        for argv in (build, advance):
            code, out, err = cli(*pin, *argv)
            assert (code, out) == (2, ""), (url, err)
            assert "--rpc-url must be https (plain http only to localhost, 127.0.0.1 or ::1)" in err
    assert rpc.calls == []
    for url in ("http://127.0.0.1:8899", "http://localhost:8899", "http://[::1]:8899", "http://127.0.0.2:8899",
                RPC_URL):  # fmt: skip
        code, out, err = cli(*pin, "rotation-transaction", "--rpc-url", url, "--multisig", str(multisig),
                             "--new-agent-key", str(Pubkey.new_unique()))  # fmt: skip
        assert code == 0 and out, (url, err)
        assert rpc.urls[-1].startswith(url.split("?")[0])
    cli.assert_no_secret("rpc-secret-token")


def test_rotation_transaction_rpc_failure_exits_1_without_the_url(monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(
        owner_cli_common, "new_rpc_client", lambda: httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    )
    code, out, err = cli("--owner-public-key", str(Pubkey.new_unique()), "rotation-transaction", "--rpc-url",
                         RPC_URL, "--multisig", str(Pubkey.new_unique()), "--new-agent-key",
                         str(Pubkey.new_unique()))  # fmt: skip
    assert (code, out) == (1, "") and "RPC getAccountInfo failed: ConnectError" in err
    cli.assert_no_secret("rpc-secret-token", "rpc.invalid")


# -- the whole flow with a keypair file ------------------------------------------------------------------------------


def test_flow_rotation_order_enclave_cosign_owner_cosign(
    rpc: Rpc, cli: Cli, keypair: tuple[Path, Ed25519PrivateKey]
) -> None:
    path, key = keypair
    owner = owner_public_key(key)
    multisig, agent = wallet(rpc, owner)
    new_agent = Pubkey.new_unique()
    raw_b64 = built_rotation(cli, owner, multisig, new_agent)
    message = message_of(unsigned(raw_b64))
    digest = hashlib.sha256(message).digest()

    # 1. The rotation order binds the message; the proxy's and the enclave's check accepts it.
    before = int(time.time())
    code, order, err = cli("--keypair", str(path), "sign-rotation", "--wallet-id", "w1", "--transaction", raw_b64,
                           "--agent-key", str(agent.pubkey()), "--new-agent-key", str(new_agent), "--multisig",
                           str(multisig), "--expires-in", "300")  # fmt: skip
    assert code == 0, err
    verified = check_rotation_order(order.encode(), owner=owner, wallet_id="w1", message_hash=digest, now=time.time())
    assert verified == AgentKeyOrder(agent.pubkey(), new_agent)
    assert before + 300 <= json.loads(order)["document"]["expires_at"] <= int(time.time()) + 300
    assert digest.hex() in err and str(multisig) in err and f"--message-hash {digest.hex()}" in err
    with pytest.raises(Exception, match="another message"):
        check_rotation_order(order.encode(), owner=owner, wallet_id="w1", message_hash=bytes(32), now=time.time())

    # 2. The enclave co-signs as the old agent; 3. the owner adds their signature, pinned to the order's message.
    cosigned = agent_cosigns(raw_b64, agent)
    code, out, err = cli("--keypair", str(path), "cosign", "--transaction", cosigned, "--message-hash", digest.hex())
    assert code == 0, err
    assert f"owner: signing: agent-key rotation in multisig {multisig}, config transaction 12" in err
    assert f"owner: signing: add member {new_agent} (permissions 2" in err
    assert f"owner: signing: fee payer {owner}, priority fee 0" in err
    signed = unsigned(out.strip())
    assert message_of(signed) == message
    assert signed.signatures[0].verify(owner, message) and signed.signatures[1].verify(agent.pubkey(), message)
    assert signed.verify_with_results() == [True, True]
    assert signed.signatures[0] == Signature.from_bytes(key.sign(message))

    # The order does not matter: the owner first, then the enclave.
    code, out, _ = cli("--keypair", str(path), "cosign", "--transaction", raw_b64, "--message-hash", digest.hex())
    assert code == 0
    owner_first = unsigned(out.strip())
    assert owner_first.signatures[0] == signed.signatures[0] and owner_first.signatures[1] == Signature.default()
    assert unsigned(agent_cosigns(out.strip(), agent)).verify_with_results() == [True, True]

    # 4. The switch order, once the rotation landed.
    code, out, err = cli("--keypair", str(path), "sign-key-switch", "--wallet-id", "w1", "--agent-key",
                         str(agent.pubkey()), "--new-agent-key", str(new_agent))  # fmt: skip
    assert code == 0, err
    assert check_switch_order(out.encode(), owner=owner, wallet_id="w1", now=time.time()) == AgentKeyOrder(
        agent.pubkey(), new_agent
    )
    with pytest.raises(Exception, match="another wallet"):
        check_switch_order(out.encode(), owner=owner, wallet_id="w2", now=time.time())
    cli.assert_no_secret(*secrets_of(key), "rpc-secret-token")


def test_sign_rotation_refuses_what_is_not_this_rotation(
    rpc: Rpc, cli: Cli, keypair: tuple[Path, Ed25519PrivateKey]
) -> None:
    path, key = keypair
    owner = owner_public_key(key)
    multisig, agent = wallet(rpc, owner)
    new_agent = Pubkey.new_unique()
    raw_b64 = built_rotation(cli, owner, multisig, new_agent)
    base = ["--keypair", str(path), "sign-rotation", "--wallet-id", "w1"]
    transfer_ix = transfer(TransferParams(from_pubkey=owner, to_pubkey=agent.pubkey(), lamports=5))
    other = VersionedTransaction.populate(Message.new_with_blockhash([transfer_ix], owner, Hash.new_unique()),
                                          [Signature.default()])  # fmt: skip
    other_b64 = base64.b64encode(bytes(other)).decode()
    trailing = base64.b64encode(base64.b64decode(raw_b64) + bytes(3)).decode()
    cases: list[tuple[list[str], str]] = [
        (["--transaction", raw_b64, "--agent-key", str(agent.pubkey()), "--new-agent-key", str(Pubkey.new_unique())],
         "add_member adds"),
        (["--transaction", raw_b64, "--agent-key", str(owner), "--new-agent-key", str(new_agent)],
         "rotation transaction refused"),
        (["--transaction", raw_b64, "--agent-key", str(agent.pubkey()), "--new-agent-key", str(new_agent),
          "--multisig", str(Pubkey.new_unique())], "on another multisig"),
        (["--transaction", other_b64, "--agent-key", str(agent.pubkey()), "--new-agent-key", str(new_agent)],
         "creates no Squads config transaction"),
        (["--transaction", other_b64, "--agent-key", str(agent.pubkey()), "--new-agent-key", str(new_agent),
          "--multisig", str(multisig)], "rotation transaction refused"),
        (["--transaction", "not base64!", "--agent-key", str(agent.pubkey()), "--new-agent-key", str(new_agent)],
         "not a base64 Solana transaction"),
        (["--transaction", trailing, "--agent-key", str(agent.pubkey()), "--new-agent-key", str(new_agent)],
         "trailing bytes"),
        (["--transaction", "A" * 2000, "--agent-key", str(agent.pubkey()), "--new-agent-key", str(new_agent)],
         "longer than a 1232-byte transaction"),
        (["--transaction", raw_b64, "--agent-key", str(agent.pubkey()), "--new-agent-key", str(new_agent),
          "--expires-in", "3601"], "--expires-in must be 1-3600"),
    ]  # fmt: skip
    for argv, message in cases:
        code, out, err = cli(*base, *argv)
        assert (code, out) == (2, ""), err
        assert message in err and err.startswith("owner sign-rotation: ")
    code, out, err = cli("--keypair", str(path), "sign-key-switch", "--wallet-id", "w1", "--agent-key",
                         str(new_agent), "--new-agent-key", str(new_agent))  # fmt: skip
    assert (code, out) == (2, "") and "--new-agent-key is the agent key" in err
    cli.assert_no_secret(*secrets_of(key))


def test_cosign_refusals(rpc: Rpc, cli: Cli, keypair: tuple[Path, Ed25519PrivateKey]) -> None:
    path, key = keypair
    owner = owner_public_key(key)
    multisig, agent = wallet(rpc, owner)
    raw_b64 = built_rotation(cli, owner, multisig, Pubkey.new_unique())
    digest = hashlib.sha256(message_of(unsigned(raw_b64))).hexdigest()
    # No --message-hash: the owner names the message they checked, or nothing is signed.
    code, out, err = cli("--keypair", str(path), "cosign", "--transaction", raw_b64)
    assert (code, out) == (2, "") and "--message-hash is required" in err
    # A transaction the owner does not sign (its own hash given): not a shape the owner commands build.
    stranger = Keypair()
    transfer_ix = transfer(TransferParams(from_pubkey=stranger.pubkey(), to_pubkey=owner, lamports=5))
    foreign = VersionedTransaction.populate(
        Message.new_with_blockhash([transfer_ix], stranger.pubkey(), Hash.new_unique()), [Signature.default()]
    )
    code, out, err = cli("--keypair", str(path), "cosign", "--transaction", base64.b64encode(bytes(foreign)).decode(),
                         "--message-hash", hashlib.sha256(message_of(foreign)).hexdigest())  # fmt: skip
    assert (code, out) == (2, "") and "neither an agent-key rotation nor a nonce advance" in err
    # A rotation built for another owner key.
    other_owner = Pubkey.new_unique()
    other_multisig, _ = wallet(rpc, other_owner)
    built = built_rotation(cli, other_owner, other_multisig, Pubkey.new_unique())
    other_digest = hashlib.sha256(message_of(unsigned(built))).hexdigest()
    code, out, err = cli("--keypair", str(path), "cosign", "--transaction", built, "--message-hash",
                         other_digest)  # fmt: skip
    assert (code, out) == (2, "") and f"built for the owner key {other_owner}, not {owner}" in err
    # A signature already present that does not verify (the agent's slot holds garbage).
    tx = unsigned(raw_b64)
    bad = VersionedTransaction.populate(tx.message, [Signature.default(), Signature.from_bytes(bytes(range(64)))])
    code, out, err = cli("--keypair", str(path), "cosign", "--transaction", base64.b64encode(bytes(bad)).decode(),
                         "--message-hash", digest)  # fmt: skip
    assert (code, out) == (2, "") and f"the signature of {agent.pubkey()} in the transaction does not verify" in err
    # Another message than the order's.
    code, out, err = cli("--keypair", str(path), "cosign", "--transaction", raw_b64, "--message-hash", "00" * 32)
    assert (code, out) == (2, "") and "not the one --message-hash names" in err
    code, out, err = cli("--keypair", str(path), "cosign", "--transaction", raw_b64, "--message-hash", "xyz")
    assert (code, out) == (2, "") and "--message-hash is not hex" in err
    code, out, err = cli("cosign", "--transaction", raw_b64, "--message-hash", digest)
    assert (code, out) == (2, "") and "exactly one of --keypair or --kms-key-id" in err
    cli.assert_no_secret(*secrets_of(key))


# -- KMS -------------------------------------------------------------------------------------------------------------

CALLER = "arn:aws:sts::123456789012:assumed-role/waiaas-owner-signer/waiaas-owner"
SIGN_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": CALLER}, "Action": "kms:Sign",
     "Resource": "*", "Condition": {"StringEquals": {"kms:SigningAlgorithm": "ED25519_SHA_512",
                                                      "kms:MessageType": "RAW"}}},
    {"Effect": "Allow", "Principal": {"AWS": CALLER}, "Action": "kms:GetPublicKey", "Resource": "*"},
]})  # fmt: skip


@pytest.fixture
def kms_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
    """The owner options for a KMS key behind the test KMS and moto's STS, and the record of kms:Sign calls."""
    use_test_credentials(monkeypatch)
    import boto3
    from moto import mock_aws

    from parent_proxy import owner_cli_common
    from tests.fakes.attesting_kms import AttestingTestKms

    with mock_aws():
        client = AttestingTestKms(root_certificate_pem=b"", clock=lambda: datetime.now(UTC), caller_arn=CALLER)
        key_arn = client.create_key(Policy=SIGN_POLICY, KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")[
            "KeyMetadata"
        ]["Arn"]
        signed = record_signs(client)

        def factory(region: str) -> Any:
            return lambda service, credentials: (
                boto3.client("sts", region_name="us-east-1") if service == "sts" else client
            )

        monkeypatch.setattr(owner_cli_common, "boto3_factory", factory)
        roles = ["--role-arn", "arn:aws:iam::123456789012:role/waiaas-owner-signer"]
        code_file = tmp_path / "mfa-code"
        code_file.write_text("123456\n")
        code_file.chmod(0o600)
        yield ["--kms-key-id", key_arn, *roles, "--mfa-serial", "arn:aws:iam::123456789012:mfa/a", "--mfa-code-file",
               str(code_file), "--source-identity", "alice"], signed  # fmt: skip


def test_kms_signs_the_rotation_order_the_switch_order_and_the_transaction(
    rpc: Rpc, cli: Cli, kms_cli: tuple[list[str], list[dict[str, Any]]]
) -> None:
    options, signed = kms_cli
    code, out, _ = cli(*options, "pubkey")
    assert code == 0
    owner = Pubkey.from_string(out.split()[0])
    multisig, agent = wallet(rpc, owner)
    new_agent = Pubkey.new_unique()
    # rotation-transaction with the KMS key: its public key only, nothing signed.
    code, built, err = cli(*options, "rotation-transaction", "--rpc-url", RPC_URL, "--multisig", str(multisig),
                           "--new-agent-key", str(new_agent))  # fmt: skip
    assert code == 0, err
    assert signed == []
    raw_b64 = built.strip()
    message = message_of(unsigned(raw_b64))
    digest = hashlib.sha256(message).digest()

    code, order, err = cli(*options, "sign-rotation", "--wallet-id", "w1", "--transaction", raw_b64, "--agent-key",
                           str(agent.pubkey()), "--new-agent-key", str(new_agent))  # fmt: skip
    assert code == 0, err
    assert check_rotation_order(order.encode(), owner=owner, wallet_id="w1", message_hash=digest,
                                now=time.time()) == AgentKeyOrder(agent.pubkey(), new_agent)  # fmt: skip
    code, out, err = cli(*options, "sign-key-switch", "--wallet-id", "w1", "--agent-key", str(agent.pubkey()),
                         "--new-agent-key", str(new_agent))  # fmt: skip
    assert code == 0, err
    assert check_switch_order(out.encode(), owner=owner, wallet_id="w1", now=time.time()).new_agent == new_agent
    assert len(signed) == 2

    # cosign: kms:Sign over the raw message bytes, pure Ed25519.
    code, out, err = cli(*options, "cosign", "--transaction", agent_cosigns(raw_b64, agent), "--message-hash",
                         digest.hex())  # fmt: skip
    assert code == 0, err
    assert signed[-1]["Message"] == message
    assert (signed[-1]["MessageType"], signed[-1]["SigningAlgorithm"]) == ("RAW", "ED25519_SHA_512")
    assert unsigned(out.strip()).verify_with_results() == [True, True]
    # A transaction the KMS owner does not sign is refused before kms:Sign.
    other = VersionedTransaction.populate(
        Message.new_with_blockhash(
            [transfer(TransferParams(from_pubkey=agent.pubkey(), to_pubkey=owner, lamports=1))],
            agent.pubkey(), Hash.new_unique(),
        ),
        [Signature.default()],
    )  # fmt: skip
    count = len(signed)
    code, out, err = cli(*options, "cosign", "--transaction", base64.b64encode(bytes(other)).decode(),
                         "--message-hash", hashlib.sha256(message_of(other)).hexdigest())  # fmt: skip
    assert (code, out) == (2, "") and "neither an agent-key rotation" in err and len(signed) == count
