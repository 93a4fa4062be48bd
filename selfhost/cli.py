"""``waiaas selfhost up``: run the self-host bundle's services as local processes until Ctrl-C.

    waiaas selfhost up [--state-dir DIR] [--port 8080] [--local-chain | --rpc-url-file FILE | --rpc-url URL]
                       [--owner-key PUBKEY ...]
    waiaas selfhost reseal [--state-dir DIR] --new-secret-file FILE [--old-secret-file FILE]   (selfhost.reseal)

The services are started from selfhost/docker-compose.yml exactly as :mod:`selfhost.deployment` describes (the
state directory keeps the SQLite state and the unseal secret across runs, so wallets survive a restart). Without
``--owner-key``, an owner keypair file ``<state>/owner.json`` (mode 0600) is made once and its public key is the
one allowed to create wallets; use it with ``waiaas owner --keypair <state>/owner.json ...``. That key is a
throw-away for the local chain: it lies beside the sealed agent keys and the unseal secret, so anyone who reads
the directory holds both keys of each wallet's 2-of-2 multisig. With ``--local-chain`` (the default) a
LiteSVM-backed JSON-RPC server runs alongside; ``--rpc-url-file`` or ``--rpc-url`` (a real chain) uses that endpoint
instead (`parent_proxy.rpc_url_options`: the file keeps a provider's key off the command line, where other local
users can read it for as long as this runs; ``--rpc-url`` with a path, query or user info gets a warning) and needs
``--owner-key`` (the owner's public key; the private half stays off this machine) and a state directory without
a throw-away key. The local chain has no Squads program, so there (only) the proxy accepts policies that declare no
multisig, and the command warns that such wallets have no on-chain limit; with an RPC endpoint every policy must
declare the wallet's Squads multisig (:mod:`selfhost.deployment`, Squads).

The unseal secret ``<state>/secrets/waiaas_unseal_secret`` is made on the first run only: on a state directory whose
``state/waiaas.db`` exists, a missing secret file is refused (restore it from the backup), never replaced
(:func:`selfhost.deployment.ensure_unseal_secret`).

The state directory is created mode 0700 if new; an existing one is never chmodded, and is refused unless it is
ours to use (this user's, mode 0700 or tighter, empty or holding only what these commands put there:
:func:`selfhost.deployment.prepare_root`). The port must be free before anything starts. With an RPC endpoint the
banner shows only its origin (providers put API keys in the path or query).

Ctrl-C, SIGTERM, SIGHUP (terminal closed) and SIGQUIT all stop the services cleanly (:mod:`selfhost.lifetime`);
a runner killed outright takes them with it (parent-death signal, Linux).

Exit codes: 0 stopped by one of those signals, 1 a service failed to start or died (the port in use among them),
or state without its unseal secret, 2 bad arguments or a state directory that cannot be used.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from parent_proxy.owner_signers import LocalOwnerSigner, OwnerKeyError, write_keypair_file
from parent_proxy.rpc_url_options import add_rpc_url_arguments, rpc_url_option
from selfhost.compose_model import ComposeError
from selfhost.deployment import (
    NO_SQUADS_WARNING,
    OWNER_KEYPAIR,
    Deployment,
    StateDirError,
    prepare_root,
    run_local,
)
from selfhost.lifetime import stop_on_signals
from selfhost.local_stack import StackError, tail
from selfhost.paths import PathMappingError
from selfhost.reseal import register as register_reseal

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2
WATCH_SECONDS: Final = 1.0


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "waiaas" / "selfhost"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("selfhost", help="run the self-host services as local processes")
    commands = parser.add_subparsers(dest="selfhost_command", required=True, metavar="ACTION")
    up = commands.add_parser("up", help="start signer and proxy (and a local chain) until Ctrl-C")
    up.add_argument("--state-dir", type=Path, default=None, help=f"default: {default_state_dir()}")
    up.add_argument("--port", type=int, default=8080, help="loopback port of the HTTP API (default 8080)")
    chain = up.add_mutually_exclusive_group()
    chain.add_argument("--local-chain", action="store_true", help="a local LiteSVM JSON-RPC chain (the default)")
    add_rpc_url_arguments(chain, what="a real chain instead of the local one, http(s)://...")
    up.add_argument("--owner-key", action="append", default=[], help="base58 owner public key (repeatable)")
    up.add_argument(
        "--allow-private-webhooks",
        action="store_true",
        help="let webhooks go to loopback and private addresses (a receiver on this machine or your LAN); cloud "
        "metadata and link-local addresses stay refused",
    )
    up.set_defaults(func=run_up)
    register_reseal(commands, default_state_dir())


def owner_keypair(root: Path) -> LocalOwnerSigner:
    """``<root>/owner.json``: loaded if present, else made (mode 0600). Its secret half is never printed."""
    path = root / OWNER_KEYPAIR
    if not path.exists():
        write_keypair_file(path, Ed25519PrivateKey.generate())
    return LocalOwnerSigner.from_file(path)


def url_origin_only(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: no user, password, path, query or fragment (where providers put API
    keys). ValueError if it has no host or a bad port."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port  # .port: ValueError if not a number in 0-65535
    if not host:
        raise ValueError("has no host")
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}" + (f":{port}" if port is not None else "")


def _describe(
    deployment: Deployment, owner_keys: list[str], keypair: Path | None, *, rpc: bool, private_webhooks: bool
) -> None:
    print(f"WAIaaS self-host is up: {deployment.api_url}  (try {deployment.api_url}/readyz)")
    if rpc:
        print(f"  chain        {url_origin_only(deployment.chain_url)}  (RPC endpoint; its path and query not shown)")
    else:
        print(f"  chain        {deployment.chain_url}")
    print(f"  state        {deployment.root}  (SQLite: {deployment.database})")
    print(f"  logs         {deployment.root / 'logs'}")
    print(f"  owner keys   {', '.join(owner_keys)}")
    if keypair is not None:
        print(f"  owner tool   waiaas owner --keypair {keypair} call --url {deployment.api_url} METHOD PATH")
        print(f"  warning      {keypair} is a throw-away owner key for this local chain only: it lies")
        print("               beside the sealed agent keys and the unseal secret; never use it on a real chain")
    if private_webhooks:
        print("  webhooks     loopback and private destinations allowed (--allow-private-webhooks)")
    print("  attestation  none: no Nitro hardware here, and the API says so (docs/selfhost.md)")
    if not deployment.multisig_required:
        print(f"  warning      {NO_SQUADS_WARNING}")
    print("Ctrl-C stops the services.", flush=True)


@dataclass(frozen=True)
class UpArguments:
    owner_keys: list[str]
    rpc_url: str | None = field(repr=False)  # may carry a provider's API key: never printed


def _warn(message: str) -> None:
    print(f"selfhost up: warning: {message}", file=sys.stderr)


def _check_args(args: argparse.Namespace, root: Path) -> UpArguments:
    if not 1 <= args.port <= 65535:
        raise ValueError("--port must be 1-65535")
    rpc_url = rpc_url_option(args.rpc_url, args.rpc_url_file, _warn)
    if rpc_url is not None:
        option = "--rpc-url" if args.rpc_url is not None else "--rpc-url-file"
        try:
            url_origin_only(rpc_url)
        except ValueError as exc:
            raise ValueError(f"{option} must be an http(s) URL with a host and a valid port") from exc
        # The owner key of a wallet on a real chain must not sit beside its sealed agent key and the unseal secret:
        # whoever reads the directory (or a backup of it) would hold both members of the 2-of-2 multisig.
        if not args.owner_key:
            raise ValueError(
                f"{option} needs --owner-key: on a real chain the owner key must be yours, made and kept off this "
                "machine (docs/selfhost.md); the throw-away owner key is for the local chain only"
            )
        if (root / OWNER_KEYPAIR).exists():
            raise ValueError(
                f"{root} holds a throw-away owner key ({OWNER_KEYPAIR}) made for the local chain: "
                "use another --state-dir for a real chain"
            )
    for number, key in enumerate(args.owner_key, 1):
        try:
            Pubkey.from_string(key)
        except ValueError:  # not shown: a private key pasted by mistake must not reach the terminal's scrollback
            raise ValueError(
                f"--owner-key (number {number} given) is not a base58 public key of 32 bytes, "
                "as `waiaas owner --keypair FILE pubkey` prints it"
            ) from None
    return UpArguments(list(args.owner_key), rpc_url)


def run_up(args: argparse.Namespace) -> int:
    try:
        checked = _check_args(args, args.state_dir or default_state_dir())
    except ValueError as exc:
        print(f"selfhost up: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    owner_keys = checked.owner_keys
    try:
        root = prepare_root(args.state_dir or default_state_dir())
        keypair = None
        if not owner_keys:
            try:
                owner_keys = [str(owner_keypair(root).public_key)]
            except OSError as exc:
                raise StateDirError(f"cannot use state directory {root}: {exc.strerror or exc}") from exc
            keypair = root / OWNER_KEYPAIR
    except (StateDirError, OwnerKeyError) as exc:
        print(f"selfhost up: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with stop_on_signals():
        try:
            with run_local(
                root, owner_keys=owner_keys, port=args.port, rpc_url=checked.rpc_url,
                webhook_allow_private=args.allow_private_webhooks,
            ) as deployment:  # fmt: skip
                _describe(
                    deployment, owner_keys, keypair, rpc=checked.rpc_url is not None,
                    private_webhooks=args.allow_private_webhooks,
                )  # fmt: skip
                while not (exited := deployment.exited()):
                    time.sleep(WATCH_SECONDS)
                for name, code in exited.items():
                    print(f"selfhost up: {name} exited with {code}:\n{tail(deployment.logs[name])}", file=sys.stderr)
                return EXIT_FAILED
        except KeyboardInterrupt:
            print("stopped.")
            return EXIT_OK
        except (StackError, ComposeError, PathMappingError) as exc:
            print(f"selfhost up: {exc}", file=sys.stderr)
            return EXIT_FAILED
