"""A local self-host deployment: the compose bundle's services as local processes, with everything they need.

Used by ``waiaas demo`` and ``waiaas selfhost up``. Layout of the state directory::

    <state>/selfhost.env                   the env file compose reads (owner keys, chain, port, public origins,
                                           secret path, webhook destinations; no secret), mode 0600 (an RPC
                                           URL may carry a provider's API key)
    <state>/secrets/waiaas_unseal_secret   the unseal secret, mode 0400, made on the first run only (never
                                           printed): while <state>/state/waiaas.db exists a missing secret is
                                           refused, never replaced (:func:`ensure_unseal_secret`)
    <state>/socket/signer.sock             the signer's Unix socket
    <state>/state/waiaas.db                SQLite state: wallets with sealed agent keys, tokens (hashed), audit log
    <state>/sealed/<wallet>/<agent key>    a write-once copy of each sealed agent key (the proxy's
                                           ``WAIAAS_SEALED_KEYS_DIR``, the bundle's sealed-keys volume)
    <state>/logs/{chain,signer,proxy}.log  each process's output
    <state>/owner.json                     the throw-away owner key of the local chain (selfhost up, the demo)
    <state>/verify-order/                  the demo's owner check (selfhost.demo_checks)

The state directory (:func:`prepare_root`): a new one is created mode 0700; an existing one is used as it is, never
chmodded (``--state-dir /tmp`` must not strip a shared directory's sticky bit), and only if it is ours to use: owned
by this user, mode 0700 or tighter, and empty or holding nothing but the entries above (:data:`STATE_ENTRIES`).
Anything else is refused with :class:`StateDirError`, as is a directory that cannot be created or written.

Start order: the published port is checked to be free (:func:`selfhost.local_stack.check_port_free`); the local
chain (:mod:`selfhost.local_chain`, unless an RPC URL is given), waited for with a ``getHealth`` call; then
``signer`` and ``proxy`` exactly as selfhost/docker-compose.yml gives them (:mod:`selfhost.local_stack`), each
waited for with its compose healthcheck. Stop: reverse order, on exit or error.
The proxy reaches the chain through its JSON-RPC adapter (``WAIAAS_CHAIN=rpc:http://127.0.0.1:<port>/``), the
same chain the caller sees at :attr:`Deployment.chain_url`.

Owner requests are signed for the origin the owner's tool sends them to (``parent_proxy.owner_auth``, audience):
the proxy accepts :func:`loopback_origins` of the published port, the two names of this machine's loopback address
(``http://127.0.0.1:<port>`` as :attr:`Deployment.api_url` says, and ``http://localhost:<port>``).

Squads. The local chain has no Squads program, so no multisig can exist on it: only with it does the env file say
``WAIAAS_REQUIRE_MULTISIG=false``, which the compose file gives the proxy and, as ``WAIAAS_ENCLAVE_REQUIRE_MULTISIG``,
the signer (policies that declare no multisig are installed, and such a wallet's funds sit in its agent key's own
account with no on-chain limit; :data:`NO_SQUADS_WARNING` says so, and the callers print it). With an RPC URL the
compose default stands: every policy must declare a multisig, checked on chain at install, and the signer refuses
one that does not.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from enclave_app.errors import SecretFileError
from enclave_app.secret_file import check_secret_file_mode
from selfhost import paths
from selfhost.compose_model import COMPOSE_FILE, load_model, write_env_file
from selfhost.local_stack import (
    HEALTH_TIMEOUT_SECONDS,
    ProcessGroup,
    StackError,
    base_env,
    check_port_free,
    free_port,
    run_stack,
)

ENV_FILE_NAME: Final = "selfhost.env"
OWNER_KEYPAIR: Final = "owner.json"
VERIFY_ORDER_DIR: Final = "verify-order"
STATE_ENTRIES: Final = frozenset(
    {ENV_FILE_NAME, OWNER_KEYPAIR, VERIFY_ORDER_DIR, *paths.CONTAINER_TO_LOCAL.values(), "logs"}
)
"""What the commands put in a state directory (module docstring): an existing directory holding anything else is
not one of ours."""
DATABASE: Final = Path("state") / "waiaas.db"
UNSEAL_SECRET_BYTES: Final = 32
CHAIN_PROBE_SECONDS: Final = 2.0
NO_SQUADS_WARNING: Final = (
    "the local chain has no Squads program, so wallets here have no on-chain limit: the proxy runs with "
    "WAIAAS_REQUIRE_MULTISIG=false and the signer with WAIAAS_ENCLAVE_REQUIRE_MULTISIG=false, policies declare no "
    "multisig, and each agent key's own account holds its "
    "wallet's funds with nothing on chain bounding it. On-chain limits need a chain with Squads (--rpc-url)"
)


@dataclass(frozen=True)
class Deployment:
    root: Path
    api_url: str
    chain_url: str
    database: Path
    logs: dict[str, Path]
    group: ProcessGroup
    """The chain's process (if local); the services' processes are in ``services``."""
    services: ProcessGroup
    multisig_required: bool
    """The proxy's ``WAIAAS_REQUIRE_MULTISIG`` and the signer's ``WAIAAS_ENCLAVE_REQUIRE_MULTISIG`` (one env-file
    setting): false only on the local chain (:data:`NO_SQUADS_WARNING`)."""

    def exited(self) -> dict[str, int]:
        """Processes of this deployment that have stopped on their own, with their exit codes."""
        return {**self.group.exited(), **self.services.exited()}


class StateDirError(Exception):
    """The state (or run) directory cannot be used; the message names it and says what to do."""


def prepare_root(root: Path, what: str = "state directory") -> Path:
    """``root``, resolved: created mode 0700 if new, else checked and left as it is (module docstring), then
    checked to be writable. :class:`StateDirError` otherwise (``what`` names the directory's role in it); nothing is
    changed in a directory that is refused."""
    try:
        try:
            root.mkdir(mode=0o700, parents=True)
            root.chmod(0o700)  # ours, just made: whatever the umask left of 0700
        except FileExistsError:
            _check_existing(root, what)
        with tempfile.TemporaryFile(dir=root):  # can we write there? (no name left behind where O_TMPFILE exists)
            pass
        return root.resolve()
    except OSError as exc:
        raise StateDirError(f"cannot use {what} {root}: {exc.strerror or exc}") from exc


def _check_existing(root: Path, what: str) -> None:
    info = root.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise StateDirError(f"{what} {root} exists and is not a directory: choose another path")
    foreign = sorted(entry.name for entry in root.iterdir() if entry.name not in STATE_ENTRIES)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise StateDirError(
            f"{what} {root} is not empty and is not a waiaas state directory (it holds {shown}): choose a new or "
            "empty directory (a new one is created mode 0700)"
        )
    if info.st_uid != os.geteuid():
        raise StateDirError(
            f"{what} {root} belongs to uid {info.st_uid}, not to you: choose a directory of your own (a new one is "
            "created mode 0700)"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise StateDirError(
            f"{what} {root} is open to group or others (mode {mode:04o}), and it will hold the unseal secret and the "
            f"sealed agent keys: `chmod 700 {root}` if it is yours to use, or choose a new directory (created mode "
            "0700)"
        )


def ensure_unseal_secret(root: Path) -> Path:
    """``<root>/secrets/waiaas_unseal_secret``: kept if present (mode checked), else made fresh with mode 0400, but
    only while there is no state database: :class:`StackError` when ``<root>/state/waiaas.db`` exists.

    A fresh secret opens none of the stored wallets' sealed keys, and a wallet the signer made under it would lose
    its agent key (a member of its 2-of-2 multisig) once the right secret is back; so state without its secret is
    refused, never "repaired". The database is not read: any state the proxy wrote may hold a wallet."""
    directory = root / "secrets"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / paths.UNSEAL_SECRET_NAME
    if path.exists():
        try:
            check_secret_file_mode(path, path.stat().st_mode)  # the signer's own rule (enclave_app.secret_file)
        except SecretFileError as exc:
            raise StackError(str(exc)) from None
        return path
    database = root / DATABASE
    if database.exists():
        raise StackError(
            f"{path} is missing, but {database} holds state whose wallets are sealed under the unseal secret: a "
            "new secret would open none of them, and a wallet made under it would lose its agent key once the "
            f"right secret is back. Restore the secret from your backup to {path} (mode 0400; docs/selfhost.md, "
            f"What to back up); to start afresh instead, move {database.parent} aside"
        )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_urlsafe(UNSEAL_SECRET_BYTES))
    return path


def chain_healthy(url: str) -> bool:
    body = {"jsonrpc": "2.0", "id": 1, "method": "getHealth"}
    try:
        answer = httpx.post(url, json=body, timeout=CHAIN_PROBE_SECONDS)
        return answer.status_code == 200 and answer.json().get("result") == "ok"
    except (httpx.HTTPError, ValueError):
        return False


def start_local_chain(group: ProcessGroup, root: Path, timeout: float = HEALTH_TIMEOUT_SECONDS) -> str:
    """Start ``python -m selfhost.local_chain`` in ``group``; return its URL once it answers ``getHealth``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    group.spawn("chain", [sys.executable, "-m", "selfhost.local_chain", "--port", str(port)], base_env(root))
    group.wait_healthy("chain", lambda: chain_healthy(url), timeout)
    return url


def loopback_origins(port: int) -> tuple[str, str]:
    """The proxy's public origins when it is published on this machine's loopback address at ``port``."""
    return f"http://127.0.0.1:{port}", f"http://localhost:{port}"


@contextlib.contextmanager
def run_local(
    root: Path,
    *,
    owner_keys: Sequence[str],
    port: int,
    rpc_url: str | None = None,
    webhook_allow_private: bool = False,
    health_timeout: float = HEALTH_TIMEOUT_SECONDS,
) -> Iterator[Deployment]:
    """Start the deployment under ``root`` (see the module docstring); stop everything on exit.
    ``webhook_allow_private`` lets the proxy send webhooks to loopback and private addresses (a receiver on this
    machine or the LAN; the compose file's ``WAIAAS_WEBHOOK_ALLOW_PRIVATE``)."""
    root = prepare_root(root)
    secret = ensure_unseal_secret(root)
    check_port_free(port)
    chain_group = ProcessGroup(root)
    try:
        chain_url = rpc_url if rpc_url is not None else start_local_chain(chain_group, root, health_timeout)
        multisig_required = rpc_url is not None  # the local chain has no Squads program (module docstring)
        env_file = write_env_file(
            root / ENV_FILE_NAME,
            {
                "WAIAAS_OWNER_KEYS": ",".join(owner_keys),
                "WAIAAS_CHAIN": f"rpc:{chain_url}",
                "WAIAAS_PUBLISH_PORT": str(port),
                "WAIAAS_PUBLIC_ORIGINS": ",".join(loopback_origins(port)),
                "WAIAAS_UNSEAL_SECRET_PATH": str(secret),
                "WAIAAS_WEBHOOK_ALLOW_PRIVATE": "true" if webhook_allow_private else "false",
                "WAIAAS_REQUIRE_MULTISIG": "true" if multisig_required else "false",
            },
        )
        env_file.chmod(0o600)
        model = load_model(COMPOSE_FILE, env_file)
        published = {int(p["target"]): port for p in model["services"]["proxy"].get("ports") or []}
        with run_stack(model, root, published=published, health_timeout=health_timeout) as stack:
            yield Deployment(
                root=root,
                api_url=f"http://127.0.0.1:{port}",
                chain_url=chain_url,
                database=root / DATABASE,
                logs={**chain_group.logs, **stack.logs},
                group=chain_group,
                services=stack.group,
                multisig_required=multisig_required,
            )
    finally:
        chain_group.stop_all()
