"""``waiaas demo``: the whole story, through the HTTP API of the self-host services running as local processes.

It starts what ``docker compose up`` would start (:mod:`selfhost.deployment`: signer and proxy from
selfhost/docker-compose.yml, embedded SQLite, local sealing) plus a local LiteSVM JSON-RPC chain that the proxy
and the story share (it has no Squads program: the wallet is no multisig, the example policy declares none, and
the proxy runs without requiring one, as it prints first), creates the owner (a fresh keypair file, mode 0600, in
the run directory), and plays the ten steps of :mod:`selfhost.demo_story` as the owner and as the agent (readiness
and attestation, a wallet, its policy, an agent token, a payment allowed, one escalated and approved, one denied, an
attack that freezes the wallet, the unfreeze, and the owner's check that the unfreeze reached the signer). Step 11
stops the services and verifies the audit log's hash chain and its enclave receipts (``waiaas audit verify
--receipts``, `selfhost.demo_checks`). The first step that misbehaves ends the story.

Printed: public keys, statuses, reasons, balances; never the agent token (a redacted prefix), the owner's secret
key or the unseal secret. Ctrl-C, SIGTERM, SIGHUP and SIGQUIT stop the services cleanly (:mod:`selfhost.lifetime`;
a demo killed outright takes them with it, Linux). The run directory is created mode 0700, or must be an empty one
of this user's, mode 0700 or tighter (:func:`selfhost.deployment.prepare_root`: it is never chmodded).
Exit codes: 0 every step behaved, 1 a step misbehaved, 2 the services did not start or the run directory cannot be
used, 130 stopped by one of those signals. Without ``--run-dir`` the run directory is a new temporary one, removed
after a run that exits 0 (it holds only this run's throwaway owner key, unseal secret and logs) and kept otherwise,
for its logs, with a line saying what it holds; a directory given with ``--run-dir`` is always kept.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from parent_proxy.owner_signers import LocalOwnerSigner, write_keypair_file
from selfhost.compose_model import ComposeError
from selfhost.demo_checks import StepFailed, verify_audit
from selfhost.demo_story import Story
from selfhost.deployment import NO_SQUADS_WARNING, OWNER_KEYPAIR, StateDirError, prepare_root, run_local
from selfhost.lifetime import stop_on_signals
from selfhost.local_stack import StackError, free_port
from selfhost.paths import PathMappingError

EXIT_OK: Final = 0
EXIT_MISBEHAVED: Final = 1
EXIT_NOT_STARTED: Final = 2
EXIT_STOPPED: Final = 130
"""As a shell reports a command ended by Ctrl-C (128 + SIGINT), whichever stop signal it was."""
HTTP_TIMEOUT_SECONDS: Final = 30.0


def new_owner(run_dir: Path) -> LocalOwnerSigner:
    path = run_dir / OWNER_KEYPAIR
    write_keypair_file(path, Ed25519PrivateKey.generate())
    return LocalOwnerSigner.from_file(path)


def run_demo(run_dir: Path, port: int, out: Callable[[str], None] = print) -> int:
    try:
        run_dir = prepare_root(run_dir, "run directory")
        owner = new_owner(run_dir)
    except (StateDirError, OSError) as exc:
        why = exc if isinstance(exc, StateDirError) else f"cannot use run directory {run_dir}: {exc.strerror or exc}"
        print(f"demo: {why}", file=sys.stderr)
        return EXIT_NOT_STARTED
    with stop_on_signals():
        return _play(run_dir, owner, port, out)


def _play(run_dir: Path, owner: LocalOwnerSigner, port: int, out: Callable[[str], None]) -> int:
    out(f"WAIaaS demo: starting chain, signer and proxy as local processes (run directory {run_dir})")
    story: Story | None = None
    try:
        with run_local(run_dir, owner_keys=[str(owner.public_key)], port=port) as deployment:
            out(f"   API        {deployment.api_url}    chain {deployment.chain_url}    logs {run_dir / 'logs'}")
            if not deployment.multisig_required:
                out(f"   warning    {NO_SQUADS_WARNING}")
            with httpx.Client(timeout=HTTP_TIMEOUT_SECONDS) as http:
                story = Story(deployment, owner, http, out)
                story.run()
            database = deployment.database
        out(
            f"\n== {story.number + 1}. The services are stopped; "
            "the audit log's hash chain and its enclave receipts are verified"
        )
        verify_audit(database, out)
    except (StackError, ComposeError, PathMappingError) as exc:
        out(f"\nthe services did not start: {exc}")
        return EXIT_NOT_STARTED
    except (StepFailed, httpx.HTTPError) as exc:
        out(f"   UNEXPECTED: {exc if isinstance(exc, StepFailed) else type(exc).__name__}")
        out(f"\nthe demo stopped at a step that misbehaved; logs in {run_dir / 'logs'}")
        return EXIT_MISBEHAVED
    except KeyboardInterrupt:
        out(f"\nstopped (Ctrl-C or a stop signal); the services are stopped; logs in {run_dir / 'logs'}")
        return EXIT_STOPPED
    out("\nevery step behaved as expected")
    return EXIT_OK


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser("demo", help="the whole story through the HTTP API of locally started services")
    demo.add_argument(
        "--run-dir",
        type=Path,
        help="where state, secrets and logs go, kept afterwards (default: a new temp dir, removed after a run that "
        "exits 0)",
    )
    demo.add_argument("--port", type=int, default=0, help="loopback port for the API (default: a free one)")
    demo.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.run_dir is not None and args.run_dir.exists() and any(args.run_dir.iterdir()):
        print(f"demo: {args.run_dir} is not empty; every run starts from a fresh directory", file=sys.stderr)
        return EXIT_NOT_STARTED
    try:
        port = args.port or free_port()
    except StackError as exc:
        print(f"demo: {exc}: choose a port with --port", file=sys.stderr)
        return EXIT_NOT_STARTED
    if args.run_dir is not None:
        return run_demo(args.run_dir, port)
    run_dir = Path(tempfile.mkdtemp(prefix="waiaas-demo-"))
    code = run_demo(run_dir, port)
    settle_temporary_run_dir(run_dir, code)
    return code


def settle_temporary_run_dir(run_dir: Path, code: int, out: Callable[[str], None] = print) -> None:
    """Remove the default run directory after a run that exits 0; otherwise keep it for its logs, saying what it holds.

    Nothing in it outlives the run's use: the owner key, the unseal secret and the agent key sealed under it were
    made for this run only. A removal that fails leaves the directory and says so (the exit code stays the run's)."""
    if code != EXIT_OK:
        out(f"run directory kept for its logs: {run_dir} (it holds this run's throwaway owner key and unseal secret)")
        return
    try:
        shutil.rmtree(run_dir)
    except OSError as exc:
        out(f"could not remove the run directory {run_dir}: {exc.strerror or exc}; remove it by hand")
        return
    out(f"run directory removed: {run_dir} (pass --run-dir DIR to keep one)")
