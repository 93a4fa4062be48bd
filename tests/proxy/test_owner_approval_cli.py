"""``waiaas owner approve`` shows what the approval covers (decoded from the very bytes whose hash it signs) and
refuses, signing nothing, what it cannot show: bytes that do not decode, lookup tables it cannot resolve."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.hash import Hash
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction, VersionedTransaction
from spl.token.instructions import transfer_checked
from spl.token.models import TransferCheckedParams

from parent_proxy.owner_cli_common import envelope
from parent_proxy.owner_signers import LocalOwnerSigner
from parent_proxy.sign_parts import message_hash
from policies.cli import main
from policies.orders import check_approval
from policies.programs import TOKEN_PROGRAM, associated_token_address
from policies.signing import POLICY_PURPOSE
from tests.support.policies import EXAMPLE_MINT, MERCHANT, example_policy, owner_public_key

WALLET = "demo-wallet"  # the example policy's
AGENT = Pubkey.new_unique()
TABLE = Pubkey.new_unique()


def run(capsys: pytest.CaptureFixture[str], keyfile: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["owner", "--keypair", str(keyfile), "approve", "--wallet", WALLET, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def legacy_payment(lamports: int) -> bytes:
    ix = transfer(TransferParams(from_pubkey=AGENT, to_pubkey=MERCHANT, lamports=lamports))
    return bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], AGENT, Hash.new_unique())))


def v0_payment_through_table(lamports: int) -> bytes:
    """A payment whose destination the message names only by (TABLE, index 1)."""
    ix = transfer(TransferParams(from_pubkey=AGENT, to_pubkey=MERCHANT, lamports=lamports))
    table = AddressLookupTableAccount(TABLE, [Pubkey.new_unique(), MERCHANT])
    message = MessageV0.try_compile(AGENT, [ix], [table], Hash.new_unique())
    assert message.address_table_lookups  # the destination really comes from the table
    return bytes(VersionedTransaction.populate(message, [Signature.default()]))


def signed_policy_file(tmp_path: Path, key: Ed25519PrivateKey, *, wallet: str = WALLET) -> Path:
    doc = example_policy()
    doc["wallet_id"] = wallet
    doc["rules"]["lookup_tables"] = [{"address": str(TABLE), "addresses": [str(Pubkey.new_unique()), str(MERCHANT)]}]
    path = tmp_path / f"policy-{wallet}.json"
    path.write_text(json.dumps(envelope(LocalOwnerSigner(key), POLICY_PURPOSE, doc)))
    return path


def test_the_owner_sees_what_the_approval_covers(
    keypair: tuple[Path, Ed25519PrivateKey], capsys: pytest.CaptureFixture[str]
) -> None:
    path, key = keypair
    tx = legacy_payment(2_500_000_000)
    code, out, err = run(capsys, path, "--transaction", b64(tx))
    assert code == 0
    check_approval(out.encode(), owner=owner_public_key(key), wallet_id=WALLET, message_hash=message_hash(tx),
                   now=time.time())  # fmt: skip
    assert f"for wallet {WALLET}, the transaction whose message hash is {message_hash(tx).hex()}:" in err
    assert f"moves 2500000000 lamports (2.5 SOL) from {AGENT} to {MERCHANT} (transfer, signed by {AGENT})" in err
    assert out not in err  # the approval goes to stdout only


def test_a_checked_token_transfer_is_shown_in_raw_units_and_whole_tokens(
    keypair: tuple[Path, Ed25519PrivateKey], capsys: pytest.CaptureFixture[str]
) -> None:
    """TransferChecked states the mint's decimals (the chain refuses it otherwise): the owner also reads the amount in
    whole tokens, exactly. Before: raw units only."""
    path, _ = keypair
    source, destination = Pubkey.new_unique(), Pubkey.new_unique()
    params = TransferCheckedParams(program_id=TOKEN_PROGRAM, source=source, mint=EXAMPLE_MINT, dest=destination,
                                   owner=AGENT, amount=12_345_678_901, decimals=6)  # fmt: skip
    message = Message.new_with_blockhash([transfer_checked(params)], AGENT, Hash.new_unique())
    code, _, err = run(capsys, path, "--transaction", b64(bytes(Transaction.new_unsigned(message))))
    assert code == 0
    assert (
        f"moves 12345678901 raw units of mint {EXAMPLE_MINT} (= 12345.678901 in whole tokens, 6 decimals) from "
        f"{source} to {destination} (transfer, signed by {AGENT})"
    ) in err


def test_with_the_policy_a_token_payment_names_whose_account_it_pays(
    keypair: tuple[Path, Ed25519PrivateKey], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review finding: the merchant's associated token account and an attacker's look alike; with ``--policy`` the
    owner reads which allowlisted address's account the payment goes to, or that it is none of them."""
    path, key = keypair
    policy = str(signed_policy_file(tmp_path, key))
    for owner, shown in [
        (MERCHANT, f"(the associated token account of {MERCHANT}, the policy's allowlisted address)"),
        (Pubkey.new_unique(), "(not the associated token account of any address the policy names)"),
    ]:
        params = TransferCheckedParams(program_id=TOKEN_PROGRAM, source=Pubkey.new_unique(), mint=EXAMPLE_MINT,
                                       dest=associated_token_address(owner, EXAMPLE_MINT, TOKEN_PROGRAM), owner=AGENT,
                                       amount=5, decimals=6)  # fmt: skip
        message = Message.new_with_blockhash([transfer_checked(params)], AGENT, Hash.new_unique())
        code, _, err = run(
            capsys, path, "--transaction", b64(bytes(Transaction.new_unsigned(message))), "--policy", policy
        )
        assert code == 0 and shown in err, err


@pytest.mark.parametrize(
    "raw",
    [os.urandom(200), b"", legacy_payment(5) + b"\x00"],
    ids=["random bytes", "empty", "a trailing byte"],
)
def test_bytes_that_do_not_decode_are_not_approved(
    keypair: tuple[Path, Ed25519PrivateKey], capsys: pytest.CaptureFixture[str], raw: bytes
) -> None:
    path, _ = keypair
    code, out, err = run(capsys, path, "--transaction", b64(raw))
    assert (code, out) == (2, "")
    assert "does not decode" in err and "nothing was signed" in err


def test_lookup_tables_resolve_from_the_owners_signed_pins_only(
    keypair: tuple[Path, Ed25519PrivateKey], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, key = keypair
    tx = v0_payment_through_table(7)
    # Without the policy the destination cannot be shown: refused, with the way out named.
    code, out, err = run(capsys, path, "--transaction", b64(tx))
    assert (code, out) == (2, "") and "need --policy" in err
    # With the owner's signed policy, its pin resolves the table.
    code, out, err = run(capsys, path, "--transaction", b64(tx), "--policy", str(signed_policy_file(tmp_path, key)))
    assert code == 0
    assert f"moves 7 lamports (0.000000007 SOL) from {AGENT} to {MERCHANT}" in err
    assert f"lookup tables: {TABLE}" in err
    check_approval(out.encode(), owner=owner_public_key(key), wallet_id=WALLET, message_hash=message_hash(tx),
                   now=time.time())  # fmt: skip


def test_a_policy_that_is_not_this_wallets_or_not_the_owners_is_refused(
    keypair: tuple[Path, Ed25519PrivateKey], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, key = keypair
    tx = b64(v0_payment_through_table(7))
    other_wallet = signed_policy_file(tmp_path, key, wallet="another-wallet")
    code, out, err = run(capsys, path, "--transaction", tx, "--policy", str(other_wallet))
    assert (code, out) == (2, "") and "not 'demo-wallet''s" in err
    (tmp_path / "stranger").mkdir()
    stranger = signed_policy_file(tmp_path / "stranger", Ed25519PrivateKey.generate())
    code, out, err = run(capsys, path, "--transaction", tx, "--policy", str(stranger))
    assert (code, out) == (2, "") and "does not verify against the owner key" in err
