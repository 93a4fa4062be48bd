"""``waiaas owner ...``: the owner's side of an agent-key rotation (DESIGN.md section 3, Rotation).

    waiaas owner --owner-public-key K rotation-transaction --rpc-url URL --multisig M --new-agent-key N
                 [--agent-key A] [--permissions 2] [--compute-unit-price P] [--nonce-account NONCE]
                 [--close-spending-limit L ...]
        read the multisig and its spending limits from the RPC (https, or http to a loopback host), check that the
        rotation can execute, print the unsigned transaction (base64) and, on stderr, what it does; every spending
        limit of the old agent (members exactly [A]) is replaced by the same limit for N, each one named with
        --close-spending-limit is closed instead, and any other limit naming A is refused; with a durable nonce
        (whose authority is the owner key) the transaction lasts until the nonce advances
    waiaas owner --owner-public-key K advance-nonce-transaction --rpc-url URL --nonce-account NONCE
        print the unsigned transaction that advances the nonce, voiding every transaction built on its value
    waiaas owner sign-rotation --wallet-id W --transaction B64 --agent-key A --new-agent-key N [--multisig M]
                 [--expires-in S]
        check the transaction is a rotation of A to N (`policies.rotation`), show what it does (each replaced
        spending limit's terms included), print the signed rotation order and, on stderr, the message hash
    waiaas owner sign-key-switch --wallet-id W --agent-key A --new-agent-key N [--expires-in S]
        print the signed switch order (after the rotation landed)
    waiaas owner cosign --transaction B64 --message-hash HEX
        if the message is the one HEX names and exactly a rotation or nonce advance as the commands above build
        them (`parent_proxy.owner_cosign`), show what it does, add the owner's signature in its slot, print the
        transaction (base64)

``--rpc-url URL`` may be ``--rpc-url-file FILE`` instead (the URL on the file's first line), for an endpoint with an
API key in it: other local users can read a command line while it runs (`parent_proxy.rpc_url_options`).

The owner key comes from the same options as every owner command (`parent_proxy.owner_cli`: ``--keypair`` or
``--kms-key-id`` with the role chain, ``--owner-public-key`` to pin it). ``rotation-transaction`` signs nothing:
it takes the owner public key from ``--owner-public-key`` alone, or from the key when one is given. The flow:

1. ``rotation-transaction``: the transaction for the multisig's next index (its current index + 1) and the latest
   blockhash. The multisig must be autonomous, without time lock, threshold 2, the owner a member with every
   permission, the agent a voting member and the new key no member (`check_multisig_allows_rotation`).
2. ``sign-rotation``: the order binding the SHA-256 of that transaction's message; the proxy relays it, and the
   enclave co-signs as the old agent key. The transaction is checked first exactly as the enclave will, on the
   multisig given with ``--multisig`` or, without it, on the one the transaction names (printed on stderr).
3. ``cosign``: the owner's Ed25519 signature over the message, in the owner's slot (slots can be filled in either
   order; every signature already there must verify). The transaction comes back from someone else (the proxy), so
   ``--message-hash`` is required: the hash ``sign-rotation`` (or ``advance-nonce-transaction``) printed for the
   transaction the owner checked, never one from the proxy's answer; any other message is refused. The message
   must also be exactly a rotation or a nonce advance as these commands build it (`parent_proxy.owner_cosign`),
   for the owner key that signs; its summary is printed. Then submit it.
4. ``sign-key-switch``: once the transaction landed, the order that makes the enclave sign with the new key.

A recent blockhash lasts about a minute (150 slots): steps 1 to 3 must fit in it, or start again at step 1. With
``--nonce-account`` the transaction starts with the nonce's advance and carries its value instead: it lasts until
the nonce advances (when it lands, or through ``advance-nonce-transaction``, ``cosign`` and a submission), or
until the multisig's transaction index moves on (any other transaction of the multisig).

Exit codes as the other owner commands: 0 done, 1 the RPC could not be read or refused, 2 bad input, a multisig or
transaction that does not allow this rotation (a multisig the RPC answers does not exist among them: the failed
``multisig.exists`` check of a policy install), or a key that could not be used. Only public keys are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import sys
from typing import Any, Final

from solders.hash import Hash
from solders.message import Message, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from parent_proxy import owner_cli_common
from parent_proxy.chain import AccountNotFound, ChainError, RpcChain
from parent_proxy.nonce_account import NonceAccount
from parent_proxy.owner_cli_common import (
    DEFAULT_ORDER_LIFETIME,
    EXIT_OK,
    EXIT_REFUSED,
    EXPIRES_IN_HELP,
    OwnerInputError,
    add_rpc_url_options,
    envelope,
    order_expiry,
    owner_public_key,
    print_json,
    public_key_option,
    rpc_url,
    signer_from_args,
    wallet_id_option,
)
from parent_proxy.owner_cosign import describe_rotation, recognize
from parent_proxy.rotation_transaction import (
    RotationBuildError,
    SpendingLimitReplacement,
    advance_nonce_instruction,
    build_rotation_transaction,
    check_multisig_allows_rotation,
    default_agent,
)
from parent_proxy.squads_multisig_account import PERMISSION_VOTE, MultisigAccount
from parent_proxy.squads_spending_limit_account import SpendingLimitAccount
from policies.model import DecodedTransaction
from policies.orders import (
    AGENT_KEY_ROTATION_PURPOSE,
    AGENT_KEY_SWITCH_PURPOSE,
    rotation_document,
    switch_document,
)
from policies.rotation import check_rotation_transaction
from policies.terminal_text import safe_line
from policies.transaction import MAX_TRANSACTION_BYTES, decode_transaction

COMMANDS: Final = frozenset(
    {"rotation-transaction", "advance-nonce-transaction", "sign-rotation", "sign-key-switch", "cosign"}
)
_MAX_BASE64_CHARS: Final = 4 * ((MAX_TRANSACTION_BYTES + 2) // 3)


def register(commands: Any) -> None:
    """Add the rotation subcommands to ``waiaas owner``'s subparsers."""
    build = commands.add_parser(
        "rotation-transaction", help="print the unsigned agent-key rotation transaction (reads the multisig)"
    )
    add_rpc_url_options(build, required=True, what="the chain the multisig is read from")
    build.add_argument("--multisig", required=True, help="the wallet's Squads multisig address")
    build.add_argument("--new-agent-key", required=True, help="the candidate agent key the enclave made")
    build.add_argument("--agent-key", help="the agent key to replace (default: the other of two members)")
    build.add_argument(
        "--permissions", type=int, default=PERMISSION_VOTE,
        help="the new agent key's permission mask: 1 Initiate, 2 Vote, 4 Execute; it must include Vote "
        "(default 2, Vote alone, as DESIGN section 10 has the agent key)",
    )  # fmt: skip
    build.add_argument("--compute-unit-price", type=int, help="priority fee, micro-lamports per compute unit")
    build.add_argument("--nonce-account", help="a durable nonce account whose authority is the owner key")
    build.add_argument(
        "--close-spending-limit", action="append", default=[], metavar="ADDRESS",
        help="close this spending limit naming the agent instead of replacing it (repeatable)",
    )  # fmt: skip

    advance = commands.add_parser(
        "advance-nonce-transaction", help="print the unsigned transaction advancing a durable nonce (voids its users)"
    )
    add_rpc_url_options(advance, required=True, what="the chain the nonce account is read from")
    advance.add_argument("--nonce-account", required=True, help="the durable nonce account (authority: the owner)")

    rotation = commands.add_parser("sign-rotation", help="sign the order letting the agent key co-sign the rotation")
    rotation.add_argument("--wallet-id", required=True)
    rotation.add_argument("--transaction", required=True, help="the rotation transaction, base64")
    rotation.add_argument("--agent-key", required=True, help="the agent key being replaced")
    rotation.add_argument("--new-agent-key", required=True, help="the candidate agent key")
    rotation.add_argument("--multisig", help="the wallet's multisig (default: the one the transaction names)")
    rotation.add_argument("--expires-in", type=int, default=DEFAULT_ORDER_LIFETIME, help=EXPIRES_IN_HELP)

    switch = commands.add_parser("sign-key-switch", help="sign the order switching the enclave to the new agent key")
    switch.add_argument("--wallet-id", required=True)
    switch.add_argument("--agent-key", required=True, help="the agent key being replaced")
    switch.add_argument("--new-agent-key", required=True, help="the new agent key, now a member on chain")
    switch.add_argument("--expires-in", type=int, default=DEFAULT_ORDER_LIFETIME, help=EXPIRES_IN_HELP)

    cosign = commands.add_parser("cosign", help="add the owner's signature to a rotation or nonce advance")
    cosign.add_argument("--transaction", required=True, help="the transaction, base64")
    cosign.add_argument(
        "--message-hash", help="required: the message hash sign-rotation or advance-nonce-transaction printed (64 hex)"
    )


def _transaction(text: str) -> VersionedTransaction:
    if len(text) > _MAX_BASE64_CHARS:
        raise OwnerInputError(f"--transaction is longer than a {MAX_TRANSACTION_BYTES}-byte transaction")
    try:
        raw = base64.b64decode(text, validate=True)
        tx = VersionedTransaction.from_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise OwnerInputError("--transaction is not a base64 Solana transaction") from exc
    if bytes(tx) != raw:
        raise OwnerInputError("--transaction has trailing bytes")
    return tx


def _note(message: str) -> None:
    sys.stderr.write(safe_line(f"owner: {message}"))


def run(args: argparse.Namespace) -> int:
    """One rotation subcommand. `owner_cli.run` calls this inside its error handling (its own input, key and
    policy errors exit 2); chain errors exit 1 here."""
    command = args.owner_command
    try:
        if command == "rotation-transaction":
            return rotation_transaction(args)
        if command == "advance-nonce-transaction":
            return advance_nonce_transaction(args)
        if command == "sign-rotation":
            return sign_rotation(args)
        if command == "sign-key-switch":
            return sign_key_switch(args)
        return cosign(args)
    except RotationBuildError as exc:
        raise OwnerInputError(str(exc)) from exc
    except ChainError as exc:
        sys.stderr.write(safe_line(f"owner {command}: {exc}"))  # may quote the RPC's answer
        return EXIT_REFUSED


def _recent_blockhash(text: str) -> Hash:
    try:
        return Hash.from_string(text)
    except ValueError as exc:
        raise ChainError("RPC getLatestBlockhash: malformed blockhash") from exc


async def _nonce_account(chain: RpcChain, address: Pubkey) -> NonceAccount:
    """The durable-nonce account at ``address``; one the chain says does not exist is bad input (exit 2), since
    retrying changes nothing, while a chain that cannot be read stays a failure (exit 1)."""
    try:
        return await chain.nonce_account(address)
    except AccountNotFound as exc:
        raise OwnerInputError(f"the nonce account {address} does not exist on chain: nothing built; check "
                              "--nonce-account and --rpc-url's cluster") from exc  # fmt: skip


def rotation_transaction(args: argparse.Namespace) -> int:
    owner = owner_public_key(args)
    multisig = public_key_option(args.multisig, "--multisig")
    new_agent = public_key_option(args.new_agent_key, "--new-agent-key")
    agent = None if args.agent_key is None else public_key_option(args.agent_key, "--agent-key")
    nonce_address = None if args.nonce_account is None else public_key_option(args.nonce_account, "--nonce-account")
    to_close = {public_key_option(text, "--close-spending-limit") for text in args.close_spending_limit}
    url = rpc_url(args)

    async def read() -> tuple[MultisigAccount, list[SpendingLimitAccount], Hash | NonceAccount]:
        async with owner_cli_common.new_rpc_client() as client:
            chain = RpcChain(client, url)
            try:
                account = await chain.multisig_account(multisig)
            except AccountNotFound as exc:  # the chain's answer, not a failure to read it: bad input
                raise OwnerInputError(f"the multisig {multisig} does not exist on chain (multisig.exists: no "
                                      "account at this address): nothing built; check --multisig and --rpc-url's "
                                      "cluster") from exc  # fmt: skip
            limits = await chain.spending_limits(multisig)
            if nonce_address is not None:
                return account, limits, await _nonce_account(chain, nonce_address)
            return account, limits, _recent_blockhash(await chain.latest_blockhash())

    account, limits, lifetime = asyncio.run(read())
    if agent is None:
        agent = default_agent(account, owner)
    check_multisig_allows_rotation(account, owner=owner, agent=agent, new_agent=new_agent, permissions=args.permissions)
    # Every spending limit naming the old agent is replaced or closed: Squads checks only the limit's own member list.
    naming = [limit for limit in limits if limit.names(agent)]
    stray = to_close - {limit.address for limit in naming}
    if stray:
        raise OwnerInputError(
            f"--close-spending-limit {', '.join(map(str, stray))}: not a spending limit of the multisig naming {agent}"
        )
    closed = [limit for limit in naming if limit.address in to_close]
    replaced = [SpendingLimitReplacement(limit, Pubkey.from_bytes(secrets.token_bytes(32)))
                for limit in naming if limit.address not in to_close]  # fmt: skip
    recent, nonce = (None, lifetime) if isinstance(lifetime, NonceAccount) else (lifetime, None)
    index = account.transaction_index + 1
    raw = build_rotation_transaction(
        multisig=multisig, transaction_index=index, owner=owner, agent=agent, new_agent=new_agent,
        recent_blockhash=recent, nonce=nonce, permissions=args.permissions,
        compute_unit_price=args.compute_unit_price, spending_limits=replaced, closed_spending_limits=closed,
    )  # fmt: skip
    lasts = (
        "the blockhash expires in about a minute"
        if nonce is None
        else f"durable nonce {nonce.address}: valid until the nonce advances or the multisig's index moves on"
    )
    _note(f"config transaction {index} of multisig {multisig}: add {new_agent} (permissions {args.permissions}), "
          f"remove {agent}; {lasts}")  # fmt: skip
    for line in describe_rotation(decode_transaction(raw))[1:]:
        _note(f"  {line}")
    sys.stdout.write(base64.b64encode(raw).decode() + "\n")
    return EXIT_OK


def advance_nonce_transaction(args: argparse.Namespace) -> int:
    owner = owner_public_key(args)
    address = public_key_option(args.nonce_account, "--nonce-account")
    url = rpc_url(args)

    async def read() -> tuple[NonceAccount, Hash]:
        async with owner_cli_common.new_rpc_client() as client:
            chain = RpcChain(client, url)
            return await _nonce_account(chain, address), _recent_blockhash(await chain.latest_blockhash())

    nonce, recent = asyncio.run(read())
    if nonce.authority != owner:
        raise OwnerInputError(f"the nonce account's authority is {nonce.authority}, not the owner key")
    message = Message.new_with_blockhash([advance_nonce_instruction(address, owner)], owner, recent)
    unsigned = VersionedTransaction.populate(message, [Signature.default()])
    digest = hashlib.sha256(to_bytes_versioned(message)).hexdigest()
    _note(f"advances nonce {address} (now {nonce.durable_nonce}): every transaction carrying that value is void "
          f"once this lands; cosign it (--message-hash {digest}) and submit it within about a minute")  # fmt: skip
    sys.stdout.write(base64.b64encode(bytes(unsigned)).decode() + "\n")
    return EXIT_OK


def _named_multisig(decoded: DecodedTransaction) -> Pubkey:
    for ix in decoded.instructions:
        multisig = ix.args.get("multisig") if ix.name == "config_transaction_create" else None
        if isinstance(multisig, Pubkey):
            return multisig
    raise OwnerInputError("the transaction creates no Squads config transaction")


def sign_rotation(args: argparse.Namespace) -> int:
    wallet = wallet_id_option(args.wallet_id, "--wallet-id")
    tx = _transaction(args.transaction)
    agent, new_agent = (
        public_key_option(args.agent_key, "--agent-key"),
        public_key_option(args.new_agent_key, "--new-agent-key"),
    )
    decoded = decode_transaction(bytes(tx))
    multisig = _named_multisig(decoded) if args.multisig is None else public_key_option(args.multisig, "--multisig")
    check_rotation_transaction(decoded, multisig=multisig, agent=agent, new_agent=new_agent)
    expires_at = order_expiry(args.expires_in)
    signer = signer_from_args(args)
    digest = hashlib.sha256(to_bytes_versioned(tx.message)).digest()
    document = rotation_document(wallet, agent, new_agent, digest, expires_at)
    summary = describe_rotation(decoded)
    print_json(envelope(signer, AGENT_KEY_ROTATION_PURPOSE, document))
    _note(f"signed: replace {agent} by {new_agent} in multisig {multisig}, message {digest.hex()}")
    for line in summary:
        _note(f"  {line}")
    _note(f"keep the message hash: cosign the transaction the proxy returns with --message-hash {digest.hex()}")
    return EXIT_OK


def sign_key_switch(args: argparse.Namespace) -> int:
    wallet = wallet_id_option(args.wallet_id, "--wallet-id")
    agent, new_agent = (
        public_key_option(args.agent_key, "--agent-key"),
        public_key_option(args.new_agent_key, "--new-agent-key"),
    )
    if agent == new_agent:
        raise OwnerInputError("--new-agent-key is the agent key")
    document = switch_document(wallet, agent, new_agent, order_expiry(args.expires_in))
    print_json(envelope(signer_from_args(args), AGENT_KEY_SWITCH_PURPOSE, document))
    return EXIT_OK


def cosign(args: argparse.Namespace) -> int:
    tx = _transaction(args.transaction)
    message = to_bytes_versioned(tx.message)
    digest = hashlib.sha256(message).digest()
    # 1. The message the owner checked (sign-rotation, advance-nonce-transaction), not one handed back instead.
    if args.message_hash is None:
        raise OwnerInputError(
            "--message-hash is required: the hash sign-rotation (or advance-nonce-transaction) printed for the "
            "transaction you checked; never take it from the proxy's answer"
        )
    try:
        expected = bytes.fromhex(args.message_hash)
    except ValueError as exc:
        raise OwnerInputError("--message-hash is not hex") from exc
    if not hmac.compare_digest(expected, digest):
        raise OwnerInputError("the transaction's message is not the one --message-hash names: not signed")
    # 2. Exactly a rotation or a nonce advance as the owner commands build them.
    owner, summary = recognize(tx)
    # 3. Every signature already present must verify (a bad one would only fail at submission).
    signers = list(tx.message.account_keys[: tx.message.header.num_required_signatures])
    signatures = list(tx.signatures)
    if len(signatures) != len(signers):
        raise OwnerInputError("--transaction has a signature count other than its message requires")
    for key, signature in zip(signers, signatures, strict=True):
        if signature != Signature.default() and not signature.verify(key, message):
            raise OwnerInputError(f"the signature of {key} in the transaction does not verify")
    # 4. It is built for this owner key (its fee payer); the owner's slot gets the owner's signature.
    signer = signer_from_args(args)
    if signer.public_key != owner:
        raise OwnerInputError(f"the transaction is built for the owner key {owner}, not {signer.public_key}")
    for line in summary:
        _note(f"signing: {line}")
    slot = signers.index(signer.public_key)
    signatures[slot] = Signature.from_bytes(signer.sign(message))  # KMS: ED25519_SHA_512 over the RAW message
    signed = VersionedTransaction.populate(tx.message, signatures)
    _note(f"signed message {digest.hex()} as {signer.public_key} (signature slot {slot})")
    sys.stdout.write(base64.b64encode(bytes(signed)).decode() + "\n")
    return EXIT_OK
