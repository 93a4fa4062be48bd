"""Review finding #7 (/tmp/s6/review_enclave.md): after an enclave restart, owner orders reach the new enclave.

The relay remembers which wallets it loaded in the current enclave session. A restarted enclave knows none and
answers ``unknown_wallet``; the freeze/unfreeze path (and `EnclaveRelay.install_policy`) must then forget the stale
cache, load the wallet again and resend the order once, instead of answering ``enclave_acknowledged: false`` until
some signing request happens to reset the cache. Real enclave app (development NSM, local sealer), real SQLite.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from enclave_app.protocol import AttestationMode
from enclave_app.sealing import LocalSealer
from enclave_app.server import EnclaveServer, Handler
from enclave_app.state import Enclave
from enclave_app.transport import UnixAddress
from tests.proxy.api_harness import Harness, LoopThread, build_harness, provision, stop_enclave
from tests.proxy.harness_calls import freeze_order
from tests.support.policies import MERCHANT


def start_kept_enclave(loop: LoopThread, path: Path) -> tuple[asyncio.Server, Enclave]:
    """`api_harness.start_enclave`, but the test keeps the `Enclave` to look at its wallets."""

    async def start() -> tuple[asyncio.Server, Enclave]:
        nsm = UnsafeDevelopmentNsm(pcrs={0: bytes(48)})
        enclave = Enclave(
            nsm=nsm, clock=lambda: datetime.now(UTC), attestation_mode=AttestationMode.NITRO, require_multisig=False
        )
        handler = Handler(enclave, LocalSealer(b"operator-secret-for-tests-only!!"))
        return await EnclaveServer(handler).start(UnixAddress(str(path))), enclave

    started: tuple[asyncio.Server, Enclave] = loop.run(start())
    return started


class Restartable:
    def __init__(self, h: Harness, loop: LoopThread) -> None:
        self.h, self.loop = h, loop
        self.server, self.enclave = start_kept_enclave(loop, h.socket)

    def restart(self) -> None:
        """The enclave process goes and a new one starts on the same socket; the proxy is not told."""
        stop_enclave(self.h, self.loop, self.server)
        self.server, self.enclave = start_kept_enclave(self.loop, self.h.socket)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Restartable]:
    loop = LoopThread()
    h = build_harness(tmp_path, loop)
    enclave = Restartable(h, loop)
    try:
        with h.client:
            provision(h)
            yield enclave
    finally:
        enclave.server.close()
        loop.stop()


def test_an_owner_freeze_after_an_enclave_restart_reaches_the_new_enclave(world: Restartable) -> None:
    h = world.h
    assert world.enclave.wallet(h.wallet_id).frozen is False
    world.restart()
    assert world.enclave.wallet_count == 0

    frozen = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/freeze", freeze_order(h, 1))

    assert frozen.status_code == 200, frozen.text
    assert frozen.json()["enclave_acknowledged"] is True
    held = world.enclave.wallet(h.wallet_id)
    assert held.frozen is True and held.order_sequence == 1
    assert bytes(held.agent) == bytes(h.agent)
    assert held.policy is not None and held.policy.sequence == 1  # the stored policy came back with the wallet

    world.restart()
    unfrozen = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/unfreeze", freeze_order(h, 2, freeze=False))
    assert unfrozen.status_code == 200 and unfrozen.json()["enclave_acknowledged"] is True
    assert world.enclave.wallet(h.wallet_id).frozen is False
    assert h.sign(h.transfer(1000, MERCHANT)).status_code == 200


def test_relay_install_policy_after_an_enclave_restart_reaches_the_new_enclave(world: Restartable) -> None:
    h = world.h
    world.restart()
    envelope = json.dumps(h.policy(sequence=2)).encode()

    applied = world.loop.run(h.services.relay.install_policy(h.wallet_id, envelope))

    assert applied.answer.sequence == 2
    held = world.enclave.wallet(h.wallet_id)
    assert held.policy is not None and held.policy.sequence == 2


def test_an_order_the_enclave_refuses_for_another_reason_is_not_resent(world: Restartable) -> None:
    h = world.h
    assert h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/freeze", freeze_order(h, 5)).status_code == 200
    world.restart()
    assert h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/freeze", freeze_order(h, 6)).json()["enclave_acknowledged"]
    # The enclave accepted a newer order than the store knows (a store restored from an older backup, say): the
    # store takes order 7, the enclave refuses it as stale, and the refusal is not a restart, so it is not resent.
    world.enclave.wallet(h.wallet_id).order_sequence = 9
    stale = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/unfreeze", freeze_order(h, 7, freeze=False))
    assert stale.status_code == 200 and stale.json()["enclave_acknowledged"] is False  # order_stale: refused once
    assert world.enclave.wallet(h.wallet_id).frozen is True


def test_an_older_unfreeze_after_a_newer_freeze_and_a_restart_unfreezes_nothing(world: Restartable) -> None:
    """The fourteenth session's known gap: the owner signed an unfreeze (2), then froze the wallet (3); someone
    holding the older, unexpired unfreeze sends it after the enclave restarted (which forgot its own sequence).
    The store keeps the last accepted sequence, so the order is refused before it reaches anything."""
    h = world.h
    unfreeze_2 = freeze_order(h, 2, freeze=False)
    assert h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/freeze", freeze_order(h, 3)).status_code == 200
    world.restart()
    events = h.audit_events()

    replayed = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/unfreeze", unfreeze_2)

    assert replayed.status_code == 409, replayed.text
    error = replayed.json()["error"]
    assert (error["code"], error["message"]) == ("conflict", "order sequence 2 is not above the last accepted 3")
    assert h.store.get_wallet(h.wallet_id).frozen and h.audit_events() == events
    assert world.enclave.wallet_count == 0  # nothing was sent to the enclave
    blocked = h.sign(h.transfer(1000, MERCHANT))
    assert blocked.status_code == 403 and blocked.json()["error"]["code"] == "wallet_frozen"


def test_a_wallet_frozen_at_the_proxy_comes_back_frozen_in_a_restarted_enclave(world: Restartable) -> None:
    """The restarted enclave forgot the freeze; the relay's load carries it (`frozen_at_order`), so the enclave
    refuses on its own again, and refuses the owner's older orders."""
    h = world.h
    assert h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/freeze", freeze_order(h, 3)).status_code == 200
    world.restart()

    installed = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": h.policy(sequence=2)})

    assert installed.status_code == 200 and installed.json()["enclave_installed"] is True, installed.text
    held = world.enclave.wallet(h.wallet_id)
    assert (held.frozen, held.order_sequence) == (True, 3)
    unfrozen = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/unfreeze", freeze_order(h, 4, freeze=False))
    assert {k: v for k, v in unfrozen.json().items() if not k.startswith(("receipt", "session"))} == {
        "wallet_id": h.wallet_id, "frozen": False, "enclave_acknowledged": True, "order_sequence": 4,
    }  # fmt: skip
    assert unfrozen.json()["receipt"] is not None  # from the restarted enclave (tests/proxy/test_api_order_receipts)
    assert held.frozen is False and h.sign(h.transfer(1000, MERCHANT)).status_code == 200
