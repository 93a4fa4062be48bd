"""Review s17 (/tmp/s17-review-keep/wrong_secret.py): a signer started with another unseal secret refused every
stored wallet (``unseal_failed``) but still provisioned new ones, sealed under the wrong secret; once the right
secret was back their agent keys (2-of-2 multisig members) never opened again. Now the proxy provisions a wallet
only in a signer session that has opened a stored wallet (`parent_proxy.signer_secret`), and ``/readyz`` says so.

Real enclave app (development NSM, local sealer with the secret each boot is given), real SQLite store, real HTTP
API; a "boot" is a new enclave process on the same socket, the proxy not told.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from solders.pubkey import Pubkey

from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from enclave_app.errors import SealingError, StateError
from enclave_app.protocol import AttestationMode
from enclave_app.sealing import LocalSealer, SealBinding, unseal_agent_key
from enclave_app.server import EnclaveServer, Handler
from enclave_app.state import Enclave
from enclave_app.transport import UnixAddress
from parent_proxy import signer_secret
from parent_proxy.errors import NotFound
from tests.proxy.api_harness import (
    OPERATOR_SECRET,
    Harness,
    LoopThread,
    build_harness,
    provision,
    spy_calls,
    stop_enclave,
)
from tests.proxy.rotation_requests import agent_key_path, chain_shows, multisig_wallet, switch_body
from tests.support.policies import MERCHANT

SECRET_A = OPERATOR_SECRET
SECRET_B = b"another-operator-secret-for-tests"


class Signer:
    """The enclave behind the harness's socket; `boot` replaces it by a fresh one with the given secret."""

    def __init__(self, h: Harness, loop: LoopThread) -> None:
        self.h, self.loop = h, loop
        self.server: asyncio.Server | None = None
        self.enclave: Enclave | None = None

    def boot(self, secret: bytes) -> Enclave:
        if self.server is not None:
            stop_enclave(self.h, self.loop, self.server)

        async def start() -> tuple[asyncio.Server, Enclave]:
            nsm = UnsafeDevelopmentNsm(pcrs={0: bytes(48)})
            enclave = Enclave(
                nsm=nsm, clock=lambda: datetime.now(UTC), attestation_mode=AttestationMode.NITRO, require_multisig=False
            )
            server = await EnclaveServer(Handler(enclave, LocalSealer(secret))).start(UnixAddress(str(self.h.socket)))
            return server, enclave

        self.server, self.enclave = self.loop.run(start())
        return self.enclave


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Harness, Signer]]:
    loop = LoopThread()
    h = build_harness(tmp_path, loop)
    signer = Signer(h, loop)
    try:
        with h.client:
            yield h, signer
    finally:
        if signer.server is not None:
            signer.server.close()
        loop.stop()


def create(h: Harness, wallet_id: str) -> Any:
    return h.owner_call("POST", "/v1/wallets", {"wallet_id": wallet_id, "owner_public_key": str(h.owner_pub)})


def code(response: Any) -> str:
    return str(response.json()["error"]["code"])


def stored(h: Harness, wallet_id: str) -> bool:
    try:
        h.store.get_wallet(wallet_id)
    except NotFound:
        return False
    return True


def holds(enclave: Enclave, wallet_id: str) -> bool:
    try:
        enclave.wallet(wallet_id)
    except StateError:
        return False
    return True


def damage_blob(h: Harness, wallet_id: str) -> None:
    """Flip the last byte of the wallet's stored sealed key (inside the AEAD tag: the blob still parses)."""
    blob = bytearray(h.store.get_wallet(wallet_id).sealed_key)
    blob[-1] ^= 0x01
    h.store.inner._conn().execute("UPDATE wallets SET sealed_key = ? WHERE wallet_id = ?", (bytes(blob), wallet_id))


def opens_with(h: Harness, wallet_id: str, secret: bytes) -> bool:
    wallet = h.store.get_wallet(wallet_id)
    binding = SealBinding(wallet.wallet_id, wallet.agent_pubkey, wallet.owner_pubkey)
    try:
        unseal_agent_key(LocalSealer(secret), wallet.sealed_key, binding)
    except SealingError:
        return False
    return True


def test_a_signer_with_another_secret_makes_no_wallet_until_the_right_secret_is_back(
    world: tuple[Harness, Signer],
) -> None:
    h, signer = world
    signer.boot(SECRET_A)
    provision(h)  # w1, under secret A
    wrong = signer.boot(SECRET_B)
    events = h.audit_events()

    refused = create(h, "w2")

    assert refused.status_code == 503 and code(refused) == "signer_secret_mismatch", refused.text
    assert "restore the secret file from your backup" in refused.json()["error"]["message"]
    assert not stored(h, "w2") and h.audit_events() == events  # nothing stored, nothing recorded
    assert wrong.wallet_count == 0  # nothing provisioned (and w1 did not open)
    ready = h.client.get("/readyz")
    assert ready.status_code == 503 and code(ready) == "signer_secret_mismatch"
    assert code(create(h, "w2")) == "signer_secret_mismatch" and wrong.wallet_count == 0

    right = signer.boot(SECRET_A)
    assert h.client.get("/readyz").status_code == 200
    created = create(h, "w2")
    assert created.status_code == 201, created.text
    assert holds(right, "w1") and holds(right, "w2")
    assert opens_with(h, "w2", SECRET_A) and opens_with(h, "w1", SECRET_A)
    assert h.sign(h.transfer(1000, MERCHANT)).status_code == 200  # w1 signs as before


def test_an_empty_store_creates_under_any_secret_and_then_holds_to_it(world: tuple[Harness, Signer]) -> None:
    h, signer = world
    signer.boot(SECRET_B)
    assert h.client.get("/readyz").status_code == 200  # no wallet: nothing a secret must open yet
    assert create(h, "w1").status_code == 201
    signer.boot(SECRET_A)
    refused = create(h, "w2")
    assert refused.status_code == 503 and code(refused) == "signer_secret_mismatch"
    assert not stored(h, "w2")


def test_the_check_loads_a_wallet_once_per_signer_session(world: tuple[Harness, Signer]) -> None:
    h, signer = world
    signer.boot(SECRET_A)
    assert create(h, "w1").status_code == 201  # empty store: no load
    opened = spy_calls(h.services.relay, "open_wallet")
    signer.boot(SECRET_A)
    assert create(h, "w2").status_code == 201
    assert create(h, "w3").status_code == 201
    assert h.client.get("/readyz").status_code == 200
    assert [w.wallet_id for w in opened] == ["w1"]  # the stored wallet most recently named, once per session
    signer.boot(SECRET_A)
    assert h.client.get("/readyz").status_code == 200
    assert [w.wallet_id for w in opened] == ["w1", "w3"]


def test_a_damaged_blob_is_passed_over_for_a_wallet_that_opens(world: tuple[Harness, Signer]) -> None:
    h, signer = world
    signer.boot(SECRET_A)
    for wallet_id in ("w1", "w2"):
        assert create(h, wallet_id).status_code == 201
    damage_blob(h, "w2")
    enclave = signer.boot(SECRET_A)

    created = create(h, "w3")

    assert created.status_code == 201, created.text
    assert holds(enclave, "w1") and not holds(enclave, "w2")  # w2 failed to open, w1 opened: the secret is right


def test_three_wallets_that_do_not_open_refuse_creation_even_if_an_older_one_would(
    world: tuple[Harness, Signer],
) -> None:
    h, signer = world
    signer.boot(SECRET_A)
    for wallet_id in ("w1", "w2", "w3", "w4"):
        assert create(h, wallet_id).status_code == 201
    for wallet_id in ("w2", "w3", "w4"):
        damage_blob(h, wallet_id)
    enclave = signer.boot(SECRET_A)

    refused = create(h, "w5")

    assert signer_secret.MAX_CANDIDATES == 3
    assert refused.status_code == 503 and code(refused) == "signer_secret_mismatch"
    assert enclave.wallet_count == 0 and not stored(h, "w5")


def test_a_signer_restart_between_the_check_and_the_provisioning_stores_nothing(
    world: tuple[Harness, Signer], monkeypatch: pytest.MonkeyPatch
) -> None:
    h, signer = world
    signer.boot(SECRET_A)
    assert create(h, "w1").status_code == 201
    relay = h.services.relay
    original = relay.provision_wallet
    wrong: list[Enclave] = []

    async def restarted_first(wallet_id: str, owner: bytes) -> Any:
        # The check has passed in this session; the signer now restarts with another secret before it provisions.
        wrong.append(await anyio.to_thread.run_sync(signer.boot, SECRET_B))
        return await original(wallet_id, owner)

    monkeypatch.setattr(relay, "provision_wallet", restarted_first)
    refused = create(h, "w2")

    assert refused.status_code == 503 and code(refused) == "enclave_unavailable", refused.text
    assert "restarted" in refused.json()["error"]["message"]
    assert not stored(h, "w2")
    assert wrong and wrong[0].wallet_count == 0  # made by the new boot, then dropped
    monkeypatch.setattr(relay, "provision_wallet", original)
    assert code(create(h, "w2")) == "signer_secret_mismatch"


def test_a_wallet_loaded_by_the_check_in_a_restarted_signer_gets_its_policy_back(
    world: tuple[Harness, Signer],
) -> None:
    """The check loads a wallet without its policy; the relay must not go on believing the policy installed."""
    h, signer = world
    signer.boot(SECRET_A)
    provision(h)  # w1 with its policy; the relay remembers both as loaded
    enclave = signer.boot(SECRET_A)
    assert create(h, "w2").status_code == 201  # the check loaded w1 into the new boot
    assert holds(enclave, "w1")

    signed = h.sign(h.transfer(1000, MERCHANT))

    assert signed.status_code == 200, signed.text
    held = enclave.wallet("w1")
    assert held.policy is not None and held.policy.sequence == 1
    assert bytes(held.agent) == bytes(h.agent)


def test_a_store_failure_during_the_check_is_503_and_provisions_nothing(world: tuple[Harness, Signer]) -> None:
    h, signer = world
    signer.boot(SECRET_A)
    assert create(h, "w1").status_code == 201
    enclave = signer.boot(SECRET_A)
    h.store.failing = {"audit_records"}
    try:
        refused = create(h, "w2")
    finally:
        h.store.failing = set()
    assert refused.status_code == 503 and code(refused) == "store_unavailable", refused.text
    assert enclave.wallet_count == 0 and not stored(h, "w2")
    assert create(h, "w2").status_code == 201


def test_a_wallet_the_signer_holds_with_other_keys_counts_as_opened(world: tuple[Harness, Signer]) -> None:
    """The signer switched w1 to its candidate but the store did not record it (503: the owner repeats the switch);
    the proxy restarts meanwhile (a new process: its check runs again, its relay has loaded nothing). The check's load
    of w1 answers ``wallet_exists`` (held with other keys): the signer unsealed w1's key in this session, so its
    secret is the stored wallets'. Before, the check failed with it: ``/readyz`` 503 and no wallet created by anyone
    until the owner repeated the switch."""
    h, signer = world
    signer.boot(SECRET_A)
    multisig_wallet(h)
    new = Pubkey.from_string(h.owner_call("POST", agent_key_path(h, "/candidate")).json()["candidate_public_key"])
    chain_shows(h, [h.owner_pub, new])
    h.store.failing = {"apply_audited"}
    try:
        assert h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new)).status_code == 503
    finally:
        h.store.failing = set()
    h.services.signer_secret = signer_secret.SignerSecretCheck()  # the proxy restarted, the signer did not
    h.services.relay.forget()

    ready = h.client.get("/readyz")
    created = create(h, "w2")

    assert ready.status_code == 200, ready.text
    assert created.status_code == 201, created.text
    assert signer.enclave is not None and bytes(signer.enclave.wallet(h.wallet_id).agent) == bytes(new)
