"""List the wallets of a WAIaaS SQLite state, read-only, to compare two states (docs/selfhost.md, Restore).

``python -m selfhost.list_wallets STATE.db`` prints one line per wallet, by wallet id: the wallet id, its agent
public key, and its agent-key candidate (``-`` when there is none), base58. Public keys only: no sealed blob, token
or secret is read. The database is opened read-only (``mode=ro``), so its content is never changed; a backup copy
(DELETE journal mode) is left exactly as it is, while reading a WAL-mode state (a live or replaced ``state/``)
makes SQLite's ``-wal``/``-shm`` files beside it, as any reader does, and reads what they hold. Exit 0; 2 (one
line, nothing on stdout) when the file cannot be opened as a WAIaaS state.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from solders.pubkey import Pubkey

QUERY = (
    "SELECT wallets.wallet_id, wallets.agent_pubkey, agent_key_candidates.candidate_pubkey FROM wallets "
    "LEFT JOIN agent_key_candidates USING (wallet_id) ORDER BY wallets.wallet_id"
)


def wallet_lines(database: Path) -> list[str]:
    """``wallet_id agent_public_key candidate_public_key|-`` per wallet; `sqlite3.Error` if it cannot be read."""
    if not database.is_file():
        raise sqlite3.OperationalError("no such file")
    connection = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = connection.execute(QUERY).fetchall()
    finally:
        connection.close()
    return [
        f"{wallet} {Pubkey.from_bytes(agent)} {'-' if candidate is None else Pubkey.from_bytes(candidate)}"
        for wallet, agent, candidate in rows
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m selfhost.list_wallets STATE.db\n")
        return 2
    try:
        lines = wallet_lines(Path(args[0]))
    except sqlite3.Error as exc:
        sys.stderr.write(f"list_wallets: {args[0]}: cannot be read as a WAIaaS state ({exc})\n")
        return 2
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
