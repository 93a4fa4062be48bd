"""``waiaas owner cosign`` never signs blindly: it needs the message hash the owner checked (``--message-hash``) and
signs only a transaction that is exactly an agent-key rotation or a nonce advance as the owner commands build them
(`parent_proxy.owner_cosign`), showing what it signs. The transactions a hostile parent could hand back instead are
built here with solders and the independent IDL-driven Squads encoder; each comes with its own correct message hash
(the worst case: the owner copied the hash from the parent's answer), and each is refused with nothing printed on
stdout."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import Instruction
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import (
    AdvanceNonceAccountParams,
    AuthorizeNonceAccountParams,
    TransferParams,
    WithdrawNonceAccountParams,
    advance_nonce_account,
    authorize_nonce_account,
    transfer,
    withdraw_nonce_account,
)
from solders.transaction import VersionedTransaction

from parent_proxy.rotation_transaction import SpendingLimitReplacement, rotation_instructions
from parent_proxy.squads_spending_limit_account import parse_spending_limit_account
from tests.support.owner_rotation_rpc import (
    Cli,
    Rpc,
    agent_cosigns,
    built_rotation,
    message_hash_printed,
    message_of,
    unsigned,
    wallet,
)
from tests.support.policies import owner_public_key
from tests.support.squads_encoder import PROGRAM_ID
from tests.support.squads_rotation import (
    add_member,
    config_create,
    put_spending_limit,
    remove_member,
    spending_limit_account_data,
    spending_limit_address,
)

ATTACKER = Pubkey.new_unique()


def b64(message: Message | MessageV0) -> str:
    count = message.header.num_required_signatures
    return base64.b64encode(bytes(VersionedTransaction.populate(message, [Signature.default()] * count))).decode()


def cosign(cli: Cli, path: Path, raw_b64: str) -> tuple[int, str, str]:
    """``cosign`` of ``raw_b64`` with that very message's hash."""
    digest = hashlib.sha256(message_of(unsigned(raw_b64))).hexdigest()
    return cli("--keypair", str(path), "cosign", "--transaction", raw_b64, "--message-hash", digest)


def assert_refused(result: tuple[int, str, str], *held: str) -> None:
    code, out, err = result
    assert (code, out) == (2, ""), err
    assert "neither an agent-key rotation nor a nonce advance exactly as" in err and "not signed" in err
    for name in held:
        assert name in err


# -- what is not a rotation ------------------------------------------------------------------------------------------


def test_cosign_refuses_a_transfer_from_the_owner_key(keypair: tuple[Path, Ed25519PrivateKey], cli: Cli) -> None:
    """The review's finding: a hostile parent hands back a transfer of the owner key's SOL instead of the rotation."""
    path, key = keypair
    owner = owner_public_key(key)
    drain = transfer(TransferParams(from_pubkey=owner, to_pubkey=ATTACKER, lamports=999 * 10**9))
    assert_refused(cosign(cli, path, b64(Message.new_with_blockhash([drain], owner, Hash.new_unique()))),
                   "system transfer")  # fmt: skip


def test_cosign_refuses_what_takes_or_spends_the_owners_nonce(
    keypair: tuple[Path, Ed25519PrivateKey], cli: Cli
) -> None:
    """The owner is the authority of the rotation's durable nonce: handing it over, withdrawing from it, or an
    advance paid by someone else are not what ``advance-nonce-transaction`` builds."""
    path, key = keypair
    owner, nonce = owner_public_key(key), Pubkey.new_unique()
    handover = authorize_nonce_account(
        AuthorizeNonceAccountParams(nonce_pubkey=nonce, authorized_pubkey=owner, new_authority=ATTACKER)
    )
    withdraw = withdraw_nonce_account(WithdrawNonceAccountParams(nonce_pubkey=nonce, authorized_pubkey=owner,
                                                                 to_pubkey=ATTACKER, lamports=10**6))  # fmt: skip
    advance = advance_nonce_account(AdvanceNonceAccountParams(nonce_pubkey=nonce, authorized_pubkey=owner))
    stranger = Pubkey.new_unique()
    cases = [
        (Message.new_with_blockhash([handover], owner, Hash.new_unique()), "authorize_nonce_account"),
        (Message.new_with_blockhash([withdraw], owner, Hash.new_unique()), "withdraw_nonce_account"),
        (Message.new_with_blockhash([advance, handover], owner, Hash.new_unique()), "authorize_nonce_account"),
        (Message.new_with_blockhash([advance], stranger, Hash.new_unique()), "advance_nonce_account"),
    ]
    for message, held in cases:
        assert_refused(cosign(cli, path, b64(message)), held)


def test_cosign_signs_the_nonce_advance_it_built(rpc: Rpc, cli: Cli, keypair: tuple[Path, Ed25519PrivateKey]) -> None:
    path, key = keypair
    owner = owner_public_key(key)
    advance = advance_nonce_account(
        AdvanceNonceAccountParams(nonce_pubkey=Pubkey.new_unique(), authorized_pubkey=owner)
    )
    code, out, err = cosign(cli, path, b64(Message.new_with_blockhash([advance], owner, Hash.new_unique())))
    assert code == 0, err
    assert unsigned(out.strip()).verify_with_results() == [True]


# -- what looks like a rotation but is not the builder's -------------------------------------------------------------


def _parts(rpc: Rpc, owner: Pubkey) -> tuple[Pubkey, Pubkey, Pubkey, SpendingLimitReplacement]:
    """A wallet's multisig, its agent, a new agent key, and a replacement of one of the agent's spending limits."""
    multisig, agent_kp = wallet(rpc, owner, index=3)
    agent, create = agent_kp.pubkey(), Pubkey.new_unique()
    data = spending_limit_account_data(multisig, create, members=[agent], amount=5 * 10**8)
    old = parse_spending_limit_account(spending_limit_address(multisig, create)[0], PROGRAM_ID, data)
    return multisig, agent, Pubkey.new_unique(), SpendingLimitReplacement(old, Pubkey.new_unique())


def _builders(multisig: Pubkey, owner: Pubkey, agent: Pubkey, new: Pubkey,
              limit: SpendingLimitReplacement) -> list[Instruction]:  # fmt: skip
    return rotation_instructions(multisig=multisig, transaction_index=4, owner=owner, agent=agent, new_agent=new,
                                 permissions=7, spending_limits=[limit])  # fmt: skip


def test_cosign_refuses_a_rotation_with_anything_more_or_other(
    rpc: Rpc, cli: Cli, keypair: tuple[Path, Ed25519PrivateKey]
) -> None:
    """The builder's rotation with an instruction added or changed, or compiled otherwise, is refused, including
    variants the enclave's own check would accept (a compute unit limit, a limit replacement the execution does not
    carry): the owner's signature is the fee payer's, the creator's and the nonce authority's, so only the
    builder's exact transaction is signed."""
    path, key = keypair
    owner = owner_public_key(key)
    multisig, agent, new, limit = _parts(rpc, owner)
    ixs = _builders(multisig, owner, agent, new, limit)
    blockhash = Hash.new_unique()
    # The builder's own transaction passes (the control).
    code, _, err = cosign(cli, path, b64(Message.new_with_blockhash(ixs, owner, blockhash)))
    assert code == 0, err
    drain = transfer(TransferParams(from_pubkey=owner, to_pubkey=ATTACKER, lamports=10**9))
    fields = {"create_key": limit.create_key, "vault_index": 0, "mint": Pubkey.default(), "amount": 2**64 - 1,
              "period": "one_time", "destinations": []}  # fmt: skip
    actions = [add_member(new), remove_member(agent), ("remove_spending_limit", {"spending_limit": limit.old.address})]

    def limit_added(**changes: object) -> Instruction:
        chosen = {**fields, "members": sorted([new, ATTACKER], key=bytes), **changes}
        return config_create(multisig, 4, owner, [*actions, ("add_spending_limit", chosen)])

    no_limit_accounts = Instruction(ixs[4].program_id, bytes(ixs[4].data), ixs[4].accounts[:6])
    variants = [
        [*ixs, drain],
        [drain, *ixs],
        [set_compute_unit_limit(1_400_000), *ixs],
        [set_compute_unit_price(10**12), set_compute_unit_price(1), *ixs],
        [limit_added(), *ixs[1:]],  # the review's extra limit member
        [*ixs[:4], no_limit_accounts],
        [ixs[0], ixs[1], ixs[3], ixs[2], ixs[4]],
    ]
    for variant in variants:
        assert_refused(cosign(cli, path, b64(Message.new_with_blockhash(variant, owner, blockhash))))
    # What the shape cannot tell: the removed limit's own terms (RemoveSpendingLimit names only its address). A
    # replacement with other terms is a rotation the builder could have made from another chain read; it is shown,
    # and only the owner's own message hash (from sign-rotation) tells it from the one they checked.
    other_terms = Message.new_with_blockhash([limit_added(members=[new]), *ixs[1:]], owner, blockhash)
    code, _, err = cosign(cli, path, b64(other_terms))
    assert code == 0 and "amount 18446744073709551615 in all (OneTime: it never resets), destinations ANY" in err
    mine = hashlib.sha256(message_of(unsigned(b64(Message.new_with_blockhash(ixs, owner, blockhash))))).hexdigest()
    code, out, err = cli("--keypair", str(path), "cosign", "--transaction", b64(other_terms), "--message-hash", mine)
    assert (code, out) == (2, "") and "not the one --message-hash names" in err
    # The same instructions as a v0 message (the builder makes legacy ones).
    assert_refused(cosign(cli, path, b64(MessageV0.try_compile(owner, ixs, [], blockhash))))


def test_cosign_shows_each_replaced_limit_and_signs_the_builders_rotation(
    rpc: Rpc, cli: Cli, keypair: tuple[Path, Ed25519PrivateKey]
) -> None:
    """The whole flow through the commands: rotation-transaction (two limits, a priority fee), sign-rotation (which
    shows the terms and the hash to keep), the enclave's signature, cosign with that hash."""
    path, key = keypair
    owner = owner_public_key(key)
    multisig, agent = wallet(rpc, owner, index=3)
    new_agent, merchant, mint = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    svm = rpc.backend.svm
    sol = put_spending_limit(svm, multisig, Pubkey.new_unique(), members=[agent.pubkey()], amount=5 * 10**8)
    token = put_spending_limit(svm, multisig, Pubkey.new_unique(), members=[agent.pubkey()], mint=mint,
                               amount=10**6, period=0, destinations=[merchant])  # fmt: skip
    raw_b64 = built_rotation(cli, owner, multisig, new_agent, "--compute-unit-price", "25")
    code, _, err = cli("--keypair", str(path), "sign-rotation", "--wallet-id", "w1", "--transaction", raw_b64,
                       "--agent-key", str(agent.pubkey()), "--new-agent-key", str(new_agent))  # fmt: skip
    assert code == 0, err
    sol_line = (f"spending limit {sol} is closed and replaced by a limit with members [{new_agent}], vault 0, "
                "SOL (lamports), amount 500000000 per day, destinations ANY address")  # fmt: skip
    token_line = (f"spending limit {token} is closed and replaced by a limit with members [{new_agent}], vault 0, "
                  f"mint {mint} (base units), amount 1000000 in all (OneTime: it never resets), "
                  f"destinations [{merchant}]")  # fmt: skip
    assert sol_line in err and token_line in err
    digest = message_hash_printed(err)
    code, out, err = cli("--keypair", str(path), "cosign", "--transaction", agent_cosigns(raw_b64, agent),
                         "--message-hash", digest)  # fmt: skip
    assert code == 0, err
    assert f"owner: signing: {sol_line}" in err and f"owner: signing: {token_line}" in err
    assert f"owner: signing: fee payer {owner}, priority fee 25 micro-lamports per compute unit" in err
    assert unsigned(out.strip()).verify_with_results() == [True, True]


def test_sign_rotation_refuses_a_replacement_limit_naming_another_key(
    rpc: Rpc, cli: Cli, keypair: tuple[Path, Ed25519PrivateKey]
) -> None:
    """The owner's order is not signed for a rotation whose new spending limit names a key besides the new agent
    (the review's lying-RPC transaction): the same check as the enclave's."""
    path, key = keypair
    owner = owner_public_key(key)
    multisig, agent, new, limit = _parts(rpc, owner)
    ixs = _builders(multisig, owner, agent, new, limit)
    fields = {"create_key": limit.create_key, "vault_index": 0, "mint": Pubkey.default(), "amount": 2**64 - 1,
              "period": "one_time", "members": sorted([new, ATTACKER], key=bytes), "destinations": []}  # fmt: skip
    actions = [add_member(new), remove_member(agent), ("remove_spending_limit", {"spending_limit": limit.old.address}),
               ("add_spending_limit", fields)]  # fmt: skip
    raw_b64 = b64(Message.new_with_blockhash([config_create(multisig, 4, owner, actions), *ixs[1:]], owner,
                                             Hash.new_unique()))  # fmt: skip
    code, out, err = cli("--keypair", str(path), "sign-rotation", "--wallet-id", "w1", "--transaction", raw_b64,
                         "--agent-key", str(agent), "--new-agent-key", str(new))  # fmt: skip
    assert (code, out) == (2, ""), err
    assert "add_spending_limit members [" in err and str(ATTACKER) in err
    assert "must be exactly the new agent key" in err
