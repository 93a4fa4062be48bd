"""Fixtures for the parent proxy tests: a settable clock, wallets, the `store` fixture that runs every contract test
against each adapter (SQLite on a temp file; DynamoDB on moto's in-process fake), and the API harness as most API
tests take it: `h` with no wallet yet, `provisioned` with one (a module whose harness differs defines its own)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from parent_proxy import owner_cli_common
from parent_proxy.owner_signers import write_keypair_file
from parent_proxy.store.model import Wallet
from parent_proxy.store.protocol import Store
from parent_proxy.store.sqlite import SqliteStore
from tests.proxy.api_harness import Harness, provision, running_harness, stand_in_harness
from tests.proxy.stand_in import StandIn
from tests.support.aws_env import use_test_credentials
from tests.support.owner_rotation_rpc import Cli, Rpc

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

W = TypeVar("W")


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make_wallet(wallet_id: str = "w1", **overrides: object) -> Wallet:
    fields: dict[str, object] = {
        "wallet_id": wallet_id,
        "agent_pubkey": b"\x01" * 32,
        "owner_pubkey": b"\x02" * 32,
        "vault_address": b"\x03" * 32,
        "sealed_key": b"sealed-blob",
    }
    fields.update(overrides)
    return Wallet(**fields)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials so that nothing can reach a real AWS account."""
    use_test_credentials(monkeypatch)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "state.db")
    yield store
    store.close()


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        sqlite = SqliteStore(tmp_path / "state.db")
        yield sqlite
        sqlite.close()
        return
    request.getfixturevalue("aws_env")
    with moto_dynamo_store(lambda client: client) as (dynamo, _):
        yield dynamo


@pytest.fixture(params=["sqlite", "dynamodb"])
def reopen_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens another store on one shared backend at each call: what another parent process, or a restarted one,
    has (SQLite: the same file; DynamoDB: the same table, through a client of its own). Closes them all after."""
    opened: list[Store] = []
    if request.param == "sqlite":

        def open_sqlite() -> Store:
            opened.append(SqliteStore(tmp_path / "state.db"))
            return opened[-1]

        yield open_sqlite
    else:
        import boto3

        from parent_proxy.store.dynamodb import DynamoStore

        request.getfixturevalue("aws_env")
        with moto_dynamo_store(lambda client: client):

            def open_dynamo() -> Store:
                opened.append(DynamoStore(boto3.client("dynamodb", region_name="us-east-1"), "waiaas-test"))
                return opened[-1]

            yield open_dynamo
            for store in opened:
                store.close()
            return
    for store in opened:
        store.close()


@contextmanager
def moto_dynamo_store(wrap: Callable[[Any], W]) -> Iterator[tuple[Any, W]]:
    """A DynamoDB store on moto's fake (table ``waiaas-test``) whose boto3 client is ``wrap(client)``; yields the
    store and the wrapped client. Needs the `aws_env` fixture's fake credentials."""
    import boto3
    from moto import mock_aws

    from parent_proxy.store.dynamodb import DynamoStore, create_table

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "waiaas-test")
        wrapped = wrap(client)
        dynamo = DynamoStore(cast("DynamoDBClient", wrapped), "waiaas-test")  # a wrapper: boto3-shaped, duck-typed
        try:
            yield dynamo, wrapped
        finally:
            dynamo.close()


def provisioned_on_store(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    *,
    policy: Callable[[Harness], dict[str, Any]] | None = None,
    **kwargs: Any,
) -> Iterator[Harness]:
    """For a fixture with ``params=["sqlite", "dynamodb"]``: a running harness (`running_harness`, ``kwargs``) on
    the store ``request.param`` names (SQLite in ``tmp_path``, or DynamoDB on moto's fake), with a provisioned wallet
    (`provision`, with ``policy(h)`` if given)."""
    if request.param == "sqlite":
        for harness in running_harness(tmp_path, **kwargs):
            provision(harness, None if policy is None else policy(harness))
            yield harness
        return
    request.getfixturevalue("aws_env")
    with moto_dynamo_store(lambda client: client) as (store, _):
        for harness in running_harness(tmp_path, store=store, **kwargs):
            provision(harness, None if policy is None else policy(harness))
            yield harness


@pytest.fixture
def wallet_store(store: Store) -> Store:
    """A store holding wallets ``w1`` and ``w2``."""
    store.create_wallet(make_wallet("w1"))
    store.create_wallet(make_wallet("w2"))
    return store


@pytest.fixture
def rpc(monkeypatch: pytest.MonkeyPatch) -> Rpc:
    """The owner CLI's RPC (`owner_cli_common.new_rpc_client`) answered by a LiteSVM-backed local chain."""
    chain = Rpc()
    monkeypatch.setattr(owner_cli_common, "new_rpc_client", chain.client)
    return chain


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    """A running harness (`running_harness`: the proxy on SQLite, the real enclave) with no wallet yet."""
    yield from running_harness(tmp_path)


@pytest.fixture
def provisioned(tmp_path: Path) -> Iterator[Harness]:
    """A running harness whose wallet (``wallet_id``) is created, with a token and the example policy (`provision`)."""
    for harness in running_harness(tmp_path):
        provision(harness)
        yield harness


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[StandIn]:
    """A provisioned wallet whose enclave a test replaces with stand-ins (`tests.proxy.stand_in.StandIn`)."""
    with stand_in_harness(tmp_path) as (h, loop, servers):
        yield StandIn(h, loop, servers)


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, Ed25519PrivateKey]:
    """An owner key and the Solana keypair file holding it (the owner CLI's local signer)."""
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "owner.json"
    write_keypair_file(path, key)
    return path, key
