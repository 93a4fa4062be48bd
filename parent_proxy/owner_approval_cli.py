"""``waiaas owner approve``: sign the approval of one escalated transaction, after showing what it does.

    waiaas owner approve --wallet W --transaction B64 [--policy SIGNED.json] [--expires-in S]

The transaction reaches the owner through the parent (``GET /v1/wallets/W/approvals``, the ``approval.pending``
webhook), which is not trusted (DESIGN.md section 1): it could show one payment and ask for the approval of another.
The approval signs the transaction's message hash, so this command decodes those very bytes and writes what they do
to stderr (`policies.describe`) before the signed approval goes to stdout; the owner reads what the approval covers.
Token amounts are raw units, and also whole tokens where the instruction states the mint's decimals (the checked
token instructions, a Squads spending-limit use).

Refused, with nothing signed (exit 2): bytes that are not a Solana transaction the enclave could sign (they do not
decode: the enclave would deny them anyway), and a v0 transaction whose lookup tables cannot be resolved. Lookups
resolve from the owner's own pins (`rules.lookup_tables`), as in the enclave: give ``--policy`` with the wallet's
owner-signed policy (its signature is verified against the owner key, and it must be the wallet's). With
``--policy``, each payment line also says whose account it pays: the associated token account of which address the
policy's destination lists name, or none of theirs (`policies.describe.Recipients`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
from pathlib import Path
from typing import Any

from solders.pubkey import Pubkey

from parent_proxy.owner_cli_common import (
    DEFAULT_ORDER_LIFETIME,
    EXIT_OK,
    OwnerInputError,
    envelope,
    order_expiry,
    print_json,
    signed_policy_file,
    wallet_id_option,
)
from parent_proxy.owner_signers import OwnerSigner
from parent_proxy.sign_parts import message_hash
from policies.describe import Recipients, describe_transaction
from policies.errors import DecodeError
from policies.lookup_tables import resolve_lookup_tables
from policies.orders import APPROVAL_PURPOSE, approval_document
from policies.terminal_text import safe_line
from policies.transaction import decode_transaction

COMMAND = "approve"


def register(commands: Any) -> None:
    approve = commands.add_parser(
        COMMAND,
        help="sign an approval of one escalated transaction (what it does is printed first, on stderr)",
    )
    approve.add_argument("--wallet", required=True)
    approve.add_argument("--transaction", required=True, help="the transaction as the agent sent it, base64")
    approve.add_argument(
        "--policy",
        type=Path,
        help="the wallet's owner-signed policy: resolves a v0 transaction's lookup tables from its pins",
    )
    approve.add_argument("--expires-in", type=int, default=DEFAULT_ORDER_LIFETIME)


def approve(args: argparse.Namespace, signer: OwnerSigner) -> int:
    """Decode, describe, sign (see the module docstring)."""
    wallet = wallet_id_option(args.wallet, "--wallet")
    try:
        raw = base64.b64decode(args.transaction, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise OwnerInputError("--transaction is not base64") from exc
    tables: dict[Pubkey, tuple[Pubkey, ...]] = {}
    recipients = None
    if args.policy is not None:
        policy = signed_policy_file(args.policy, signer.public_key)
        if policy.wallet_id != wallet:
            raise OwnerInputError(f"--policy is wallet {policy.wallet_id!r}'s, not {wallet!r}'s")
        tables = dict(resolve_lookup_tables(policy))
        allow = policy.rules.destinations.allow
        recipients = Recipients.of(allow if isinstance(allow, frozenset) else (), policy.rules.destinations.deny)
    try:
        decoded = decode_transaction(raw, lookup_tables=tables)
    except DecodeError as exc:
        hint = "" if args.policy is not None else " (a v0 transaction's lookup tables need --policy)"
        raise OwnerInputError(f"--transaction does not decode: {exc}{hint}; nothing was signed") from exc
    digest = message_hash(raw)
    summary = [f"approving, for wallet {wallet}, the transaction whose message hash is {digest.hex()}:"]
    sys.stderr.write("".join(safe_line(line) for line in [*summary, *describe_transaction(decoded, recipients)]))
    document = approval_document(wallet, digest, order_expiry(args.expires_in))
    print_json(envelope(signer, APPROVAL_PURPOSE, document))
    return EXIT_OK
