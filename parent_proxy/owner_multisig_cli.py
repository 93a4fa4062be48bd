"""``waiaas owner check-multisig``: does the wallet's Squads v4 multisig on chain conform to DESIGN.md section 10 and
the owner-signed policy (`parent_proxy.multisig_conformance`)? Two ways to ask, exactly one per call:

    waiaas owner ... check-multisig --url URL --wallet W
        ask the parent proxy (owner-signed ``GET /v1/wallets/W/multisig``): the report is what the parent's chain
        adapter read, and the parent is not trusted (DESIGN.md section 1)
    waiaas owner --owner-public-key K check-multisig --rpc-url URL --policy SIGNED.json --agent-key A [--vault V]
        make the same comparison here, reading the chain through an RPC endpoint of the owner's own, without the
        parent: the multisig the signed policy declares (``rules.squads_multisig``) and its spending limits

The ``--rpc-url`` way trusts only what the owner holds: the owner public key (``--owner-public-key``, or the public
key of ``--keypair`` / ``--kms-key-id``; nothing is signed), the owner's copy of the signed policy envelope (its
signature is verified against that key before anything is read: a policy another key signed is refused, exit 2,
as bad input), the agent key (``--agent-key``: as `waiaas owner verify-wallet` checked it, never taken from the
chain, since the check is whether the chain names it) and the RPC endpoint. Without ``--vault`` the wallet names
no vault and the multisig's vault 0 PDA (seeds ``[b"multisig", multisig, b"vault", 0]``) is its vault, as the proxy
assumes for a wallet created without one (`parent_proxy.multisig_onchain`); give ``--vault`` for a wallet created
with one. With the default, ``multisig.vault`` holds by construction and the spending limits must spend from vault
0. The policy's ``wallet_id`` names the report; its expiry is not checked (an expired policy still declares the
multisig, and the comparison is of its limits).

Both ways print the same JSON report (`parent_proxy.schemas.MultisigConformance`) on stdout and each failed check
on stderr; no account at the declared address is a report with one failed ``multisig.exists`` check. Exit codes: 0
the multisig conforms; 1 it does not (or does not exist), or the report could not be had (``--url``: the API
refused; ``--rpc-url``: the chain could not be read, or the multisig or a spending limit is not owned by the Squads
program or malformed: said on stderr as ``could not read the chain``); 2 bad input (options, keys, the policy file
or its signature, a policy that declares no multisig). The RPC URL is never printed (it may carry an API key).
``--rpc-url-file FILE`` gives it from a file's first line instead, off the command line, where other local users can
read it while the command runs (`parent_proxy.rpc_url_options`; ``--rpc-url`` here stands for either).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from parent_proxy import owner_cli_common
from parent_proxy.chain import ChainError, RpcChain
from parent_proxy.multisig_conformance import ConformanceReport, WalletKeys
from parent_proxy.multisig_onchain import read_report
from parent_proxy.owner_cli_common import (
    EXIT_OK,
    EXIT_REFUSED,
    OwnerInputError,
    add_rpc_url_options,
    owner_public_key,
    public_key_option,
    rpc_url,
    signed_policy_file,
)
from parent_proxy.schemas import MultisigConformance
from policies.terminal_text import safe_line

COMMAND: Final = "check-multisig"


def register(commands: Any) -> None:
    """Add ``check-multisig`` to ``waiaas owner``'s subparsers."""
    check = commands.add_parser(
        COMMAND,
        help="check the wallet's Squads multisig on chain against DESIGN.md section 10 and the signed policy, "
        "through the API (--url) or an RPC endpoint of your own (--rpc-url); exit 0 only if it conforms",
        description="Give exactly one of --url (the parent proxy's report: what the parent read) or --rpc-url (the "
        "same comparison made here, without the parent: the owner public key from --owner-public-key or the key "
        "options, nothing signed; the multisig the signed --policy declares; --vault defaults to that multisig's "
        "vault 0 PDA). Exit 0 it conforms; 1 it does not, the API refused, or the chain could not be read; 2 bad "
        "input, including a policy whose signature does not verify against the owner key. docs/api.md.",
    )
    check.add_argument("--url", help="ask the parent proxy at this base URL (its report is what the parent read)")
    check.add_argument("--wallet", help="with --url: the wallet id")
    add_rpc_url_options(check, required=False, what="read the chain there instead, without the parent")
    check.add_argument(
        "--policy", type=Path, help="with --rpc-url: the owner-signed policy envelope (verified against the owner key)"
    )
    check.add_argument("--agent-key", help="with --rpc-url: the wallet's agent public key (base58)")
    check.add_argument(
        "--vault", help="with --rpc-url: the wallet's vault address (default: the policy's multisig's vault 0 PDA)"
    )


def check_way(args: argparse.Namespace) -> str:
    """``"url"`` or ``"rpc"``: exactly one of ``--url`` and ``--rpc-url``, each with only its own options."""
    rpc = args.rpc_url is not None or args.rpc_url_file is not None
    if (args.url is None) == (not rpc):
        raise OwnerInputError(
            "give exactly one of --url (the parent proxy) or --rpc-url-file / --rpc-url (your own RPC endpoint)"
        )
    if args.url is not None:
        stray = [name for name, value in (("--policy", args.policy), ("--agent-key", args.agent_key),
                                          ("--vault", args.vault)) if value is not None]  # fmt: skip
        if stray:
            raise OwnerInputError(f"{', '.join(stray)} go with --rpc-url, not --url")
        if args.wallet is None:
            raise OwnerInputError("--url needs --wallet")
        return "url"
    if args.wallet is not None:
        raise OwnerInputError("--wallet goes with --url; with --rpc-url the policy names the wallet")
    if args.policy is None or args.agent_key is None:
        raise OwnerInputError("--rpc-url needs --policy and --agent-key")
    return "rpc"


def print_verdict(report: Mapping[str, Any]) -> int:
    """Each failed check of a report (the JSON shape of `MultisigConformance`) on stderr; `EXIT_OK` only when it
    conforms and no check failed, `EXIT_REFUSED` otherwise, and for anything that is not such a report."""
    try:
        conforms, checks = report["conforms"], report["checks"]
        failed = [f"{c['id']} ({c['subject']}): seen {c['seen']}; expected {c['expected']}"
                  for c in checks if c["ok"] is not True]  # fmt: skip
    except (KeyError, TypeError):
        sys.stderr.write(f"owner {COMMAND}: the answer is not a multisig report\n")
        return EXIT_REFUSED
    for line in failed:  # ids, subjects and values are the parent's (--url) or the chain's: escaped
        sys.stderr.write(safe_line(f"owner {COMMAND}: failed: {line}"))
    return EXIT_OK if conforms is True and checks and not failed else EXIT_REFUSED


def check_multisig_rpc(args: argparse.Namespace) -> int:
    """``check-multisig --rpc-url``: the comparison made here, on what the owner's RPC endpoint returns."""
    # 1. What the owner holds: the owner key, the signed policy (verified), the agent key, the endpoint.
    owner = owner_public_key(args)
    agent = public_key_option(args.agent_key, "--agent-key")
    vault = None if args.vault is None else public_key_option(args.vault, "--vault")
    url = rpc_url(args)
    policy = signed_policy_file(args.policy, owner)
    multisig = policy.rules.squads_multisig
    if multisig is None:
        raise OwnerInputError("--policy declares no Squads multisig (rules.squads_multisig): nothing to check")

    # 2. The accounts, each checked by its reader (`RpcChain`), and the comparison (`read_report`, as the API makes
    #    it): anything unreadable exits 1, never a pass; no account at the address is a failed multisig.exists.
    async def read() -> ConformanceReport:
        async with owner_cli_common.new_rpc_client() as client:
            return await read_report(RpcChain(client, url), WalletKeys(owner, agent, vault), policy, multisig)

    try:
        report = asyncio.run(read())
    except ChainError as exc:
        sys.stderr.write(safe_line(f"owner {COMMAND}: could not read the chain: {exc}"))
        return EXIT_REFUSED
    # 3. The report, as the API would answer it.
    view = MultisigConformance.of(policy.wallet_id, report)  # ensure_ascii: escapes what the chain put in a string
    sys.stdout.write(json.dumps(view.model_dump(mode="json"), separators=(",", ":")) + "\n")
    return print_verdict(view.model_dump())
