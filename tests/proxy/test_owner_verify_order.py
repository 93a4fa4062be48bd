"""``waiaas owner verify-order``: an owner's freeze, unfreeze or policy counts as having reached the enclave only when
the answer's order receipt verifies under the attested session key and names this wallet, purpose, sequence and
document hash, all taken from the owner's own signed file (security review F1: a taken-over parent swallowed a freeze
and answered ``{"frozen": true, "enclave_acknowledged": true}`` while the enclave went on signing).

The real proxy and enclave (development NSM, mode nitro, anchored on its root and PCR 0) answer the honest orders;
the hostile parent's answers are those files rewritten."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey

from enclave_app.dev_nsm import DEV_MODULE_ID, UnsafeDevelopmentNsm
from enclave_app.order_receipts import OrderReceipt
from parent_proxy.order_receipts import ExpectedOrder
from parent_proxy.owner_cli_common import OwnerInputError
from parent_proxy.owner_verify_order_cli import OrderVerificationError, owner_order, verify_order_answer
from policies.cli import main
from policies.signing import document_sha256
from tests.proxy.api_harness import (
    Harness,
    LoopThread,
    build_harness,
    new_session_key,
    provision,
    running_harness,
    start_enclave,
    stop_enclave,
)
from tests.proxy.harness_calls import order, send
from tests.support.policies import MERCHANT

NONCE = "ab" * 32
PCR0 = bytes([9]) * 48


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Harness, tuple[str, ...]]]:
    """A provisioned wallet behind the real proxy and enclave (mode nitro, development NSM), and the trust options
    that anchor its attestation (root, PCR 0, the nonce sent)."""
    nsm = UnsafeDevelopmentNsm(pcrs={0: PCR0})
    (tmp_path / "root.pem").write_bytes(nsm.root_certificate_pem)
    for h in running_harness(tmp_path, nsm=nsm):
        provision(h)
        yield h, ("--root-pem", str(tmp_path / "root.pem"), "--pcr", f"0={PCR0.hex()}", "--nonce", NONCE)


def verify_order(
    capsys: pytest.CaptureFixture[str], h: Harness, answer: dict[str, Any], mine: dict[str, Any], *options: str,
    kind: str = "--order", owner: Pubkey | None = None,
) -> tuple[int, str, str]:  # fmt: skip
    """``waiaas owner verify-order`` on ``answer`` and the owner's file ``mine`` (a request body), with an attestation
    fetched now with the nonce of the trust options."""
    folder = h.socket.parent
    files = {"answer": answer, "mine": mine, "attestation": h.client.get(f"/v1/attestation?nonce={NONCE}").json()}
    for name, value in files.items():
        (folder / f"{name}.json").write_text(json.dumps(value))
    code = main(["owner", "verify-order", "--answer", str(folder / "answer.json"), kind, str(folder / "mine.json"),
                 "--owner-public-key", str(owner or h.owner_pub), "--attestation", str(folder / "attestation.json"),
                 *options])  # fmt: skip
    out, err = capsys.readouterr()
    return code, out, err


def test_honest_freeze_unfreeze_and_policy_verify(
    world: tuple[Harness, tuple[str, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    h, trust = world
    frozen = send(h, first := order(h, 1))
    assert frozen["enclave_acknowledged"] is True and frozen["receipt"] is not None
    code, out, err = verify_order(capsys, h, frozen, {"envelope": first}, *trust)
    assert code == 0, err
    assert f"applied freeze order 1 to wallet {h.wallet_id}" in out and "the wallet is frozen" in out
    thawed = send(h, second := order(h, 2, "unfreeze"), "unfreeze")
    code, out, err = verify_order(capsys, h, thawed, second, *trust)  # the bare envelope does as well
    assert code == 0 and "the wallet is unfrozen (frozen: false" in out, err
    policy = h.policy(2)
    installed = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": policy}).json()
    assert installed["enclave_installed"] is True and installed["receipt"] is not None
    code, out, err = verify_order(capsys, h, installed, {"envelope": policy}, *trust, kind="--policy")
    assert code == 0 and "applied policy 2 to wallet" in out and "this policy is installed" in out, err
    assert document_sha256(policy["document"]).hex() in out  # the policy hash in force: the owner's document's


def test_a_swallowed_freeze_is_not_verified(
    world: tuple[Harness, tuple[str, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    """F1: the parent keeps the freeze from the enclave and answers as if it had passed it on: with no receipt, with
    a receipt of one of the owner's earlier orders, or with one it signed itself."""
    h, trust = world
    first = send(h, order(h, 1))
    unfrozen = send(h, order(h, 2, "unfreeze"), "unfreeze")
    swallowed = order(h, 3)  # never sent: the enclave goes on signing
    assert h.sign(h.transfer(1000, MERCHANT)).status_code == 200
    claimed = {"wallet_id": h.wallet_id, "frozen": True, "enclave_acknowledged": True, "order_sequence": 3}
    code, _, err = verify_order(capsys, h, claimed, {"envelope": swallowed}, *trust)
    assert code == 1 and "NOT VERIFIED: the answer carries no order receipt" in err, err
    for older, message in (
        (first, "order receipt of sequence 1, expected 3"),
        (unfrozen, "order receipt of purpose 'unfreeze', expected 'freeze'"),
    ):
        code, _, err = verify_order(capsys, h, {**older, **claimed}, {"envelope": swallowed}, *trust)
        assert code == 1 and f"the receipt is not about your order: {message}" in err, err
    own = new_session_key()  # a receipt the parent signs itself, exactly about the swallowed order
    receipt, signature = own.sign_order(OrderReceipt("freeze", h.wallet_id, 3, document_sha256(swallowed["document"]),
                                                     True, None, int(time.time() * 1000), 1))  # fmt: skip
    forged = {**claimed, "receipt": base64.b64encode(receipt).decode(),
              "receipt_signature": base64.b64encode(signature).decode(),
              "session_public_key": str(Pubkey.from_bytes(own.public_key))}  # fmt: skip
    code, _, err = verify_order(capsys, h, forged, {"envelope": swallowed}, *trust)
    assert code == 1 and "not signed by the attested enclave session key" in err, err
    assert f"the answer names session key {Pubkey.from_bytes(own.public_key)}" in err
    hostile = {**forged, "session_public_key": "\x1b]0;owned\x07\x1b[2J"}  # would drive the terminal if printed
    code, _, err = verify_order(capsys, h, hostile, {"envelope": swallowed}, *trust)
    assert code == 1 and "\x1b" not in err and "the answer names" not in err, err


def test_the_document_is_the_owners_own(
    world: tuple[Harness, tuple[str, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The receipt names the document's hash: another order of the same sequence (here: another expiry) that the
    owner signed is not the one the enclave applied, whatever the parent's answer says."""
    h, trust = world
    answer = send(h, order(h, 1))
    other = order(h, 1, lifetime=900)
    code, _, err = verify_order(capsys, h, answer, {"envelope": other}, *trust)
    assert code == 1 and "the receipt is not about your order: order receipt is about another document" in err, err
    tampered = bytearray(base64.b64decode(answer["receipt"]))
    tampered[-1] ^= 1  # the counter's last byte
    code, _, err = verify_order(capsys, h, {**answer, "receipt": base64.b64encode(tampered).decode()}, other, *trust)
    assert code == 1 and "order receipt signature invalid" in err, err


def test_an_order_the_enclave_did_not_acknowledge_has_no_receipt(tmp_path: Path) -> None:
    """The proxy holds the order, the enclave is unreachable: ``enclave_acknowledged`` false, no receipt, and
    nothing for the owner to verify."""
    loop = LoopThread()
    h = build_harness(tmp_path, loop)
    server = start_enclave(loop, h.socket, attestation="none")
    try:
        with h.client:
            provision(h)
            key = bytes(Pubkey.from_string(h.client.get(f"/v1/attestation?nonce={NONCE}").json()["session_public_key"]))
            stop_enclave(h, loop, server)
            answer = send(h, mine := order(h, 1))
            assert answer["enclave_acknowledged"] is False and answer["frozen"] is True
            assert (answer["receipt"], answer["receipt_signature"], answer["session_public_key"]) == (None, None, None)
            expected = owner_order_of(tmp_path, mine, h.owner_pub)
            with pytest.raises(OrderVerificationError, match="the answer carries no order receipt"):
                verify_order_answer(answer, expected, key)
            assert "wallet.enclave_frozen" not in h.audit_events()
    finally:
        server.close()
        loop.stop()


def test_mode_nitro_requires_the_owners_nonce(
    world: tuple[Harness, tuple[str, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    """verify-order shows what the enclave holds now: only the owner's own fresh nonce shows an answer is not one the
    parent kept from an earlier exchange (of a boot that restarted since). Without ``--nonce`` an anchored check is
    bad input (exit 2), in the one-answer form (the receipts route) and in the two-file form. Before: exit 0 on a
    receipts answer asked with another nonce. ``verify-wallet`` keeps it optional (its receipt states what the
    enclave once made, true whatever it does later): a creation answer verifies without it."""
    h, trust = world
    anchor = trust[:4]
    send(h, mine := order(h, 1))
    kept = h.owner_call("POST", f"/v1/wallets/{h.wallet_id}/orders/receipts?nonce={'cd' * 32}").json()
    folder = h.socket.parent
    (folder / "kept.json").write_text(json.dumps(kept))
    (folder / "mine.json").write_text(json.dumps({"envelope": mine}))
    one_answer = ["owner", "verify-order", "--answer", str(folder / "kept.json"), "--order", str(folder / "mine.json"),
                  "--owner-public-key", str(h.owner_pub)]  # fmt: skip
    assert main([*one_answer, *anchor]) == 2
    assert "--nonce is required with --root-pem and --pcr: verify-order shows what the enclave holds now" in (
        capsys.readouterr().err
    )
    assert main([*one_answer, *trust]) == 1  # the owner's nonce is not the one the kept answer was made over
    assert "attestation document refused: nonce mismatch" in capsys.readouterr().err
    assert main([*one_answer, *anchor, "--nonce", "cd" * 32]) == 0
    assert f"applied freeze order 1 to wallet {h.wallet_id}" in capsys.readouterr().out
    thawed = send(h, second := order(h, 2, "unfreeze"), "unfreeze")  # the two-file form: the order route's answer
    code, _, err = verify_order(capsys, h, thawed, second, *anchor)
    assert code == 2 and "--nonce is required" in err, err
    created = h.owner_call(
        "POST", f"/v1/wallets?nonce={NONCE}", {"wallet_id": "w2", "owner_public_key": str(h.owner_pub)}
    )
    (folder / "created.json").write_text(created.text)
    wallet = ["owner", "verify-wallet", "--created", str(folder / "created.json"), "--wallet-id", "w2",
              "--owner-public-key", str(h.owner_pub)]  # fmt: skip
    assert main([*wallet, *anchor]) == 0, capsys.readouterr().err


def test_the_output_names_the_attested_enclave_module(
    world: tuple[Harness, tuple[str, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The document's ``module_id`` names the enclave (on Nitro the instance and the enclave on it: a parent instance
    may run several enclaves of the same image, docs/owner-keys.md), so verify-order prints it; mode none has none."""
    h, trust = world
    code, out, err = verify_order(capsys, h, send(h, mine := order(h, 1)), {"envelope": mine}, *trust)
    assert code == 0 and f"the enclave of module {DEV_MODULE_ID} (session key " in out, err


def owner_order_of(folder: Path, envelope: dict[str, Any], owner: Pubkey) -> ExpectedOrder:
    (folder / "mine.json").write_text(json.dumps(envelope))
    return owner_order(folder / "mine.json", policy=False, owner=owner, what="--order")


def test_bad_input_is_exit_2(world: tuple[Harness, tuple[str, ...]], capsys: pytest.CaptureFixture[str]) -> None:
    h, trust = world
    answer = send(h, mine := order(h, 1))
    stranger = Pubkey.new_unique()
    code, _, err = verify_order(capsys, h, answer, mine, *trust, owner=stranger)
    assert code == 2 and f"neither a freeze nor an unfreeze by owner key {stranger}" in err, err
    code, _, err = verify_order(capsys, h, answer, mine, *trust, kind="--policy")
    assert code == 2 and "--policy: the signature does not verify against the owner key" in err, err
    without_pcr0 = (*trust[:2], "--pcr", f"8={PCR0.hex()}")
    code, _, err = verify_order(capsys, h, answer, mine, *without_pcr0)
    assert code == 2 and "--pcr needs PCR 0" in err, err
    code, _, err = verify_order(capsys, h, answer, mine, *trust, "--accept-unattested")
    assert code == 2 and "--accept-unattested goes without --root-pem and --pcr" in err, err
    code, _, err = verify_order(capsys, h, answer, mine, *trust[4:], "--accept-unattested")
    assert code == 2 and "--nonce goes with --root-pem and --pcr" in err, err
    code, _, err = verify_order(capsys, h, answer, mine, *trust[:4], "--nonce", "00" * 32)
    assert code == 1 and "attestation document refused" in err, err


def test_mode_none_needs_accept_unattested(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for h in running_harness(tmp_path, attestation="none"):
        provision(h)
        answer = send(h, mine := order(h, 1))
        code, out, err = verify_order(capsys, h, answer, mine, "--accept-unattested")
        assert code == 0 and "verified" in out and "proves nothing" in err, err
        assert "verified: the enclave (session key " in out  # no document, no module to name
        code, _, err = verify_order(capsys, h, answer, mine)
        assert code == 1 and "accept it explicitly" in err, err


def test_a_file_nested_too_deeply_is_bad_input(tmp_path: Path) -> None:
    """JSON nested deeper than the parser goes is bad input (exit 2), as for verify-wallet, not a traceback."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(OwnerInputError, match="--order: not JSON \\(or nested too deeply\\)"):
        owner_order(deep, policy=False, owner=Pubkey.new_unique(), what="--order")
