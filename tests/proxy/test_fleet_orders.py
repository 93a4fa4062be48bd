"""Owner orders across a fleet: two hosts (cdk.json's default ``waiaas:hostCount`` is 2), each a proxy and its own
real enclave, over one store, one owner. An order goes to the host the load balancer picks (here: A); the other
host's enclave (B), which loaded the wallet before, gets it from the store at its next request
(`parent_proxy.relay_orders`), with its own receipt recorded, and ``waiaas owner verify-order`` checks B's enclave
from one answer of B's (``POST /v1/wallets/{id}/orders/receipts?nonce=``, carrying B's attestation).

Before (review finding, reproduced): B's enclave was never sent the freeze, so a taken-over host B still got the
agent's signatures from it while the owner's verify-order passed against A; and the honest check whose attestation
the load balancer fetched from B failed, blaming an earlier boot or a forging parent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey

from enclave_app.client import EnclaveClient
from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from enclave_app.errors import EnclaveRequestError, ReceiptError
from enclave_app.order_receipts import verify_order_receipt
from enclave_app.protocol import ErrorCode, SpentEntry
from enclave_app.transport import UnixAddress
from policies.cli import main
from policies.document import policy_from_object
from tests.proxy.api_harness import (
    Harness,
    LoopThread,
    refused_records,
    start_enclave,
    stop_enclave,
)
from tests.proxy.fleet_harness import two_hosts
from tests.proxy.harness_calls import order, records, send, sign_message
from tests.support.policies import MERCHANT

PCR0 = bytes([9]) * 48
NONCE = "ab" * 32


@dataclass
class Fleet:
    a: Harness
    b: Harness
    loop: LoopThread
    nsm: UnsafeDevelopmentNsm
    trust: tuple[str, ...]
    folder: Path
    servers: list[asyncio.Server]
    """A's enclave server, then B's."""


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A wallet created and given its policy through host A; then an agent request through host B, so B's enclave
    holds the wallet and its policy too (before any owner order)."""
    nsm = UnsafeDevelopmentNsm(pcrs={0: PCR0})  # one root for the fleet, as every Nitro host chains to AWS's root
    (tmp_path / "root.pem").write_bytes(nsm.root_certificate_pem)
    trust = ("--root-pem", str(tmp_path / "root.pem"), "--pcr", f"0={PCR0.hex()}", "--nonce", NONCE)
    with two_hosts(tmp_path, nsm) as (a, b, loop, servers):
        assert b.sign(b.transfer(1000, MERCHANT)).status_code == 200
        yield Fleet(a, b, loop, nsm, trust, tmp_path, servers)


def session_key(h: Harness) -> bytes:
    """The session key of ``h``'s enclave, as its attestation answer names it."""
    return bytes(Pubkey.from_string(h.client.get(f"/v1/attestation?nonce={NONCE}").json()["session_public_key"]))


def enclave_signs(fleet: Fleet, h: Harness) -> bool:
    """Whether ``h``'s enclave, asked directly (a taken-over host skips its proxy's checks), signs a small transfer the
    policy allows; False when it refuses on its own because the wallet is frozen."""
    client = EnclaveClient(UnixAddress(str(h.socket)), timeout=5.0)
    policy = policy_from_object(fleet.a.policy()["document"])
    spent = tuple(SpentEntry(asset, window, 0) for asset, window in policy.spend_windows())  # the parent's word
    try:
        decision = fleet.loop.run(client.sign_transaction(h.wallet_id, h.transfer(1000, MERCHANT), spent=spent))
    except EnclaveRequestError as exc:
        assert exc.code == ErrorCode.WALLET_FROZEN, exc
        return False
    assert decision.signature is not None, decision.decision
    return True


def receipts(h: Harness) -> dict[str, Any]:
    """``h``'s answer to the owner's ``POST /v1/wallets/{id}/orders/receipts`` (200 asserted)."""
    answer = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/orders/receipts?nonce={NONCE}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def verify(
    capsys: pytest.CaptureFixture[str], fleet: Fleet, answer: dict[str, Any], mine: dict[str, Any], *,
    attestation: dict[str, Any] | None = None, kind: str = "--order",
) -> tuple[int, str, str]:  # fmt: skip
    """``waiaas owner verify-order`` on ``answer``; with ``attestation`` in a file of its own, else the answer's."""
    files = {"answer": answer, "mine": mine, "attestation": attestation}
    for name, value in files.items():
        (fleet.folder / f"{name}.json").write_text(json.dumps(value))
    separate = () if attestation is None else ("--attestation", str(fleet.folder / "attestation.json"))
    code = main(["owner", "verify-order", "--answer", str(fleet.folder / "answer.json"), kind,
                 str(fleet.folder / "mine.json"), "--owner-public-key", str(fleet.a.owner_pub), *separate,
                 *fleet.trust])  # fmt: skip
    out, err = capsys.readouterr()
    return code, out, err


def recorded_under(h: Harness, event: str, key: bytes) -> list[int]:
    """The sequences of the ``event`` order-receipt records whose receipt verifies under ``key``."""
    found = []
    for record in records(h):
        if record.event_type != event or record.receipt is None:
            continue
        try:
            stated = verify_order_receipt(record.receipt[:-64], record.receipt[-64:], key)
        except ReceiptError:
            continue
        found.append(stated.sequence)
    return found


def test_a_freeze_through_one_host_reaches_the_other_and_verifies_there(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = fleet.a, fleet.b
    freeze = order(a, 1)
    assert send(a, freeze)["enclave_acknowledged"] is True  # the load balancer picked host A
    assert b.sign(b.transfer(1000, MERCHANT)).status_code == 403  # host B's proxy refuses from the store ...
    assert not enclave_signs(fleet, b)  # ... and B's enclave, told at that first refusal, refuses on its own
    key_b = session_key(b)
    assert key_b != session_key(a) and recorded_under(b, "wallet.enclave_frozen", key_b) == [1]  # B's receipt
    answer = receipts(b)  # the owner asks; the load balancer picks host B
    assert answer["frozen"] is True and answer["order"]["sequence"] == 1
    assert answer["attestation"]["session_public_key"] == str(Pubkey.from_bytes(key_b))
    assert answer["order"]["session_public_key"] == str(Pubkey.from_bytes(key_b))
    code, out, err = verify(capsys, fleet, answer, {"envelope": freeze})
    assert code == 0, err
    assert f"session key {Pubkey.from_bytes(key_b)}) applied freeze order 1" in out and "the wallet is frozen" in out
    code, out, err = verify(capsys, fleet, receipts(a), {"envelope": freeze})  # and host A's, from A's answer
    assert code == 0 and f"session key {Pubkey.from_bytes(session_key(a))})" in out, err


def test_a_refused_message_request_brings_the_freeze_too(fleet: Fleet) -> None:
    a, b = fleet.a, fleet.b
    send(a, order(a, 1))
    refused = sign_message(b)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "wallet_frozen", refused.text
    assert not enclave_signs(fleet, b)
    assert recorded_under(b, "wallet.enclave_frozen", session_key(b)) == [1]


def test_an_unfreeze_through_one_host_reaches_the_other(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = fleet.a, fleet.b
    send(a, order(a, 1))
    assert b.sign(b.transfer(1000, MERCHANT)).status_code == 403  # refused: B's enclave is sent the freeze
    assert not enclave_signs(fleet, b)
    unfreeze = order(a, 2, "unfreeze")
    assert send(a, unfreeze, "unfreeze")["enclave_acknowledged"] is True  # through host A
    assert b.sign(b.transfer(1000, MERCHANT)).status_code == 200  # B's enclave was sent the unfreeze first
    key_b = session_key(b)
    assert recorded_under(b, "wallet.enclave_unfrozen", key_b) == [2]
    code, out, err = verify(capsys, fleet, receipts(b), unfreeze)
    assert code == 0 and "applied unfreeze order 2" in out and "the wallet is unfrozen" in out, err


def test_a_policy_check_from_the_other_host_verifies(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = fleet.a, fleet.b
    policy = a.policy(2)
    assert a.owner_call("PUT", f"/v1/wallets/{a.wallet_id}/policy", {"envelope": policy}).status_code == 200
    answer = receipts(b)  # B installs it now, and shows its own receipt
    assert answer["policy"]["sequence"] == 2 and answer["order"]["receipt"] is None  # no order yet
    code, out, err = verify(capsys, fleet, answer, {"envelope": policy}, kind="--policy")
    assert code == 0 and "applied policy 2" in out, err
    code, _, err = verify(capsys, fleet, answer, {"envelope": order(a, 1)})
    assert code == 1 and "the answer carries no order receipt" in err, err


def test_the_two_file_form_names_another_hosts_enclave(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = fleet.a, fleet.b
    freeze = order(a, 1)
    answer = send(a, freeze)
    attestation_a = a.client.get(f"/v1/attestation?nonce={NONCE}").json()
    code, out, err = verify(capsys, fleet, answer, {"envelope": freeze}, attestation=attestation_a)
    assert code == 0 and "the wallet is frozen" in out, err  # the form of one host still works
    attestation_b = b.client.get(f"/v1/attestation?nonce={NONCE}").json()  # the load balancer picked B this time
    code, _, err = verify(capsys, fleet, answer, {"envelope": freeze}, attestation=attestation_b)
    assert code == 1 and "a receipt of another host's enclave" in err and "/orders/receipts" in err, err


def test_an_expired_freeze_is_held_on_the_parents_word(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """The stored freeze reaches B after its expiry (an hour at most): B's enclave refuses it (``order_invalid``), so
    the wallet is held frozen by the load's frozen flag instead; there is no receipt of B's to show."""
    a, b = fleet.a, fleet.b
    freeze = order(a, 1, lifetime=60)
    send(a, freeze)
    b.clock.offset = 120.0  # host B (proxy and enclave) after the order's expiry
    assert b.sign(b.transfer(1000, MERCHANT)).status_code == 403
    assert not enclave_signs(fleet, b)
    assert recorded_under(b, "wallet.enclave_frozen", session_key(b)) == []
    answer = receipts(b)
    assert answer["frozen"] is True and answer["order"]["receipt"] is None
    code, _, err = verify(capsys, fleet, answer, {"envelope": freeze})
    assert code == 1 and "the answer carries no order receipt" in err, err


def test_an_unfreeze_the_other_enclave_refuses_fails_safe(fleet: Fleet) -> None:
    """The stored unfreeze reaches B after its expiry: B's enclave keeps its freeze and refuses on its own (403,
    nothing signed) though the store says unfrozen, until a newer unfreeze reaches it."""
    a, b = fleet.a, fleet.b
    send(a, order(a, 1))
    assert b.sign(b.transfer(1000, MERCHANT)).status_code == 403  # refused: B's enclave is sent the freeze
    send(a, order(a, 2, "unfreeze", lifetime=60), "unfreeze")
    b.clock.offset = 120.0
    refused = b.sign(b.transfer(1000, MERCHANT))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "wallet_frozen", refused.text
    assert "transaction.signed" not in [r.event_type for r in records(b)][-3:]
    send(a, order(a, 3, "unfreeze"), "unfreeze")  # the owner's fresh unfreeze, through A again
    assert b.sign(b.transfer(1000, MERCHANT)).status_code == 200
    assert recorded_under(b, "wallet.enclave_unfrozen", session_key(b)) == [3]


def test_a_propagated_order_whose_receipt_is_not_recorded_fails_the_request(fleet: Fleet) -> None:
    """B's enclave applies the stored unfreeze but its receipt cannot be recorded: the request fails (here 409, the
    store's refusal of the injected constraint failure), nothing is signed; the next request finds the order applied
    (``order_stale``) and goes on."""
    a, b = fleet.a, fleet.b
    send(a, order(a, 1))
    assert b.sign(b.transfer(1000, MERCHANT)).status_code == 403  # refused: B's enclave is sent the freeze
    assert not enclave_signs(fleet, b)
    send(a, order(a, 2, "unfreeze"), "unfreeze")
    signed = [r.seq for r in records(b) if r.event_type == "transaction.signed"]
    with refused_records(b, "wallet.enclave_unfrozen"):
        failed = b.sign(b.transfer(1000, MERCHANT))
    assert failed.status_code == 409, failed.text
    assert [r.seq for r in records(b) if r.event_type == "transaction.signed"] == signed
    assert b.sign(b.transfer(1000, MERCHANT)).status_code == 200


def test_after_a_restart_the_stored_freeze_is_sent_with_its_receipt(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """The enclave restarts after the freeze: the owner's check loads the wallet into the new boot and sends the
    stored freeze itself (not only the load's frozen flag), so the new session's receipt verifies."""
    a = fleet.a
    freeze = order(a, 1)
    send(a, freeze)
    old = session_key(a)
    stop_enclave(a, fleet.loop, fleet.servers[0])
    fleet.servers[0] = start_enclave(fleet.loop, a.socket, nsm=fleet.nsm, clock=a.clock)
    answer = receipts(a)
    new = session_key(a)
    assert new != old and answer["attestation"]["session_public_key"] == str(Pubkey.from_bytes(new))
    code, out, err = verify(capsys, fleet, answer, {"envelope": freeze})
    assert code == 0 and f"session key {Pubkey.from_bytes(new)}) applied freeze order 1" in out, err
    assert not enclave_signs(fleet, a) and recorded_under(a, "wallet.enclave_frozen", new) == [1]


def test_a_wallet_created_through_one_host_verifies_from_its_answer(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """``verify-wallet`` has the same host-matching problem: its one-answer form (``POST /v1/wallets?nonce=``)
    checks the host that made the key; the attestation of the other host fails, naming that cause."""
    a, b = fleet.a, fleet.b
    body = {"wallet_id": "w2", "owner_public_key": str(a.owner_pub)}
    created = a.owner_call("POST", f"/v1/wallets?nonce={NONCE}", body)
    assert created.status_code == 201, created.text
    assert created.json()["attestation"]["session_public_key"] == str(Pubkey.from_bytes(session_key(a)))
    (fleet.folder / "created.json").write_text(json.dumps(created.json()))
    command = ["owner", "verify-wallet", "--created", str(fleet.folder / "created.json"), "--wallet-id", "w2",
               "--owner-public-key", str(a.owner_pub), *fleet.trust]  # fmt: skip
    code = main(command)
    out, err = capsys.readouterr()
    assert code == 0 and "verified: the enclave provisioned wallet w2" in out, err
    (fleet.folder / "attestation.json").write_text(json.dumps(b.client.get(f"/v1/attestation?nonce={NONCE}").json()))
    code = main([*command, "--attestation", str(fleet.folder / "attestation.json")])  # fetched from host B
    assert code == 1 and "a receipt of another host's enclave" in capsys.readouterr().err
