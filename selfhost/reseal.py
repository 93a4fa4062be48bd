"""``waiaas selfhost reseal``: move every wallet's sealed agent key from the old unseal secret to a new one.

    waiaas selfhost reseal [--state-dir DIR] --new-secret-file FILE [--old-secret-file FILE]

With the services stopped. Paths under the state directory are those of ``waiaas selfhost up``
(:mod:`selfhost.deployment`), which are also the container directories of the Docker bundle mapped as
:mod:`selfhost.paths` maps them (docs/selfhost.md, Rotation, mounts the volumes that way)::

    DIR/state/waiaas.db                   the SQLite state (wallets with their sealed agent keys)
    DIR/secrets/waiaas_unseal_secret      the old secret, unless --old-secret-file says otherwise
    DIR/socket/signer.sock                the signer's socket (to tell whether it is running)

Steps; a refusal at any of them writes nothing:

1. Both secrets are read as the signer reads its own (:func:`read_secret`): the file's bytes without trailing
   CR/LF, at least ``MIN_OPERATOR_SECRET_BYTES`` of them (the signer's minimum, enforced by ``LocalSealer``), the
   file not readable by group or others (the one rule of ``enclave_app.secret_file``). The new secret must differ
   from the old one.
2. The signer is not running: its socket accepts no connection (:func:`check_signer_stopped`). A stale socket
   file (refused connection) or none at all is fine; anything else (a connection accepted, no permission to
   try) is a refusal.
3. No other process has the state database open (:func:`exclusive_state`): the store keeps it in WAL mode, where
   every open connection holds a shared lock on the database file for as long as it is open, so an exclusive
   lock taken without waiting fails while a proxy runs, even an idle one. The lock is held through step 4, so
   a proxy started meanwhile cannot open the state (it stops at start-up). A state restored from a backup
   (docs/selfhost.md, Backup and Restore) is in a rollback-journal mode (DELETE) instead: no proxy can have it
   open (the store switches the file to WAL whenever it opens it), and the exclusive lock on it keeps out every
   other reader and writer. It is left in that mode; the store that writes in step 5 switches it to WAL, as a
   proxy would at start-up, so a refusal changes nothing.
   No wallet may be in the middle of an agent-key rotation (:func:`check_no_candidates`): a candidate's sealed
   blob is not resealed, and once the rotation transaction lands the candidate is the member the 2-of-2 multisig
   needs; under a new secret its blob would never open again. Finish the rotation (its switch) first. The blobs
   of retired agent keys (members of no multisig) stay under the old secret.
4. For each wallet, in wallet-id order, one at a time (two Argon2id derivations at once were seen to hang with the
   cryptography/OpenSSL build of this checkout): unseal its blob with the old secret against the binding the
   signer uses when it loads a wallet (wallet id, pinned agent public key, owner public key:
   ``enclave_app.sealing.unseal_agent_key``, which also checks that the key derives the pinned public key), seal
   that key under the new secret (``seal_agent_key``), and unseal the new blob with the new secret to check that
   it opens, under the same binding, to the same key.
5. The signer is checked again, the lock released, and every new blob written in one store transaction
   (``Store.replace_sealed_keys``): each only if the wallet still holds the blob read in step 3, together with the
   audit record ``wallets.resealed`` naming the wallets. All wallets or none.

What is left to the operator (docs/selfhost.md, Rotation): back up the state first, put the new secret in place
of the old one after this command, start the services, check that the wallets sign. Between this command and
the swap, the stored blobs open only with the new secret: keep both files until the swap is done.

Printed: paths, wallet ids, counts, timings, the audit record's sequence number. Never a secret, a derived key,
an agent key or a blob; error messages neither.

Exit codes: 0 done (or no wallet to reseal), 1 refused because of the state or the services (nothing changed),
2 bad arguments or secret files (nothing read from the state).
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from enclave_app.errors import KeyDerivationError, KeyMismatchError, SealingError, SecretFileError
from enclave_app.sealing import MIN_OPERATOR_SECRET_BYTES, LocalSealer, SealBinding, seal_agent_key, unseal_agent_key
from enclave_app.secret_file import read_operator_secret
from parent_proxy.audit import AuditLog
from parent_proxy.clock import SystemClock
from parent_proxy.errors import StoreError
from parent_proxy.store.sealed_keys import SealedKeyReplacement
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.store.sqlite_schema import SCHEMA_VERSION
from selfhost import paths
from selfhost.deployment import DATABASE

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_BAD_INPUT: Final = 2
AUDIT_EVENT: Final = "wallets.resealed"
SIGNER_PROBE_SECONDS: Final = 2.0
SIGNER_SOCKET: Final = Path(paths.CONTAINER_TO_LOCAL[paths.SOCKET_DIR]) / Path(paths.SIGNER_SOCKET).name
OLD_SECRET: Final = Path(paths.CONTAINER_TO_LOCAL[paths.SECRETS_DIR]) / paths.UNSEAL_SECRET_NAME


class ResealRefused(Exception):
    """Nothing was changed. ``exit_code`` says whether the state/services (1) or the arguments (2) were refused.
    Messages name paths and wallets, never secret material."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class StoredWallet:
    """What step 4 needs of a wallet, as read under the exclusive lock."""

    wallet_id: str
    agent_pubkey: bytes
    owner_pubkey: bytes
    sealed_key: bytes = field(repr=False)


@dataclass(frozen=True)
class ResealReport:
    wallet_ids: tuple[str, ...]
    audit_seq: int | None
    seconds_per_wallet: tuple[float, ...]


def read_secret(path: Path, option: str) -> bytes:
    """The secret in ``path`` exactly as the signer reads its own (``enclave_app.secret_file``, its mode rule
    included), refused if missing, not a regular file, readable by group or others, or shorter than the signer
    accepts."""
    try:
        secret = read_operator_secret(path)
    except SecretFileError as exc:  # "<path>: <reason>"
        raise ResealRefused(f"{option} {exc}", EXIT_BAD_INPUT) from None
    if not secret:
        raise ResealRefused(f"{option} {path}: empty", EXIT_BAD_INPUT)
    if len(secret) < MIN_OPERATOR_SECRET_BYTES:
        raise ResealRefused(
            f"{option} {path}: shorter than {MIN_OPERATOR_SECRET_BYTES} bytes, the signer's minimum", EXIT_BAD_INPUT
        )
    return secret


def check_signer_stopped(socket_path: Path) -> None:
    """Return if nothing accepts connections on ``socket_path``; else :class:`ResealRefused`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(SIGNER_PROBE_SECONDS)
        try:
            probe.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            return  # no socket, or a socket file its process left behind
        except OSError as exc:
            raise ResealRefused(
                f"cannot tell whether the signer is running ({socket_path}: {exc.strerror or type(exc).__name__}); "
                "stop it and retry"
            ) from None
    raise ResealRefused(f"the signer is running (its socket {socket_path} accepts connections): stop it first")


@contextlib.contextmanager
def exclusive_state(database: Path) -> Iterator[sqlite3.Connection]:
    """A connection holding the state database's exclusive lock, taken without waiting (see step 3 above); the
    database is opened read-write but never written through it, and never created."""
    if not database.is_file():
        raise ResealRefused(f"no state database at {database}")
    conn = sqlite3.connect(f"{database.resolve().as_uri()}?mode=rw", uri=True, timeout=0, isolation_level=None)
    try:
        try:
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            conn.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise ResealRefused(
                    f"the state database {database} is in use by another process (a running proxy?): stop it first"
                ) from None
            raise ResealRefused(f"the state database {database} cannot be opened: {exc}") from None
        try:
            yield conn
        finally:
            conn.rollback()
    finally:
        conn.close()


def read_wallets(conn: sqlite3.Connection, database: Path) -> list[StoredWallet]:
    """Every wallet's keys and sealed blob (``SqliteStore``'s ``wallets`` table), in wallet-id order; refused unless
    the schema version is one this version knows. Either journal mode a file can be in is fine (step 3)."""
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if not 1 <= version <= SCHEMA_VERSION:
            raise ResealRefused(
                f"{database} has schema version {version} (this version knows 1 to {SCHEMA_VERSION}): not a state "
                "database this version can reseal"
            )
        rows = conn.execute(
            "SELECT wallet_id, agent_pubkey, owner_pubkey, sealed_key FROM wallets ORDER BY wallet_id"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise ResealRefused(f"the state database {database} cannot be read: {exc}") from None
    return [StoredWallet(*row) for row in rows]


def check_no_candidates(conn: sqlite3.Connection, database: Path) -> None:
    """Refuse while any wallet holds a candidate agent key (step 3; the table exists from schema version 6)."""
    try:
        if conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'agent_key_candidates'"
        ).fetchone():
            rows = conn.execute("SELECT wallet_id FROM agent_key_candidates ORDER BY wallet_id").fetchall()
        else:
            rows = []
    except sqlite3.DatabaseError as exc:
        raise ResealRefused(f"the state database {database} cannot be read: {exc}") from None
    if rows:
        ids = ", ".join(row[0] for row in rows)
        raise ResealRefused(
            f"wallet(s) {ids} are in the middle of an agent-key rotation (a candidate key is kept): finish it with "
            "the switch first (docs/rotation.md), then reseal"
        )


def _seed(key: Any) -> bytes:
    seed: bytes = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return seed


def _derivation_failed(wallet: StoredWallet) -> ResealRefused:
    return ResealRefused(
        f"wallet {wallet.wallet_id}: the key derivation (Argon2id, 64 MiB) failed, which says nothing about the "
        "secrets or the blob: free some memory and run the command again"
    )


def reseal_blob(old: LocalSealer, new: LocalSealer, wallet: StoredWallet) -> bytes:
    """The wallet's agent key, sealed under ``new`` instead of ``old``; checked to open again to the same key."""
    try:
        binding = SealBinding(wallet.wallet_id, wallet.agent_pubkey, wallet.owner_pubkey)
    except SealingError:
        raise ResealRefused(f"wallet {wallet.wallet_id}: its stored public keys are malformed") from None
    try:
        key = unseal_agent_key(old, wallet.sealed_key, binding)
    except KeyDerivationError:
        raise _derivation_failed(wallet) from None
    except KeyMismatchError:
        raise ResealRefused(
            f"wallet {wallet.wallet_id}: its sealed key opens with the old secret to a key other than the wallet's "
            "agent public key"
        ) from None
    except SealingError:
        raise ResealRefused(
            f"wallet {wallet.wallet_id}: its sealed key does not open with the old secret (wrong "
            "--old-secret-file, or a damaged blob)"
        ) from None
    try:
        blob = seal_agent_key(new, key, binding)
        again = unseal_agent_key(new, blob, binding)
    except KeyDerivationError:
        raise _derivation_failed(wallet) from None
    except SealingError:  # cannot happen unless sealing is broken; refuse rather than store a blob nothing opens
        raise ResealRefused(f"wallet {wallet.wallet_id}: the new blob does not open with the new secret") from None
    if not hmac.compare_digest(_seed(again), _seed(key)):
        raise ResealRefused(f"wallet {wallet.wallet_id}: the new blob opens to another key")
    return blob


def reseal(database: Path, signer_socket: Path, old_secret: bytes, new_secret: bytes) -> ResealReport:
    """Steps 2 to 5 of the module docstring. Raises :class:`ResealRefused` with nothing changed."""
    if hmac.compare_digest(old_secret, new_secret):
        raise ResealRefused("the new secret is the old secret", EXIT_BAD_INPUT)
    old, new = LocalSealer(old_secret), LocalSealer(new_secret)
    check_signer_stopped(signer_socket)
    replacements: list[SealedKeyReplacement] = []
    seconds: list[float] = []
    with exclusive_state(database) as conn:
        wallets = read_wallets(conn, database)
        check_no_candidates(conn, database)
        for wallet in wallets:
            started = time.perf_counter()
            blob = reseal_blob(old, new, wallet)
            replacements.append(SealedKeyReplacement(wallet.wallet_id, wallet.sealed_key, blob))
            seconds.append(time.perf_counter() - started)
            print(f"  {wallet.wallet_id}: resealed ({seconds[-1]:.2f} s)", flush=True)
    if not replacements:
        return ResealReport((), None, ())
    check_signer_stopped(signer_socket)
    ids = [r.wallet_id for r in replacements]
    store = SqliteStore(database)
    try:
        sealer = AuditLog(store, SystemClock()).sealer(AUDIT_EVENT, {"wallets": ids, "count": len(ids)})
        record = store.replace_sealed_keys(replacements, sealer)
    except StoreError as exc:
        raise ResealRefused(f"the state refused the new blobs, nothing was written: {exc}") from None
    finally:
        store.close()
    return ResealReport(tuple(ids), record.seq, tuple(seconds))


def register(commands: Any, default_state_dir: Path) -> None:
    parser = commands.add_parser(
        "reseal",
        help="re-seal every wallet's agent key under a new unseal secret (services stopped)",
        description="Re-seal every wallet's agent key from the old unseal secret to a new one, all wallets or none. "
        "Stop the services and back up the state first; afterwards put the new secret in place of the old one "
        "(docs/selfhost.md, Rotation).",
    )
    parser.add_argument("--state-dir", type=Path, default=None, help=f"default: {default_state_dir}")
    parser.add_argument("--new-secret-file", type=Path, required=True, help="the new unseal secret (mode 0400)")
    parser.add_argument(
        "--old-secret-file", type=Path, default=None, help=f"default: STATE_DIR/{OLD_SECRET} (the secret in use)"
    )
    parser.set_defaults(func=run_reseal, default_state_dir=default_state_dir)


def run_reseal(args: argparse.Namespace) -> int:
    root: Path = args.state_dir or args.default_state_dir
    database, signer_socket = root / DATABASE, root / SIGNER_SOCKET
    old_file: Path = args.old_secret_file or root / OLD_SECRET
    started = time.perf_counter()
    try:
        old_secret = read_secret(old_file, "--old-secret-file")
        new_secret = read_secret(args.new_secret_file, "--new-secret-file")
        print(f"resealing the wallets of {database} (old secret {old_file}, new secret {args.new_secret_file})")
        report = reseal(database, signer_socket, old_secret, new_secret)
    except ResealRefused as exc:
        print(f"selfhost reseal: refused: {exc}; nothing was changed", file=sys.stderr)
        return exc.exit_code
    if not report.wallet_ids:
        print("no wallets: nothing to reseal; the new secret can replace the old one")
        return EXIT_OK
    per_wallet = sum(report.seconds_per_wallet) / len(report.seconds_per_wallet)
    print(
        f"resealed {len(report.wallet_ids)} wallets in {time.perf_counter() - started:.1f} s "
        f"({per_wallet:.2f} s per wallet), audit record {report.audit_seq} ({AUDIT_EVENT}).\n"
        + next_step(root / OLD_SECRET, old_file, args.new_secret_file)
    )
    return EXIT_OK


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:  # one of them does not exist
        return False


def next_step(in_use: Path, old_file: Path, new_file: Path) -> str:
    """What the operator does after a reseal. ``in_use`` is the secret the services of this state directory read;
    "put the new file in place of the old one" is said only where the old one is that file."""
    if _same_file(new_file, in_use):  # a restored backup resealed to the secret already in use (Restore)
        return (
            f"The stored blobs now open only with {new_file}, which is where the services read the secret: start "
            f"them, and keep {old_file} until they sign again."
        )
    if _same_file(old_file, in_use):
        return (
            f"The stored blobs now open only with {new_file}: put it in place of {old_file} before starting the "
            "services, and keep the old file until they sign again."
        )
    return (
        f"The stored blobs now open only with {new_file}: make it the secret the services read before starting "
        f"them (by default {in_use}), and keep {old_file} until they sign again."
    )
