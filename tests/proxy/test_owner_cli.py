"""``waiaas owner``: local keypair files and KMS (the test KMS on moto, STS role chain with MFA on moto)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.hash import Hash
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from parent_proxy.owner_cli_common import envelope
from parent_proxy.owner_signers import (
    MAX_KMS_RAW_MESSAGE_BYTES,
    KmsOwnerSigner,
    LocalOwnerSigner,
    OwnerKeyError,
    RoleChain,
    assume_role_chain,
)
from parent_proxy.sign_parts import message_hash
from policies.canonical import canonical_bytes
from policies.cli import main
from policies.document import MAX_SAFE_INT
from policies.orders import MAX_SEQUENCE, check_approval, check_freeze_order
from policies.signing import POLICY_PURPOSE, load_signed_policy
from selfhost.local_stack import free_port
from tests.proxy.hooked_client import record_signs
from tests.support.aws_env import use_test_credentials
from tests.support.policies import EXAMPLE_PATH, MERCHANT, example_policy, owner_public_key


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def mfa_code_file(directory: Path, code: str = "123456") -> Path:
    """``--mfa-code-file``: a mode-0600 file whose first line is the MFA code."""
    path = directory / "mfa-code"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(code + "\n")
    return path


def test_pubkey_and_sign_policy_with_a_keypair_file(
    keypair: tuple[Path, Ed25519PrivateKey], capsys: pytest.CaptureFixture[str]
) -> None:
    path, key = keypair
    code, out, _ = run_cli(capsys, "owner", "--keypair", str(path), "pubkey")
    assert code == 0 and out.strip() == str(owner_public_key(key))
    code, out, _ = run_cli(capsys, "owner", "--keypair", str(path), "sign-policy", str(EXAMPLE_PATH))
    assert code == 0
    policy = load_signed_policy(out, owner=owner_public_key(key), wallet_id="demo-wallet")
    assert policy.sequence == 1


def test_sign_policy_sets_the_expiry_on_request(
    keypair: tuple[Path, Ed25519PrivateKey], capsys: pytest.CaptureFixture[str]
) -> None:
    path, key = keypair
    before = int(time.time())
    code, out, _ = run_cli(
        capsys, "owner", "--keypair", str(path), "sign-policy", str(EXAMPLE_PATH), "--expires-in-days", "30"
    )
    assert code == 0
    policy = load_signed_policy(out, owner=owner_public_key(key), wallet_id="demo-wallet")
    assert policy.expires_at is not None and before + 30 * 86_400 <= policy.expires_at <= int(time.time()) + 30 * 86_400
    for days in ("0", "3661", "-1"):
        code, out, err = run_cli(
            capsys, "owner", "--keypair", str(path), "sign-policy", str(EXAMPLE_PATH), "--expires-in-days", days
        )
        assert code == 2 and "--expires-in-days must be 1-3660" in err and out == ""


def test_freeze_and_approval_orders_verify(
    keypair: tuple[Path, Ed25519PrivateKey], capsys: pytest.CaptureFixture[str]
) -> None:
    path, key = keypair
    owner = owner_public_key(key)
    code, out, _ = run_cli(capsys, "owner", "--keypair", str(path), "freeze", "--wallet", "w1", "--sequence", "3")
    assert code == 0
    assert check_freeze_order(out.encode(), freeze=True, owner=owner, wallet_id="w1", now=time.time()) == 3
    with pytest.raises(Exception, match="signature"):
        check_freeze_order(out.encode(), freeze=False, owner=owner, wallet_id="w1", now=time.time())
    agent = Pubkey.new_unique()
    ix = transfer(TransferParams(from_pubkey=agent, to_pubkey=MERCHANT, lamports=5))
    tx = bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], agent, Hash.new_unique())))
    b64 = base64.b64encode(tx).decode()
    code, out, _ = run_cli(capsys, "owner", "--keypair", str(path), "approve", "--wallet", "w1", "--transaction", b64)
    assert code == 0
    check_approval(out.encode(), owner=owner, wallet_id="w1", message_hash=message_hash(tx), now=time.time())


@pytest.mark.parametrize("wallet", ["acme:agent-1", "_w1", "w" * 65, "w#1"])
def test_no_order_is_signed_for_an_id_no_wallet_can_have(
    keypair: tuple[Path, Ed25519PrivateKey], capsys: pytest.CaptureFixture[str], wallet: str
) -> None:
    """The wallet-id rule of the API, the policies and the enclave (`policies.identifiers`): an order for another id
    could never be used. Before: signed (exit 0)."""
    path, _ = keypair
    agent, new_agent = Pubkey.new_unique(), str(Pubkey.new_unique())
    ix = transfer(TransferParams(from_pubkey=agent, to_pubkey=MERCHANT, lamports=5))
    tx = base64.b64encode(bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], agent, Hash.new_unique()))))
    switch = ["sign-key-switch", "--wallet-id", wallet, "--agent-key", str(agent), "--new-agent-key", new_agent]
    for order in (
        ["freeze", "--wallet", wallet, "--sequence", "3"],
        ["approve", "--wallet", wallet, "--transaction", tx.decode()],
        switch,
    ):
        code, out, err = run_cli(capsys, "owner", "--keypair", str(path), *order)
        assert (code, out) == (2, ""), order
        assert "is not a wallet id (1-64 characters of A-Z a-z 0-9 . _ -, the first a letter or digit)" in err


def test_bad_inputs_exit_2(keypair: tuple[Path, Ed25519PrivateKey], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = keypair
    code, _, err = run_cli(capsys, "owner", "pubkey")
    assert code == 2 and "exactly one" in err
    os.chmod(path, 0o644)
    code, _, err = run_cli(capsys, "owner", "--keypair", str(path), "pubkey")
    assert code == 2 and "chmod 600" in err
    os.chmod(path, 0o600)
    bad = example_policy()
    bad["rules"]["programs"] = "everything"
    policy_file = path.parent / "bad.json"
    policy_file.write_text(json.dumps(bad))
    code, _, err = run_cli(capsys, "owner", "--keypair", str(path), "sign-policy", str(policy_file))
    assert code == 2 and "rules.programs" in err
    code, _, err = run_cli(
        capsys, "owner", "--keypair", str(path), "freeze", "--wallet", "w1", "--sequence", "1", "--expires-in", "99999"
    )
    assert code == 2 and "expires-in" in err


def test_sequences_near_or_past_the_maximum_are_not_signed_by_default(
    keypair: tuple[Path, Ed25519PrivateKey], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A parent showing order_sequence 2**53 - 1 must not get the owner's next order signed at 2**53 (the last one
    there is: no freeze is ever accepted again), nor any sequence above 2**32 without --allow-sequence-jump
    (security review, F4); the same for a policy's sequence."""
    path, key = keypair
    owner = owner_public_key(key)
    order = ["owner", "--keypair", str(path), "freeze", "--wallet", "w1", "--sequence"]
    for too_big in (MAX_SEQUENCE + 1, 2**64):
        code, out, err = run_cli(capsys, *order, str(too_big), "--allow-sequence-jump")
        assert (code, out) == (2, "") and f"--sequence must be 1-{MAX_SEQUENCE}" in err, err
    for jump in (2**32 + 1, MAX_SEQUENCE):
        code, out, err = run_cli(capsys, *order, str(jump))
        assert (code, out) == (2, "") and "do not take the next one from the parent's view" in err, err
        assert "--allow-sequence-jump" in err
    code, out, err = run_cli(capsys, *order, str(MAX_SEQUENCE - 1), "--allow-sequence-jump")
    assert code == 0 and "1 sequences remain after this one" in err, err
    assert (
        check_freeze_order(out.encode(), freeze=True, owner=owner, wallet_id="w1", now=time.time()) == MAX_SEQUENCE - 1
    )
    code, out, _ = run_cli(capsys, *order, str(2**32))
    assert code == 0 and check_freeze_order(out.encode(), freeze=True, owner=owner, wallet_id="w1", now=time.time())
    policy = example_policy()
    policy["sequence"] = MAX_SAFE_INT
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(policy))
    sign = ["owner", "--keypair", str(path), "sign-policy", str(policy_file)]
    code, out, err = run_cli(capsys, *sign)
    assert (code, out) == (2, "") and f"the policy's sequence {MAX_SAFE_INT} is above" in err, err
    code, out, _ = run_cli(capsys, *sign, "--allow-sequence-jump")
    assert code == 0 and load_signed_policy(out, owner=owner, wallet_id="demo-wallet").sequence == MAX_SAFE_INT


def test_keypair_with_mismatched_halves_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "forged.json"
    data = list(bytes(32)) + list(bytes(owner_public_key(Ed25519PrivateKey.generate())))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(data))
    with pytest.raises(OwnerKeyError, match="does not match"):
        LocalOwnerSigner.from_file(path)


# -- KMS ------------------------------------------------------------------------------------------------------------

CALLER = "arn:aws:sts::123456789012:assumed-role/waiaas-owner-signer/waiaas-owner"
SIGN_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": CALLER}, "Action": "kms:Sign",
     "Resource": "*", "Condition": {"StringEquals": {"kms:SigningAlgorithm": "ED25519_SHA_512",
                                                      "kms:MessageType": "RAW"}}},
    {"Effect": "Allow", "Principal": {"AWS": CALLER}, "Action": "kms:GetPublicKey", "Resource": "*"},
]})  # fmt: skip


def _new_ed25519_key(client: Any) -> str:
    """A new owner key in the test KMS; its key ARN (the only way the owner CLI names a KMS key)."""
    created = client.create_key(Policy=SIGN_POLICY, KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")
    key_arn: str = created["KeyMetadata"]["Arn"]
    return key_arn


@pytest.fixture
def kms(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    use_test_credentials(monkeypatch)
    from moto import mock_aws

    from tests.fakes.attesting_kms import AttestingTestKms

    with mock_aws():
        client = AttestingTestKms(root_certificate_pem=b"", clock=lambda: datetime.now(UTC), caller_arn=CALLER)
        yield client, _new_ed25519_key(client)


def test_kms_signer_pinned_to_another_key_refuses_before_signing(kms: tuple[Any, str]) -> None:
    client, key_id = kms
    other_key_id = _new_ed25519_key(client)
    expected = KmsOwnerSigner(client, key_id).public_key
    signed = record_signs(client)
    with pytest.raises(OwnerKeyError, match=f"KMS key {other_key_id} holds public key .* not the expected owner key"):
        KmsOwnerSigner(client, other_key_id, expected_public_key=expected)
    assert signed == []
    pinned = KmsOwnerSigner(client, key_id, expected_public_key=expected)
    assert pinned.public_key == expected
    signature = pinned.sign(b"message")
    assert len(signed) == 1 and len(signature) == 64


def test_kms_signer_signs_policies_the_proxy_accepts(kms: tuple[Any, str]) -> None:
    client, key_id = kms
    signer = KmsOwnerSigner(client, key_id)
    doc = example_policy()
    signed = envelope(signer, POLICY_PURPOSE, doc)
    policy = load_signed_policy(json.dumps(signed), owner=signer.public_key, wallet_id=doc["wallet_id"])
    assert policy.sequence == doc["sequence"]
    assert client.calls == [] or all(op != "Sign" for op, _ in client.calls)  # Sign is not an attested call


def test_kms_signs_a_policy_larger_than_its_raw_message_limit(kms: tuple[Any, str]) -> None:
    """KMS signs RAW messages of at most 4096 bytes; a policy may be up to 64 KiB (here 200 allowlisted
    destinations, about 9 KB canonical). The owner signs the document's hash (`policies.signing`), so the one
    ``kms:Sign`` call carries a short message and the proxy accepts the result."""
    client, key_id = kms
    signer = KmsOwnerSigner(client, key_id)
    doc = example_policy()
    doc["rules"]["destinations"]["allow"] = [str(Pubkey.new_unique()) for _ in range(200)]
    assert len(canonical_bytes(doc)) > MAX_KMS_RAW_MESSAGE_BYTES
    signed = record_signs(client)
    policy = load_signed_policy(json.dumps(envelope(signer, POLICY_PURPOSE, doc)), owner=signer.public_key,
                                wallet_id=doc["wallet_id"])  # fmt: skip
    assert policy.canonical == canonical_bytes(doc)
    assert len(signed) == 1 and len(signed[0]["Message"]) <= 73


def test_kms_signer_refuses_a_signature_that_does_not_verify(kms: tuple[Any, str]) -> None:
    client, key_id = kms
    signer = KmsOwnerSigner(client, key_id)
    client.sign = lambda **kwargs: {"KeyId": key_id, "Signature": bytes(64)}
    with pytest.raises(OwnerKeyError, match="does not verify"):
        signer.sign(b"\xffwaiaas/policy\x00{}")


def test_kms_denied_by_key_policy_is_an_owner_key_error(kms: tuple[Any, str]) -> None:
    client, key_id = kms
    signer = KmsOwnerSigner(client, key_id)
    client.caller_arn = "arn:aws:sts::123456789012:assumed-role/someone-else/x"
    with pytest.raises(OwnerKeyError, match=r"kms:Sign failed \(AccessDeniedException\)"):
        signer.sign(b"message")
    with pytest.raises(OwnerKeyError, match="at most 4096"):
        signer.sign(bytes(5000))


class RecordingSts:
    def __init__(self, inner: Any, calls: list[dict[str, Any]]) -> None:
        self.inner = inner
        self.calls = calls

    def assume_role(self, **params: Any) -> Any:
        self.calls.append(params)
        return self.inner.assume_role(**params)


def test_role_chain_carries_mfa_on_the_first_hop(kms: tuple[Any, str]) -> None:
    import boto3

    iam = boto3.client("iam", region_name="us-east-1")
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                                                 "Action": "sts:AssumeRole"}]})  # fmt: skip
    arns = [iam.create_role(RoleName=n, AssumeRolePolicyDocument=trust)["Role"]["Arn"] for n in ("entry", "signer")]
    calls: list[dict[str, Any]] = []
    seen_credentials: list[Any] = []

    def factory(service: str, credentials: Any) -> Any:
        assert service == "sts"  # the role chain asks STS only
        seen_credentials.append(credentials)
        return RecordingSts(boto3.client("sts", region_name="us-east-1"), calls)

    chain = RoleChain(arns, "arn:aws:iam::123456789012:mfa/owner", "987650", "alice@example.com")
    credentials = assume_role_chain(factory, chain)
    assert set(credentials) == {"AccessKeyId", "SecretAccessKey", "SessionToken"}
    assert calls[0]["SerialNumber"] == chain.mfa_serial and calls[0]["TokenCode"] == "987650"
    assert calls[0]["SourceIdentity"] == "alice@example.com"
    assert "SerialNumber" not in calls[1] and "SourceIdentity" not in calls[1] and calls[1]["RoleArn"] == arns[1]
    assert seen_credentials[0] is None and seen_credentials[1] is not None
    assert "987650" not in repr(chain)
    with pytest.raises(OwnerKeyError, match="6 digits"):
        assume_role_chain(factory, RoleChain(arns, chain.mfa_serial, "12", "alice"))


def test_cli_kms_signing_sends_the_source_identity_and_honours_the_pin(
    kms: tuple[Any, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`waiaas owner --kms-key-id ...` end to end, with STS (moto) and the test KMS behind the client factory."""
    import boto3

    from parent_proxy import owner_cli_common

    client, key_id = kms
    other_key_id = _new_ed25519_key(client)
    calls: list[dict[str, Any]] = []

    def factory(region: str) -> Any:
        def make(service: str, credentials: Any) -> Any:
            if service == "sts":
                return RecordingSts(boto3.client("sts", region_name="us-east-1"), calls)
            return client

        return make

    monkeypatch.setattr(owner_cli_common, "boto3_factory", factory)
    roles = ["arn:aws:iam::123456789012:role/waiaas-owner-entry", "arn:aws:iam::123456789012:role/waiaas-owner-signer"]
    chain = ["--role-arn", roles[0], "--role-arn", roles[1], "--mfa-serial", "arn:aws:iam::123456789012:mfa/a"]
    base = ["owner", "--kms-key-id", key_id, *chain, "--mfa-code-file", str(mfa_code_file(tmp_path))]

    code, out, err = run_cli(capsys, *base, "pubkey")
    assert code == 2 and "--source-identity" in err and out == "" and calls == []
    code, out, err = run_cli(capsys, *base, "--source-identity", "alice smith", "pubkey")
    assert code == 2 and "source identity must be 2-64" in err and calls == []

    code, out, _ = run_cli(capsys, *base, "--source-identity", "alice", "pubkey")
    assert code == 0 and [c.get("SourceIdentity") for c in calls] == ["alice", None]
    owner = Pubkey.from_string(out.split()[0])

    signed = record_signs(client)
    pinned = [*base, "--source-identity", "alice", "--owner-public-key", str(owner)]
    code, out, _ = run_cli(capsys, *pinned, "sign-policy", str(EXAMPLE_PATH))
    assert code == 0 and load_signed_policy(out, owner=owner, wallet_id="demo-wallet").sequence == 1
    assert len(signed) == 1

    wrong_key = ["owner", "--kms-key-id", other_key_id, *pinned[3:]]
    code, out, err = run_cli(capsys, *wrong_key, "sign-policy", str(EXAMPLE_PATH))
    assert code == 2 and out == "" and "not the expected owner key" in err and len(signed) == 1
    code, out, err = run_cli(capsys, *base, "--source-identity", "alice", "--owner-public-key", "0OIl", "pubkey")
    assert code == 2 and "--owner-public-key is not a base58 public key" in err


def test_cli_keypair_honours_the_pin(
    keypair: tuple[Path, Ed25519PrivateKey], capsys: pytest.CaptureFixture[str]
) -> None:
    path, key = keypair
    other = str(owner_public_key(Ed25519PrivateKey.generate()))
    code, out, err = run_cli(capsys, "owner", "--keypair", str(path), "--owner-public-key", other, "pubkey")
    assert code == 2 and out == "" and "not the expected owner key" in err
    mine = str(owner_public_key(key))
    code, out, _ = run_cli(capsys, "owner", "--keypair", str(path), "--owner-public-key", mine, "pubkey")
    assert code == 0 and out.strip() == mine


@pytest.mark.parametrize(
    "argv",
    [["call", "--url", "{url}", "GET", "/v1/wallets/w1"], ["check-multisig", "--url", "{url}", "--wallet", "w1"]],
    ids=["call", "check-multisig"],
)
def test_a_proxy_that_cannot_be_reached_is_exit_1_not_bad_input(
    argv: list[str], keypair: tuple[Path, Ed25519PrivateKey], capsys: pytest.CaptureFixture[str]
) -> None:
    """Review finding: a connection failure exited 2 ("bad input"); the command line was right and the request was
    signed, so it is 1, as for a refusal: the answer could not be had. A later one: the message named neither the
    URL nor what to check."""
    path, _ = keypair
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code = main(["owner", "--keypair", str(path), *[a.replace("{url}", url + "/prefix/") for a in argv]])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert f"owner {argv[0]}: request to {url} failed: ConnectError; check that the proxy is running" in err
    assert f"listens at {url} " in err and "--url names it" in err and "/prefix" not in err
