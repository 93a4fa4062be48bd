"""One load per wallet at a time in the relay (`EnclaveRelay.ensure_wallet`, `parent_proxy.load_flights`).

Review finding (availability after a signer restart): N concurrent first requests for one wallet each sent
``load_wallet``, and the signer unsealed the key N times (self-host: N Argon2id derivations of 64 MiB, one at a
time), holding its threads while other wallets' first requests waited. Now the first request loads and the others
wait for its outcome: one ``load_wallet`` and one unseal; a failure reaches every request that waited and is not
kept; after a restart the wallet is loaded again, once.

Real enclave server and handler over a Unix socket with the local sealer (real Argon2id); spies only count the
``load_wallet`` requests the relay sends and the unseals at the sealer seam (and hold an unseal until released).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from enclave_app.client import EnclaveClient
from enclave_app.no_attestation import NoAttestationNsm
from enclave_app.sealing import LocalSealer
from enclave_app.server import EnclaveServer, Handler
from enclave_app.state import Enclave
from enclave_app.transport import UnixAddress
from parent_proxy.api_errors import ApiError, Code
from parent_proxy.enclave_relay import EnclaveRelay
from parent_proxy.load_flights import LoadFlights
from parent_proxy.store.model import Wallet
from policies.signing import sign_document
from tests.support.policies import example_policy
from tests.support.policy_handler import NOW, OWNER
from tests.support.served_enclave import OWNER_PUBLIC, SECRET, sealed
from tests.support.unseal_spy import SpySealers

WALLET = "w-flights"
REQUESTS = 8


class Signer:
    """An enclave process on a Unix socket that the test can restart (a new process: it holds no wallet)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.enclave: Enclave
        self.spy: SpySealers
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self.enclave = Enclave(nsm=NoAttestationNsm(), clock=lambda: NOW, require_multisig=False)
        self.spy = SpySealers(LocalSealer(SECRET))
        self.server = await EnclaveServer(Handler(self.enclave, self.spy)).start(UnixAddress(self.path))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class CountedLoads:
    """The relay's client, with the ``load_wallet`` requests it sends counted."""

    def __init__(self, client: EnclaveClient) -> None:
        self.sent, load = 0, client.load_wallet

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.sent += 1
            return await load(*args, **kwargs)

        client.load_wallet = counted  # type: ignore[method-assign]


@dataclass
class World:
    signer: Signer
    relay: EnclaveRelay
    loads: CountedLoads
    stored: Wallet
    """The wallet as the store holds it: the sealed agent key and the owner-signed example policy (sequence 1)."""


def _stored() -> Wallet:
    agent, blob = sealed(WALLET)
    document = example_policy()
    document["wallet_id"] = WALLET
    policy = json.dumps(sign_document("policy", document, OWNER)).encode()
    return Wallet(WALLET, agent, OWNER_PUBLIC, agent, blob, policy_document=policy, policy_sequence=1)


def run(tmp_path: Path, steps: Callable[[World], Awaitable[None]]) -> None:
    async def main() -> None:
        signer = Signer(tmp_path / "signer.sock")
        await signer.start()
        client = EnclaveClient(UnixAddress(signer.path), timeout=15)
        world = World(signer, EnclaveRelay(client), CountedLoads(client), _stored())
        try:
            await steps(world)
        finally:
            await signer.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


async def _started(count: int, call: Callable[[], Awaitable[None]]) -> list[asyncio.Task[None]]:
    """``count`` concurrent calls, each run up to its first wait."""
    tasks = [asyncio.ensure_future(call()) for _ in range(count)]
    for _ in range(5):
        await asyncio.sleep(0)
    return tasks


def _holds_the_stored_policy(world: World) -> bool:
    held = world.signer.enclave.wallet(WALLET)
    return bytes(held.agent) == world.stored.agent_pubkey and held.policy is not None and held.policy.sequence == 1


def test_concurrent_first_requests_for_one_wallet_load_it_once(tmp_path: Path) -> None:
    async def steps(world: World) -> None:
        tasks = await _started(REQUESTS, lambda: world.relay.ensure_wallet(world.stored))
        assert world.loads.sent == 1  # before: one load_wallet per request
        await asyncio.to_thread(world.signer.spy.started.wait, 10)
        world.signer.spy.release.set()
        await asyncio.gather(*tasks)
        assert (world.loads.sent, world.signer.spy.unseals) == (1, 1)
        assert _holds_the_stored_policy(world)
        assert len(world.relay._flights) == 0
        await world.relay.ensure_wallet(world.stored)  # loaded in this session: nothing sent
        assert world.loads.sent == 1

    run(tmp_path, steps)


def test_a_failed_load_reaches_every_waiting_request_and_is_not_kept(tmp_path: Path) -> None:
    async def steps(world: World) -> None:
        blob = world.stored.sealed_key
        damaged = replace(world.stored, sealed_key=blob[:-1] + bytes([blob[-1] ^ 1]))
        tasks = await _started(REQUESTS, lambda: world.relay.ensure_wallet(damaged))
        world.signer.spy.release.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(o, ApiError) and o.code == "enclave_unavailable" for o in outcomes), outcomes
        assert len({id(o) for o in outcomes}) == 1  # the one load's failure, handed to each request
        assert (world.loads.sent, world.signer.spy.unseals) == (1, 1)
        assert len(world.relay._flights) == 0 and WALLET not in world.relay._loaded

        with pytest.raises(ApiError, match="the enclave is unavailable"):
            await world.relay.ensure_wallet(damaged)  # tried afresh, not answered from the failure
        assert world.loads.sent == 2
        await asyncio.gather(*[world.relay.ensure_wallet(world.stored) for _ in range(REQUESTS)])
        assert (world.loads.sent, world.signer.spy.unseals) == (3, 3)
        assert _holds_the_stored_policy(world)

    run(tmp_path, steps)


def test_after_a_signer_restart_concurrent_requests_load_the_wallet_again_once(tmp_path: Path) -> None:
    """The relay loaded the wallet; the signer restarts; a signature request finds it gone (503, everything
    forgotten), then concurrent requests load it once into the new signer. Then the signer restarts again and the
    relay is not told: a request with a newer policy finds the wallet gone while installing it, and loads it again
    in the new session while the requests arriving meanwhile wait for that load."""

    async def steps(world: World) -> None:
        world.signer.spy.release.set()
        await asyncio.gather(*[world.relay.ensure_wallet(world.stored) for _ in range(REQUESTS)])
        assert world.loads.sent == 1

        await world.signer.start()
        with pytest.raises(ApiError, match="the enclave is unavailable"):
            await world.relay.sign_message(WALLET, b"hello")  # unknown_wallet: the relay forgets what it loaded
        assert world.relay._loaded == {}
        tasks = await _started(REQUESTS, lambda: world.relay.ensure_wallet(world.stored))
        world.signer.spy.release.set()
        await asyncio.gather(*tasks)
        assert (world.loads.sent, world.signer.spy.unseals) == (2, 1)
        assert _holds_the_stored_policy(world)

        await world.signer.start()
        document = example_policy()
        document["wallet_id"], document["sequence"] = WALLET, 2
        newer = replace(
            world.stored,
            policy_document=json.dumps(sign_document("policy", document, OWNER)).encode(),
            policy_sequence=2,
        )
        tasks = await _started(REQUESTS, lambda: world.relay.ensure_wallet(newer))
        await asyncio.to_thread(world.signer.spy.started.wait, 10)  # the first request is loading the wallet again
        tasks += await _started(REQUESTS, lambda: world.relay.ensure_wallet(newer))
        world.signer.spy.release.set()
        await asyncio.gather(*tasks)
        assert (world.loads.sent, world.signer.spy.unseals) == (3, 1)
        held = world.signer.enclave.wallet(WALLET)
        assert held.policy is not None and held.policy.sequence == 2

    run(tmp_path, steps)


def test_requests_after_a_detected_restart_do_not_wait_for_a_load_begun_before_it(tmp_path: Path) -> None:
    """While a load is under way, a signature request finds the enclave restarted and the relay forgets what it
    loaded: requests after that start a load of their own (one, for all of them), whatever the earlier load's
    outcome."""

    async def steps(world: World) -> None:
        before = await _started(REQUESTS, lambda: world.relay.ensure_wallet(world.stored))
        await asyncio.to_thread(world.signer.spy.started.wait, 10)
        world.relay.forget()  # as `sign_transaction` does on `unknown_wallet`
        after = await _started(REQUESTS, lambda: world.relay.ensure_wallet(world.stored))
        assert world.loads.sent == 2
        world.signer.spy.release.set()
        await asyncio.gather(*before, *after)
        assert (world.loads.sent, world.signer.spy.unseals) == (2, 1)  # the signer unsealed once for both
        assert _holds_the_stored_policy(world) and len(world.relay._flights) == 0

    run(tmp_path, steps)


def test_a_cancelled_request_leaves_the_load_to_the_others(tmp_path: Path) -> None:
    """A waiting request's cancellation ends its wait only; the loading request's cancellation leaves the others to
    load (the signer, still unsealing for it, answers the new load once that ends: one unseal)."""

    async def steps(world: World) -> None:
        tasks = await _started(REQUESTS, lambda: world.relay.ensure_wallet(world.stored))
        await asyncio.to_thread(world.signer.spy.started.wait, 10)
        tasks[-1].cancel()  # a waiting request
        await asyncio.sleep(0)
        assert world.loads.sent == 1
        tasks[0].cancel()  # the loading one
        await asyncio.sleep(0.05)
        world.signer.spy.release.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(outcomes[0], asyncio.CancelledError) and isinstance(outcomes[-1], asyncio.CancelledError)
        assert outcomes[1:-1] == [None] * (REQUESTS - 2), outcomes
        assert (world.loads.sent, world.signer.spy.unseals) == (2, 1)
        assert _holds_the_stored_policy(world)

    run(tmp_path, steps)


def test_a_dropped_flight_is_not_joined_and_is_still_answered() -> None:
    """`LoadFlights.drop` (the relay forgot: an enclave restart detected): a later request starts its own flight,
    the requests already waiting get the dropped flight's outcome, and its end does not remove the new flight."""

    async def main() -> None:
        flights, first_go, second_go = LoadFlights(), asyncio.Event(), asyncio.Event()

        async def first() -> None:
            await first_go.wait()

        async def second() -> None:
            await second_go.wait()
            raise ApiError(Code.ENCLAVE_UNAVAILABLE, "the second load failed")

        leader = asyncio.ensure_future(flights.fly("w", first))
        await asyncio.sleep(0)
        waiter = asyncio.ensure_future(flights.join("w"))
        await asyncio.sleep(0)
        flights.drop()
        assert await flights.join("w") is None
        new_leader = asyncio.ensure_future(flights.fly("w", second))
        await asyncio.sleep(0)
        late_waiter = asyncio.ensure_future(flights.join("w"))
        first_go.set()
        await leader
        outcome = await waiter
        assert outcome is not None and outcome.error is None
        assert len(flights) == 1  # the new flight is still there
        second_go.set()
        with pytest.raises(ApiError, match="the second load failed"):
            await new_leader
        late = await late_waiter
        assert late is not None and isinstance(late.error, ApiError)
        assert len(flights) == 0

    asyncio.run(main())
