"""The owner CLI's chain and terminal for tests: selfhost.local_chain's JSON-RPC methods over a real LiteSVM behind
an httpx MockTransport (`Rpc`), ``waiaas owner ...`` run in process with everything it printed kept (`Cli`), Squads
multisig accounts written with the IDL-driven encoder, System nonce accounts the System program itself makes, and
what the enclave does to a rotation transaction (`agent_cosigns`). The `rpc` and `cli` fixtures are in
tests/proxy/conftest.py."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from solders.account import Account
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.system_program import create_nonce_account
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import TransactionMetadata

from parent_proxy.nonce_account import NONCE_ACCOUNT_BYTES, NonceAccount, parse_nonce_account
from policies.cli import main
from selfhost import local_chain
from tests.support.squads_encoder import PROGRAM_ID, SquadsEncoder

ENC = SquadsEncoder()
RPC_URL = "https://rpc.invalid/?api-key=rpc-secret-token"
RPC_URL_WARNING = "owner: warning: --rpc-url has a query, where providers put API keys: "


def rpc_url_file(directory: Path) -> str:
    """`RPC_URL` on the first line of a file in ``directory`` (mode 0600), for ``--rpc-url-file``: the way to give a
    URL that carries an API key (``--rpc-url`` with one gets a warning, `RPC_URL_WARNING`)."""
    path = directory / "rpc-url"
    path.write_text(RPC_URL + "\n")
    path.chmod(0o600)
    return str(path)


# -- a chain holding the wallet's multisig ---------------------------------------------------------------------------


def multisig_account(
    members: list[tuple[Pubkey, int]], *, index: int = 11, threshold: int = 2, time_lock: int = 0
) -> tuple[Pubkey, bytes]:
    """(address, account data) of a multisig written with the IDL-driven encoder, sized like the program does."""
    create_key = Pubkey.new_unique()
    address, bump = Pubkey.find_program_address([b"multisig", b"multisig", bytes(create_key)], PROGRAM_ID)
    ordered = sorted(members, key=_key_bytes)
    value = {"create_key": create_key, "config_authority": Pubkey.default(), "threshold": threshold,
             "time_lock": time_lock, "transaction_index": index, "stale_transaction_index": index,
             "rent_collector": None, "bump": bump,
             "members": [{"key": k, "permissions": {"mask": p}} for k, p in ordered]}  # fmt: skip
    data = hashlib.sha256(b"account:Multisig").digest()[:8] + ENC.defined("Multisig", value)
    return address, data.ljust(8 + 32 + 32 + 2 + 4 + 8 + 8 + 1 + 32 + 1 + 4 + 33 * len(members), b"\x00")


def _key_bytes(member: tuple[Pubkey, int]) -> bytes:
    return bytes(member[0])


class Rpc:
    """selfhost.local_chain's methods over a LiteSVM, behind an httpx MockTransport; records each call."""

    def __init__(self) -> None:
        self.backend = local_chain.LocalChain()
        self.calls: list[dict[str, Any]] = []
        self.urls: list[str] = []

    def install(self, address: Pubkey, data: bytes, owner: Pubkey = PROGRAM_ID) -> None:
        self.backend.svm.set_account(address, Account(10**9, data, owner, False, 0))

    def client(self) -> httpx.AsyncClient:
        def handle(request: httpx.Request) -> httpx.Response:
            self.calls.append(json.loads(request.content))
            self.urls.append(str(request.url))
            return httpx.Response(200, json=local_chain.handle_body(self.backend, request.content))

        return httpx.AsyncClient(transport=httpx.MockTransport(handle))


def secrets_of(key: Ed25519PrivateKey) -> list[str]:
    """Every form the owner's secret could leak in: seed hex, base58 and base64 of the keypair, the JSON list."""
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pair = seed + key.public_key().public_bytes_raw()
    return [seed.hex(), pair.hex(), str(Keypair.from_bytes(pair)), base64.b64encode(seed).decode(),
            base64.b64encode(pair).decode(), json.dumps(list(pair)), ", ".join(str(b) for b in seed[:8])]  # fmt: skip


class Cli:
    """Runs ``waiaas owner ...`` and keeps everything it printed, to check for secrets at the end."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.printed: list[str] = []

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        code = main(["owner", *argv])
        out, err = self.capsys.readouterr()
        self.printed += [out, err]
        return code, out, err

    def assert_no_secret(self, *secrets: str) -> None:
        text = "\n".join(self.printed)
        assert text  # something was printed
        for secret in secrets:
            assert secret not in text


def built_rotation(cli: Cli, owner: Pubkey, multisig: Pubkey, new_agent: Pubkey, *options: str) -> str:
    """What ``waiaas owner rotation-transaction`` printed (the base64 transaction) for ``owner``'s ``multisig`` and
    ``new_agent``, with ``options``; it must exit 0."""
    code, out, err = cli("--owner-public-key", str(owner), "rotation-transaction", "--rpc-url", RPC_URL,
                         "--multisig", str(multisig), "--new-agent-key", str(new_agent), *options)  # fmt: skip
    assert code == 0, err
    return out.strip()


def wallet(rpc: Rpc, owner: Pubkey, *, agent_permissions: int = 7, **kwargs: Any) -> tuple[Pubkey, Keypair]:
    agent = Keypair()
    address, data = multisig_account([(owner, 7), (agent.pubkey(), agent_permissions)], **kwargs)
    rpc.install(address, data)
    return address, agent


def unsigned(raw_b64: str) -> VersionedTransaction:
    return VersionedTransaction.from_bytes(base64.b64decode(raw_b64))


def message_of(tx: VersionedTransaction) -> bytes:
    return bytes(to_bytes_versioned(tx.message))


def message_hash_printed(err: str) -> str:
    """The message hash ``sign-rotation`` or ``advance-nonce-transaction`` told the owner to cosign with."""
    found = re.findall(r"--message-hash ([0-9a-f]{64})", err)
    assert len(found) == 1, err
    return str(found[0])


def agent_cosigns(raw_b64: str, agent: Keypair) -> str:
    """What the enclave does: the old agent's signature in its slot (the others left as they are)."""
    tx = unsigned(raw_b64)
    keys = list(tx.message.account_keys[: tx.message.header.num_required_signatures])
    signatures = list(tx.signatures)
    signatures[keys.index(agent.pubkey())] = agent.sign_message(message_of(tx))
    return base64.b64encode(bytes(VersionedTransaction.populate(tx.message, signatures))).decode()


def make_nonce(svm: LiteSVM, authority: Pubkey) -> Pubkey:
    """A nonce account made by the System program itself (CreateAccount + InitializeNonceAccount)."""
    funder, nonce = Keypair(), Keypair()
    svm.airdrop(funder.pubkey(), 10**10)
    rent = svm.minimum_balance_for_rent_exemption(NONCE_ACCOUNT_BYTES)
    ixs = create_nonce_account(funder.pubkey(), nonce.pubkey(), authority, rent)
    message = Message.new_with_blockhash(ixs, funder.pubkey(), svm.latest_blockhash())
    assert isinstance(svm.send_transaction(VersionedTransaction(message, [funder, nonce])), TransactionMetadata)
    return nonce.pubkey()


def read_nonce(svm: LiteSVM, address: Pubkey) -> NonceAccount:
    account = svm.get_account(address)
    assert account is not None
    return parse_nonce_account(address, account.owner, bytes(account.data))
