"""``waiaas agent verify-receipt`` on answers made from keys the test holds (`tests.proxy.agent_answers`): each check
of `parent_proxy.agent_receipts` refuses an answer changed in what it looks at, and only that, while everything else
stays signed by the attested session key. The real proxy and enclave: tests/proxy/test_agent_verify_live.py."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from solders.pubkey import Pubkey
from solders.signature import Signature

from enclave_app.dev_nsm import DEV_MODULE_ID, UnsafeDevelopmentNsm
from enclave_app.receipts import (
    AGENT_KEY_RECEIPT_DOMAIN,
    ORDER_RECEIPT_DOMAIN,
    PROVISION_RECEIPT_DOMAIN,
    RECEIPT_DOMAIN,
    SessionKey,
)
from parent_proxy.openapi import openapi_document
from tests.proxy.agent_answers import NONCE, PCR0, AgentWorld, agent_main


@pytest.fixture
def world(tmp_path: Path) -> AgentWorld:
    return AgentWorld(tmp_path)


def verify(
    capsys: pytest.CaptureFixture[str], world: AgentWorld, answer: dict[str, Any], transaction: bytes, *options: str,
    attestation: dict[str, Any] | None = None, policy: tuple[str, ...] | None = None, trust: tuple[str, ...] = (),
) -> tuple[int, str, str]:  # fmt: skip
    """The command on ``answer`` with the agent's own ``transaction``, wallet ``w1`` and agent key, the policy (by
    default the world's envelope and owner key), an attestation file (by default the world's session key over
    `NONCE`) and the anchor (by default the world's, with `NONCE`)."""
    if policy is None:
        policy = ("--policy", world.write("policy", world.envelope()), "--owner-public-key",
                  str(Pubkey.from_bytes(world.owner.public_key().public_bytes_raw())))  # fmt: skip
    code = agent_main([
        "agent", "verify-receipt", "--answer", world.write("answer", answer),
        "--transaction", base64.b64encode(transaction).decode(), "--wallet-id", "w1",
        "--agent-public-key", str(world.agent_public_key), *policy,
        "--attestation", world.write("attestation", attestation or world.attestation()),
        *(trust or (*world.trust(), "--nonce", NONCE)), *options,
    ])  # fmt: skip
    out, err = capsys.readouterr()
    return code, out, err


def refused(result: tuple[int, str, str], message: str) -> None:
    code, out, err = result
    assert code == 1 and out == "" and "NOT VERIFIED" in err and message in err, (code, out, err)
    assert err.count("\n") == 1  # one line


def test_an_honest_answer_verifies(world: AgentWorld, capsys: pytest.CaptureFixture[str]) -> None:
    mine = world.transaction()
    answer = world.answer(mine)
    code, out, err = verify(capsys, world, answer, mine)
    assert code == 0 and err == "", err
    assert out.startswith(f"verified: the enclave of module {DEV_MODULE_ID} (session key ")
    assert answer["signature"] in out and world.policy_hash().hex() in out and "receipt counter 7" in out
    # The policy by its document hash alone, instead of the signed envelope.
    code, out, err = verify(capsys, world, answer, mine, policy=("--policy-sha256", world.policy_hash().hex()))
    assert code == 0 and out.startswith("verified"), err


def test_the_answer_from_stdin(
    world: AgentWorld, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = world.transaction()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(json.dumps(world.answer(mine)).encode())))
    policy = ("--policy-sha256", world.policy_hash().hex())
    code = agent_main(["agent", "verify-receipt", "--answer", "-", "--transaction", base64.b64encode(mine).decode(),
                       "--wallet-id", "w1", "--agent-public-key", str(world.agent_public_key), *policy,
                       "--attestation", world.write("attestation", world.attestation()), *world.trust(),
                       "--nonce", NONCE])  # fmt: skip
    assert code == 0, capsys.readouterr().err


def test_a_receipt_for_another_transaction_is_refused(world: AgentWorld, capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile proxy answers request B with request A's answer: signed, attested, same wallet and policy; only the
    agent's own message hash tells them apart."""
    request_a, request_b = world.transaction(1000), world.transaction(2000)
    refused(verify(capsys, world, world.answer(request_a), request_b), "receipt is about another message")
    # A's receipt spliced into an answer that carries B's signed transaction: the same.
    spliced = world.answer(request_b, receipt_for=request_a)
    refused(verify(capsys, world, spliced, request_b), "receipt is about another message")


def test_a_receipt_for_another_wallet_is_refused(world: AgentWorld, capsys: pytest.CaptureFixture[str]) -> None:
    mine = world.transaction()
    refused(verify(capsys, world, world.answer(mine, wallet_id="w2"), mine), "receipt names another wallet")


def test_another_policy_is_refused(world: AgentWorld, capsys: pytest.CaptureFixture[str]) -> None:
    """The enclave decided under a policy other than the one the agent expects (one the parent put back, say)."""
    mine = world.transaction()
    older = world.policy_hash(sequence=2)  # any other document: another hash
    refused(verify(capsys, world, world.answer(mine, policy_hash=older), mine), "the enclave decided under policy")
    refused(verify(capsys, world, world.answer(mine, policy_hash=None), mine), "decided under policy none")
    by_hash = ("--policy-sha256", world.policy_hash().hex())
    result = verify(capsys, world, world.answer(mine, policy_hash=older), mine, policy=by_hash)
    refused(result, f"not the one you expect ({world.policy_hash().hex()})")
    # The same document hash, another sequence (only the envelope gives the sequence).
    renumbered = world.answer(mine, policy_sequence=2)
    refused(verify(capsys, world, renumbered, mine), "policy sequence 2, not 1")


def test_an_older_policy_the_parent_serves_is_refused_only_below_the_owners_minimum(
    world: AgentWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    """A taken-over parent put back the owner's older policy (sequence 1) after an enclave restart and serves its
    envelope from ``GET .../policy``: the owner's signature on it verifies, so only the minimum sequence the owner
    gave the agent tells it from the current one (sequence 2)."""
    mine = world.transaction()
    answer = world.answer(mine, policy_sequence=1, policy_hash=world.policy_hash(sequence=1))
    owner = str(Pubkey.from_bytes(world.owner.public_key().public_bytes_raw()))
    served = ("--policy", world.write("served", world.envelope(sequence=1)), "--owner-public-key", owner)
    assert verify(capsys, world, answer, mine, policy=served)[0] == 0  # the parent's word alone cannot tell
    refused(verify(capsys, world, answer, mine, "--min-policy-sequence", "2", policy=served),
            "policy sequence 1, below 2, the lowest your owner told you is in force")  # fmt: skip
    by_hash = ("--policy-sha256", world.policy_hash(sequence=1).hex())
    refused(verify(capsys, world, answer, mine, "--min-policy-sequence", "2", policy=by_hash), "below 2")
    assert verify(capsys, world, answer, mine, "--min-policy-sequence", "1", policy=served)[0] == 0
    current = world.answer(mine, policy_sequence=2, policy_hash=world.policy_hash(sequence=2))
    now = ("--policy", world.write("current", world.envelope(sequence=2)), "--owner-public-key", owner)
    assert verify(capsys, world, current, mine, "--min-policy-sequence", "2", policy=now)[0] == 0
    code, _, err = verify(capsys, world, answer, mine, "--min-policy-sequence", "0", policy=served)
    assert code == 2 and "--min-policy-sequence must be at least 1" in err, err


def test_a_receipt_signed_by_another_key_is_refused(world: AgentWorld, capsys: pytest.CaptureFixture[str]) -> None:
    mine = world.transaction()
    other = SessionKey(bytes(range(32)))
    refused(verify(capsys, world, world.answer(mine, session=other), mine),
            "not signed by the attested enclave session key")  # fmt: skip
    # The attestation of that other key, with the answer's key: the document names the other one.
    mixed = {**world.attestation(other.public_key), "session_public_key": str(Pubkey.from_bytes(other.public_key))}
    refused(verify(capsys, world, world.answer(mine), mine, attestation=mixed), "not signed by the attested")
    tampered = world.attestation()
    tampered["session_public_key"] = str(Pubkey.from_bytes(other.public_key))
    refused(verify(capsys, world, world.answer(mine), mine, attestation=tampered), "does not match the attested one")


def test_a_wrong_attestation_is_refused(world: AgentWorld, capsys: pytest.CaptureFixture[str]) -> None:
    mine = world.transaction()
    answer = world.answer(mine)
    root, pcr = world.trust()[:2], world.trust()[2:]
    wrong_pcr = (*root, "--pcr", f"0={bytes(48).hex()}", "--nonce", NONCE)
    refused(verify(capsys, world, answer, mine, trust=wrong_pcr), "attestation document refused")
    another_nonce = (*root, *pcr, "--nonce", "00" * 32)
    refused(verify(capsys, world, answer, mine, trust=another_nonce), "attestation document refused")
    (world.folder / "other.pem").write_bytes(UnsafeDevelopmentNsm(pcrs={0: PCR0}).root_certificate_pem)
    another_root = ("--root-pem", str(world.folder / "other.pem"), *pcr, "--nonce", NONCE)
    refused(verify(capsys, world, answer, mine, trust=another_root), "attestation document refused")
    unattested = {"document": None, "mode": "none", "reason": "self-hosted", "enclave_state": "ready",
                  "session_public_key": str(Pubkey.from_bytes(world.session.public_key))}  # fmt: skip
    refused(verify(capsys, world, answer, mine, attestation=unattested), "requires an attested session key")
    # Mode none is accepted only when asked for, with a warning that it proves nothing.
    code, out, err = verify(capsys, world, answer, mine, attestation=unattested, trust=("--accept-unattested",))
    assert code == 0 and out.startswith("verified: the enclave (session key") and "proves nothing" in err


def test_the_decision_and_the_signed_transaction_are_checked(
    world: AgentWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = world.transaction()
    shown_otherwise = world.answer(mine)
    shown_otherwise["decision"]["reasons"] = [{"rule": "made.up"}]
    refused(verify(capsys, world, shown_otherwise, mine), "receipt states other reasons than the decision")
    not_the_agent = world.answer(mine, signer=Ed25519PrivateKey.generate())
    refused(verify(capsys, world, not_the_agent, mine), "not your transaction signed by your agent key")
    pending = {"status": "pending_approval", "request_id": "r1", "approval_id": "a1", "decision": {}}
    refused(verify(capsys, world, pending, mine), "not a signed transaction")
    denied_receipt = world.answer(mine, verdict="deny")
    refused(verify(capsys, world, denied_receipt, mine), "receipt states no signature")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--transaction": "not base64!"}, "--transaction is not a base64 Solana transaction"),
        ({"--transaction": base64.b64encode(b"\x01" * 40).decode()}, "--transaction is not a base64 Solana"),
        ({"--wallet-id": "../x"}, "--wallet-id is not a wallet id"),
        ({"--agent-public-key": "nope"}, "--agent-public-key is not a base58 public key"),
        ({"--owner-public-key": str(Pubkey.new_unique())}, "--policy: the signature does not verify"),
        ({"--policy-envelope-wallet": "w2"}, "--policy is wallet 'w2''s, not 'w1'"),
        ({"--nonce": "zz"}, "--nonce is not hex"),
    ],
)
def test_bad_input_is_exit_2(
    world: AgentWorld, capsys: pytest.CaptureFixture[str], change: dict[str, str], message: str
) -> None:
    mine = world.transaction()
    owner = str(Pubkey.from_bytes(world.owner.public_key().public_bytes_raw()))
    envelope = world.envelope(wallet_id=change.pop("--policy-envelope-wallet", "w1"))
    options = {"--answer": world.write("answer", world.answer(mine)), "--transaction": base64.b64encode(mine).decode(),
               "--wallet-id": "w1", "--agent-public-key": str(world.agent_public_key),
               "--policy": world.write("policy", envelope), "--owner-public-key": owner,
               "--attestation": world.write("attestation", world.attestation()), "--nonce": NONCE,
               **change}  # fmt: skip
    argv = [item for pair in options.items() for item in pair]
    code = agent_main(["agent", "verify-receipt", *argv, *world.trust()])
    _, err = capsys.readouterr()
    assert code == 2 and message in err and "NOT VERIFIED" not in err, err


def test_options_that_do_not_go_together_are_exit_2(world: AgentWorld, capsys: pytest.CaptureFixture[str]) -> None:
    mine = world.transaction()
    common = ["agent", "verify-receipt", "--answer", world.write("answer", world.answer(mine)),
              "--transaction", base64.b64encode(mine).decode(), "--wallet-id", "w1",
              "--agent-public-key", str(world.agent_public_key)]  # fmt: skip
    by_hash = ["--policy-sha256", world.policy_hash().hex()]
    attestation = ["--attestation", world.write("attestation", world.attestation()), *world.trust()]
    cases = {
        "--policy needs --owner-public-key": [*common, "--policy", world.write("p", world.envelope()), *attestation],
        "--owner-public-key goes with --policy": [*common, *by_hash, "--owner-public-key", str(Pubkey.new_unique()),
                                                  *attestation],
        "--policy-sha256 is not 64 hex digits": [*common, "--policy-sha256", "ab" * 31, *attestation],
        "--nonce goes with --attestation": [*common, *by_hash, "--url", "https://proxy.example", *world.trust(),
                                            "--nonce", NONCE],
        "--tries must be 1-100": [*common, *by_hash, "--url", "https://proxy.example", *world.trust(), "--tries", "0"],
        "--url must be an http(s) URL": [*common, *by_hash, "--url", "proxy.example", *world.trust()],
        "--accept-unattested goes without --root-pem": [*common, *by_hash, *attestation, "--accept-unattested"],
    }  # fmt: skip
    for message, argv in cases.items():
        assert agent_main(argv) == 2, message
        assert message in capsys.readouterr().err


def test_the_openapi_text_names_each_receipt_signatures_domain(world: AgentWorld) -> None:
    """The schema says what the session key signs (the domain prefix, then the receipt), for each kind of receipt;
    before, "Ed25519 signature over the receipt", which a plain check over the receipt alone fails (repro r1 (b)).
    Following the text verifies a decision receipt."""
    components = openapi_document()["components"]["schemas"]
    signatures = {
        RECEIPT_DOMAIN: [components["Receipt"]["properties"]["signature"]],
        AGENT_KEY_RECEIPT_DOMAIN: [components["AgentKeyReceipt"]["properties"]["signature"]],
        PROVISION_RECEIPT_DOMAIN: [components["CreatedWallet"]["properties"]["provision_receipt_signature"]],
        ORDER_RECEIPT_DOMAIN: [components[name]["properties"]["receipt_signature"]
                               for name in ("PolicyInstalled", "FreezeState", "HostOrderReceipt")],
    }  # fmt: skip
    for domain, fields in signatures.items():
        escaped = domain.decode("latin-1").encode("unicode_escape").decode()  # b'\xffwaiaas/receipt\x00' as text
        for schema in fields:
            assert f"domain prefix b'{escaped}' (hex {domain.hex()}) followed by the receipt" in schema["description"]
    text = signatures[RECEIPT_DOMAIN][0]["description"]
    prefix = bytes.fromhex(re.search(r"\(hex ([0-9a-f]+)\)", text).group(1))  # type: ignore[union-attr]
    answer = world.answer(world.transaction())["receipt"]
    receipt, signature = base64.b64decode(answer["receipt"]), bytes(Signature.from_string(answer["signature"]))
    Ed25519PublicKey.from_public_bytes(world.session.public_key).verify(signature, prefix + receipt)
