"""Durable-nonce rotation transactions: the nonce account reader (`parent_proxy.nonce_account`) on accounts the
System program made in LiteSVM, both chain adapters, the builder (`parent_proxy.rotation_transaction`), the nonce
semantics executed on LiteSVM, and ``waiaas owner rotation-transaction --nonce-account`` /
``advance-nonce-transaction`` over selfhost.local_chain's JSON-RPC."""

from __future__ import annotations

import asyncio
import base64
import struct
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.account import Account
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata

from parent_proxy.chain import ChainError, LiteSvmChain, RpcChain
from parent_proxy.nonce_account import NonceAccount, NonceAccountError, parse_nonce_account
from parent_proxy.owner_signers import write_keypair_file
from parent_proxy.rotation_transaction import (
    RotationBuildError,
    SpendingLimitReplacement,
    advance_nonce_instruction,
    build_rotation_transaction,
)
from parent_proxy.squads_spending_limit_account import parse_spending_limit_account
from policies import programs
from policies.rotation import check_rotation_transaction
from policies.transaction import MAX_TRANSACTION_BYTES, decode_transaction
from selfhost import local_chain
from tests.support.builders import is_writable
from tests.support.owner_rotation_rpc import (
    RPC_URL,
    Cli,
    Rpc,
    agent_cosigns,
    make_nonce,
    message_hash_printed,
    read_nonce,
    wallet,
)
from tests.support.squads_encoder import PROGRAM_ID
from tests.support.squads_rotation import spending_limit_account_data, spending_limit_address


def expire(svm: LiteSVM) -> None:
    """Move on far past the 150 blockhashes a recent blockhash stays valid for."""
    for _ in range(160):
        svm.expire_blockhash()


# -- the account reader ----------------------------------------------------------------------------------------------


def test_a_nonce_account_the_system_program_made_is_read() -> None:
    svm, authority = LiteSVM(), Pubkey.new_unique()
    address = make_nonce(svm, authority)
    nonce = read_nonce(svm, address)
    assert (nonce.address, nonce.authority) == (address, authority)
    assert nonce.durable_nonce != svm.latest_blockhash()  # a durable nonce is derived from, not equal to, a blockhash
    assert nonce.lamports_per_signature == 5000


def _data(version: int = 1, state: int = 1) -> bytes:
    return struct.pack("<II", version, state) + bytes(Pubkey.new_unique()) + bytes(32) + struct.pack("<Q", 5000)


@pytest.mark.parametrize(
    ("owner", "data", "message"),
    [
        (PROGRAM_ID, _data(), "not owned by the System program"),
        (programs.SYSTEM_PROGRAM, _data()[:-1], "holds 79 bytes, not 80"),
        (programs.SYSTEM_PROGRAM, _data() + b"\0", "holds 81 bytes, not 80"),
        (programs.SYSTEM_PROGRAM, b"", "holds 0 bytes"),
        (programs.SYSTEM_PROGRAM, _data(version=0), "legacy nonce account: upgrade it first"),
        (programs.SYSTEM_PROGRAM, _data(version=2), "unknown nonce account version 2"),
        (programs.SYSTEM_PROGRAM, _data(state=0), "not initialized"),
        (programs.SYSTEM_PROGRAM, _data(state=2), "unknown nonce account state 2"),
    ],
)
def test_what_is_not_a_usable_nonce_account_is_refused(owner: Pubkey, data: bytes, message: str) -> None:
    with pytest.raises(NonceAccountError, match=message):
        parse_nonce_account(Pubkey.new_unique(), owner, data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100), st.booleans())
def test_property_any_bytes_are_read_or_refused(data: bytes, system_owned: bool) -> None:
    owner = programs.SYSTEM_PROGRAM if system_owned else PROGRAM_ID
    try:
        nonce = parse_nonce_account(Pubkey.new_unique(), owner, data)
    except NonceAccountError:
        return
    assert system_owned and len(data) == 80 and data[:8] == struct.pack("<II", 1, 1)
    assert bytes(nonce.authority) == data[8:40] and bytes(nonce.durable_nonce) == data[40:72]


# -- both chain adapters ---------------------------------------------------------------------------------------------


def rpc_chain(backend: local_chain.LocalChain) -> RpcChain:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=local_chain.handle_body(backend, request.content))

    return RpcChain(httpx.AsyncClient(transport=httpx.MockTransport(handle)), "https://rpc.invalid/")


@pytest.mark.parametrize("adapter", ["litesvm", "rpc"])
def test_both_adapters_read_the_nonce_and_refuse_what_is_not_one(adapter: str) -> None:
    backend = local_chain.LocalChain()
    svm = backend.svm
    chain = LiteSvmChain(svm) if adapter == "litesvm" else rpc_chain(backend)
    authority = Pubkey.new_unique()
    address = make_nonce(svm, authority)
    assert asyncio.run(chain.nonce_account(address)) == read_nonce(svm, address)
    with pytest.raises(ChainError, match="nonce account not found"):
        asyncio.run(chain.nonce_account(Pubkey.new_unique()))
    other = Pubkey.new_unique()
    svm.set_account(other, Account(10**9, _data(), PROGRAM_ID, False, 0))
    with pytest.raises(ChainError, match="not owned by the System program"):
        asyncio.run(chain.nonce_account(other))


# -- the builder -----------------------------------------------------------------------------------------------------


def keys() -> tuple[Pubkey, Pubkey, Pubkey, Pubkey]:
    create_key = Pubkey.new_unique()
    multisig = Pubkey.find_program_address([b"multisig", b"multisig", bytes(create_key)], PROGRAM_ID)[0]
    return multisig, Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()


def nonce_of(authority: Pubkey, address: Pubkey | None = None) -> NonceAccount:
    return NonceAccount(address or Pubkey.new_unique(), authority, Hash.new_unique(), 5000)


def test_the_durable_rotation_starts_with_the_advance_and_carries_the_nonce() -> None:
    multisig, owner, agent, new_agent = keys()
    nonce = nonce_of(owner)
    raw = build_rotation_transaction(multisig=multisig, transaction_index=4, owner=owner, agent=agent,
                                     new_agent=new_agent, nonce=nonce, compute_unit_price=10)  # fmt: skip
    tx = VersionedTransaction.from_bytes(raw)
    message = tx.message
    assert message.recent_blockhash == nonce.durable_nonce
    assert message.account_keys[: message.header.num_required_signatures] == [owner, agent]  # no third signer
    first = message.instructions[0]
    keys_of_first = [message.account_keys[i] for i in bytes(first.accounts)]
    assert message.account_keys[first.program_id_index] == programs.SYSTEM_PROGRAM
    assert keys_of_first == [nonce.address, programs.SYSVAR_RECENT_BLOCKHASHES, owner]
    assert bytes(first.data) == struct.pack("<I", 4)  # SystemInstruction::AdvanceNonceAccount
    decoded = decode_transaction(raw)
    assert [ix.name for ix in decoded.instructions][:2] == ["advance_nonce_account", "set_compute_unit_price"]
    check_rotation_transaction(decoded, multisig=multisig, agent=agent, new_agent=new_agent)
    # The same rotation with a recent blockhash differs only by that instruction and the blockhash.
    plain = build_rotation_transaction(multisig=multisig, transaction_index=4, owner=owner, agent=agent,
                                       new_agent=new_agent, recent_blockhash=nonce.durable_nonce,
                                       compute_unit_price=10)  # fmt: skip
    assert [ix.name for ix in decode_transaction(plain).instructions] == [ix.name for ix in decoded.instructions[1:]]


def test_two_spending_limit_replacements_still_fit_with_a_nonce() -> None:
    multisig, owner, agent, new_agent = keys()
    limits = []
    for _ in range(2):
        create = Pubkey.new_unique()
        data = spending_limit_account_data(multisig, create, members=[agent], mint=Pubkey.new_unique(),
                                           destinations=[Pubkey.new_unique()])  # fmt: skip
        old = parse_spending_limit_account(spending_limit_address(multisig, create)[0], PROGRAM_ID, data)
        limits.append(SpendingLimitReplacement(old, Pubkey.new_unique()))
    raw = build_rotation_transaction(multisig=multisig, transaction_index=4, owner=owner, agent=agent,
                                     new_agent=new_agent, nonce=nonce_of(owner), compute_unit_price=10,
                                     spending_limits=limits)  # fmt: skip
    assert len(raw) <= MAX_TRANSACTION_BYTES
    check_rotation_transaction(decode_transaction(raw), multisig=multisig, agent=agent, new_agent=new_agent)


def test_builder_refusals() -> None:
    multisig, owner, agent, new_agent = keys()
    base = {"multisig": multisig, "transaction_index": 4, "owner": owner, "agent": agent, "new_agent": new_agent}
    with pytest.raises(RotationBuildError, match=r"give a recent blockhash or a durable nonce$"):
        build_rotation_transaction(**base)  # type: ignore[arg-type]
    with pytest.raises(RotationBuildError, match="not both"):
        build_rotation_transaction(**base, recent_blockhash=Hash.new_unique(), nonce=nonce_of(owner))  # type: ignore[arg-type]
    for authority in (agent, new_agent, Pubkey.new_unique()):
        with pytest.raises(RotationBuildError, match=f"authority is {authority}, not the owner key"):
            build_rotation_transaction(**base, nonce=nonce_of(authority))  # type: ignore[arg-type]
    for address in (owner, agent):
        with pytest.raises(RotationBuildError, match="the nonce account is the owner or the agent key"):
            build_rotation_transaction(**base, nonce=nonce_of(owner, address))  # type: ignore[arg-type]


# -- what the runtime does with it -----------------------------------------------------------------------------------


def durable_payment(svm: LiteSVM, first: Instruction, payer: Keypair, value: Hash) -> VersionedTransaction:
    pay = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=Pubkey.new_unique(), lamports=10**6))
    return VersionedTransaction(Message.new_with_blockhash([first, pay], payer.pubkey(), value), [payer])


def test_the_builders_advance_makes_a_transaction_durable_on_chain() -> None:
    """The Squads program is not available offline, so the builder's first instruction and blockhash are executed
    with a transfer in place of the rotation: it lands long after a recent blockhash would have expired, advances
    the nonce, and cannot land twice; a transaction on a stale nonce value is refused."""
    svm, owner = LiteSVM(), Keypair()
    svm.airdrop(owner.pubkey(), 10**10)
    address = make_nonce(svm, owner.pubkey())
    nonce = read_nonce(svm, address)
    multisig, _, agent, new_agent = keys()
    raw = build_rotation_transaction(multisig=multisig, transaction_index=4, owner=owner.pubkey(), agent=agent,
                                     new_agent=new_agent, nonce=nonce)  # fmt: skip
    message = VersionedTransaction.from_bytes(raw).message
    assert isinstance(message, Message)  # a legacy message, as `is_writable` reads it
    first, advance = message.instructions[0], advance_nonce_instruction(address, owner.pubkey())
    assert message.account_keys[first.program_id_index] == advance.program_id
    assert [message.account_keys[i] for i in bytes(first.accounts)] == [a.pubkey for a in advance.accounts]
    assert bytes(first.data) == bytes(advance.data)
    assert [is_writable(message, i) for i in bytes(first.accounts)][:2] == [True, False]  # the nonce, the sysvar
    expire(svm)
    tx = durable_payment(svm, advance, owner, message.recent_blockhash)
    assert isinstance(svm.send_transaction(tx), TransactionMetadata)
    assert read_nonce(svm, address).durable_nonce != nonce.durable_nonce  # advanced
    svm.expire_blockhash()
    assert isinstance(svm.send_transaction(tx), FailedTransactionMetadata)  # its value is spent
    # Without the advance first, the nonce value is no blockhash at all.
    pay = transfer(TransferParams(from_pubkey=owner.pubkey(), to_pubkey=Pubkey.new_unique(), lamports=10**6))
    value = read_nonce(svm, address).durable_nonce
    stray = VersionedTransaction(Message.new_with_blockhash([pay, advance], owner.pubkey(), value), [owner])
    assert isinstance(svm.send_transaction(stray), FailedTransactionMetadata)


# -- the owner commands ----------------------------------------------------------------------------------------------


@pytest.fixture
def owner_keypair(tmp_path: Path) -> tuple[Path, Keypair]:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "owner.json"
    write_keypair_file(path, key)
    return path, Keypair.from_seed(key.private_bytes_raw())


def test_rotation_transaction_with_a_nonce_account_then_voided_by_advancing_it(
    rpc: Rpc, cli: Cli, owner_keypair: tuple[Path, Keypair]
) -> None:
    path, owner_kp = owner_keypair
    owner = owner_kp.pubkey()
    svm = rpc.backend.svm
    svm.airdrop(owner, 10**10)
    multisig, agent = wallet(rpc, owner, index=5)
    address = make_nonce(svm, owner)
    value = read_nonce(svm, address).durable_nonce
    new_agent = Pubkey.new_unique()
    code, out, err = cli("--owner-public-key", str(owner), "rotation-transaction", "--rpc-url", RPC_URL,
                         "--multisig", str(multisig), "--new-agent-key", str(new_agent), "--nonce-account",
                         str(address))  # fmt: skip
    assert code == 0, err
    assert f"durable nonce {address}: valid until the nonce advances" in err
    raw_b64 = out.strip()
    tx = VersionedTransaction.from_bytes(base64.b64decode(raw_b64))
    assert tx.message.recent_blockhash == value
    decoded = decode_transaction(bytes(tx))
    assert decoded.instructions[0].name == "advance_nonce_account"
    assert decoded.instructions[0].args == {"nonce_account": address, "authority": owner}
    assert [ix.args.get("transaction_index") for ix in decoded.instructions if ix.name == "proposal_create"] == [6]
    assert not any(call["method"] == "getLatestBlockhash" for call in rpc.calls)  # the nonce is the blockhash
    # The owner's rotation order and co-signature work on it as on any rotation.
    code, _, err = cli("--keypair", str(path), "sign-rotation", "--wallet-id", "w1", "--transaction", raw_b64,
                       "--agent-key", str(agent.pubkey()), "--new-agent-key", str(new_agent))  # fmt: skip
    assert code == 0, err
    assert f"durable nonce {address} (authority {owner}): valid until the nonce advances" in err
    code, out, err = cli("--keypair", str(path), "cosign", "--transaction", agent_cosigns(raw_b64, agent),
                         "--message-hash", message_hash_printed(err))  # fmt: skip
    assert code == 0, err
    assert f"owner: signing: durable nonce {address} (authority {owner})" in err
    assert VersionedTransaction.from_bytes(base64.b64decode(out.strip())).verify_with_results() == [True, True]

    # The owner changes their mind: advance the nonce, which voids the rotation transaction (the runtime advances
    # a nonce only under a newer blockhash than the one its value came from).
    svm.expire_blockhash()
    code, out, err = cli("--owner-public-key", str(owner), "advance-nonce-transaction", "--rpc-url", RPC_URL,
                         "--nonce-account", str(address))  # fmt: skip
    assert code == 0, err
    assert f"advances nonce {address} (now {value})" in err
    code, out, err = cli("--keypair", str(path), "cosign", "--transaction", out.strip(), "--message-hash",
                         message_hash_printed(err))  # fmt: skip
    assert code == 0, err
    assert f"owner: signing: advance durable nonce {address} (authority and fee payer {owner})" in err
    advance = VersionedTransaction.from_bytes(base64.b64decode(out.strip()))
    assert [ix.name for ix in decode_transaction(bytes(advance)).instructions] == ["advance_nonce_account"]
    assert isinstance(svm.send_transaction(advance), TransactionMetadata)
    assert read_nonce(svm, address).durable_nonce != value  # the rotation transaction's blockhash is spent
    cli.assert_no_secret(str(owner_kp), bytes(owner_kp.secret()).hex(), "rpc-secret-token")


def test_nonce_refusals(rpc: Rpc, cli: Cli, owner_keypair: tuple[Path, Keypair]) -> None:
    _, owner_kp = owner_keypair
    owner = owner_kp.pubkey()
    svm = rpc.backend.svm
    multisig, _ = wallet(rpc, owner)
    someone_elses = make_nonce(svm, Pubkey.new_unique())
    not_a_nonce = Pubkey.new_unique()
    svm.set_account(not_a_nonce, Account(10**9, _data(), PROGRAM_ID, False, 0))
    rotate = ["--owner-public-key", str(owner), "rotation-transaction", "--rpc-url", RPC_URL, "--multisig",
              str(multisig), "--new-agent-key", str(Pubkey.new_unique()), "--nonce-account"]  # fmt: skip
    advance = ["--owner-public-key", str(owner), "advance-nonce-transaction", "--rpc-url", RPC_URL, "--nonce-account"]
    for argv in (rotate, advance):
        code, out, err = cli(*argv, "not-a-key")
        assert (code, out) == (2, "") and ": --nonce-account is not a base58 public key" in err
        code, out, err = cli(*argv, str(someone_elses))
        assert (code, out) == (2, "") and "not the owner key" in err
        missing = Pubkey.new_unique()  # the chain's answer, not a failed read: bad input, named (exit 1 before)
        code, out, err = cli(*argv, str(missing))
        assert (code, out) == (2, "") and f": the nonce account {missing} does not exist on chain" in err
        code, out, err = cli(*argv, str(not_a_nonce))
        assert (code, out) == (1, "") and "not owned by the System program" in err
    code, out, err = cli(*advance[:-3], "--rpc-url", "ftp://x", "--nonce-account", str(someone_elses))
    assert (code, out) == (2, "") and "--rpc-url must be an http(s) URL" in err
    cli.assert_no_secret("rpc-secret-token")


def test_an_rpc_url_httpx_cannot_use_is_a_chain_error_without_its_secrets(
    cli: Cli, owner_keypair: tuple[Path, Keypair]
) -> None:
    """``httpx.InvalidURL`` is no ``httpx.HTTPError``: it escaped the adapter as a traceback with the URL nearby."""
    url = "https://user:s3cr3t@host:12ab/?api-key=rpc-secret-token"

    async def read() -> None:
        async with httpx.AsyncClient() as client:
            await RpcChain(client, url).latest_blockhash()

    with pytest.raises(ChainError, match="RPC getLatestBlockhash failed: InvalidURL") as caught:
        asyncio.run(read())
    assert "s3cr3t" not in str(caught.value) and "rpc-secret-token" not in str(caught.value)
    owner = owner_keypair[1].pubkey()
    code, out, err = cli("--owner-public-key", str(owner), "advance-nonce-transaction", "--rpc-url", url,
                         "--nonce-account", str(Pubkey.new_unique()))  # fmt: skip
    assert (code, out) == (1, "") and "InvalidURL" in err and "Traceback" not in err
    cli.assert_no_secret("s3cr3t", "rpc-secret-token")
