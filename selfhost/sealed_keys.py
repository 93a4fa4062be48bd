"""The sealed-keys volume against a state: which keys a state lost, and putting a wallet's blob back from its copy.

The proxy writes each new sealed agent key once into ``WAIAAS_SEALED_KEYS_DIR`` (`parent_proxy.sealed_directory`:
``<dir>/<wallet id>/<agent public key, base58>``) before the state keeps it; docs/selfhost.md ("The sealed-keys
volume") says when to use these::

    python -m selfhost.sealed_keys check STATE.db SEALED_DIR
    python -m selfhost.sealed_keys put-back STATE.db SEALED_DIR WALLET_ID

``check`` (read-only: the state is opened ``mode=ro``, the copies only listed) prints one line per copy whose key the
state holds neither as a wallet's agent key nor as its candidate: a wallet made, or a candidate asked for, after the
state's backup was taken, or a creation refused after its copy was written (harmless: a key no wallet ever held).
Exit 0 when every copy's key is in the state, 1 when some are not (each listed), 2 when either cannot be read.

``put-back`` replaces the sealed blob a state holds for ``WALLET_ID`` with the copy named by the agent key that
state records for it, together with the audit record ``wallet.sealed_key_put_back`` (the wallet id and that agent
key), and only if the blob is still the one read (``Store.replace_sealed_keys``): for a blob that was damaged or
overwritten (the signer cannot open it: 503 ``enclave_unavailable`` for that wallet). A wallet the
state does not hold, or whose key has no copy, is refused (exit 2, nothing written); the same blob already there is
left alone (exit 0, says so). A wrong blob cannot be slipped in this way: the signer opens only a blob bound to the
wallet, its agent key and its owner key, and compares the key it opens with the stored one. Stop the proxy first (it
may hold the wallet loaded; it loads it again on its next start).

Public keys and wallet ids only on the output; a blob is never printed.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from solders.pubkey import Pubkey

from parent_proxy.audit import AuditLog
from parent_proxy.clock import SystemClock
from parent_proxy.errors import NotFound, StoreError
from parent_proxy.sealed_directory import NAME_PART
from parent_proxy.store.sealed_keys import SealedKeyReplacement
from parent_proxy.store.sqlite import SqliteStore

KEYS_QUERY = (
    "SELECT wallets.wallet_id, wallets.agent_pubkey, agent_key_candidates.candidate_pubkey FROM wallets "
    "LEFT JOIN agent_key_candidates USING (wallet_id)"
)
AUDIT_EVENT = "wallet.sealed_key_put_back"
USAGE = (
    "usage: python -m selfhost.sealed_keys check STATE.db SEALED_DIR\n"
    "       python -m selfhost.sealed_keys put-back STATE.db SEALED_DIR WALLET_ID\n"
)


class SealedKeysError(Exception):
    """The state or the copies cannot be read, or a put-back is refused; the message says which and why."""


def _connect_read_only(database: Path) -> sqlite3.Connection:
    if not database.is_file():
        raise SealedKeysError(f"{database}: no such file")
    return sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)


def copies(sealed_dir: Path) -> list[str]:
    """``<wallet id>/<agent key>`` of every copy in ``sealed_dir``, sorted (temporary files are no copies)."""
    try:
        return sorted(
            f"{wallet.name}/{copy.name}"
            for wallet in sealed_dir.iterdir()
            if wallet.is_dir() and NAME_PART.fullmatch(wallet.name)
            for copy in wallet.iterdir()
            if copy.is_file() and NAME_PART.fullmatch(copy.name)
        )
    except OSError as exc:
        raise SealedKeysError(f"{sealed_dir}: cannot be read ({exc.strerror})") from None


def missing_from_state(database: Path, sealed_dir: Path) -> list[str]:
    """The copies whose key ``database`` holds neither as a wallet's agent key nor as its candidate."""
    try:
        connection = _connect_read_only(database)
        try:
            rows = connection.execute(KEYS_QUERY).fetchall()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise SealedKeysError(f"{database}: cannot be read as a WAIaaS state ({exc})") from None
    held = {f"{wallet}/{Pubkey.from_bytes(key)}" for wallet, *keys in rows for key in keys if key is not None}
    return [name for name in copies(sealed_dir) if name not in held]


def put_back(database: Path, sealed_dir: Path, wallet_id: str) -> bool:
    """The copy of ``wallet_id``'s recorded agent key into its ``sealed_key`` (module docstring), with the audit
    record `AUDIT_EVENT`: True when written, False when the state held these very bytes. `SealedKeysError` when
    refused (nothing written)."""
    if not NAME_PART.fullmatch(wallet_id):
        raise SealedKeysError(f"{wallet_id!r} is not a wallet id")
    if not database.is_file():
        raise SealedKeysError(f"{database}: no such file")
    try:
        store = SqliteStore(database)
    except (StoreError, sqlite3.Error) as exc:
        raise SealedKeysError(f"{database}: cannot be opened as a WAIaaS state ({exc})") from None
    try:
        try:
            wallet = store.get_wallet(wallet_id)
        except NotFound:
            raise SealedKeysError(f"{database} holds no wallet {wallet_id}") from None
        agent = str(Pubkey.from_bytes(wallet.agent_pubkey))
        copy = sealed_dir / wallet_id / agent
        try:
            blob = copy.read_bytes()
        except OSError as exc:
            raise SealedKeysError(f"no copy of wallet {wallet_id}'s agent key: {copy}: {exc.strerror}") from None
        if blob == wallet.sealed_key:
            return False
        sealer = AuditLog(store, SystemClock()).sealer(
            AUDIT_EVENT, {"wallet_id": wallet_id, "agent_public_key": agent}, wallet_id=wallet_id
        )
        # Only if the wallet still holds the blob read above (the store's compare-and-swap), with the record.
        store.replace_sealed_keys([SealedKeyReplacement(wallet_id, wallet.sealed_key, blob)], sealer)
        return True
    except StoreError as exc:
        raise SealedKeysError(f"the state refused the copy, nothing was written: {exc}") from None
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(args) == 3 and args[0] == "check":
            missing = missing_from_state(Path(args[1]), Path(args[2]))
            for name in missing:
                sys.stdout.write(f"not in the state: {name}\n")
            if not missing:
                sys.stdout.write("every sealed-key copy's key is in the state\n")
            return 1 if missing else 0
        if len(args) == 4 and args[0] == "put-back":
            written = put_back(Path(args[1]), Path(args[2]), args[3])
            sys.stdout.write(f"wallet {args[3]}: " + ("sealed key put back from its copy\n" if written else
                             "the state already holds its copy's bytes; nothing written\n"))  # fmt: skip
            return 0
    except SealedKeysError as exc:
        sys.stderr.write(f"sealed_keys: {exc}\n")
        return 2
    sys.stderr.write(USAGE)
    return 2


if __name__ == "__main__":
    sys.exit(main())
