"""Agent-key rotation for the SQLite adapter (`parent_proxy.store.agent_keys`; schema version 6).

``agent_key_candidates`` holds at most one candidate per wallet (its primary key); ``retired_agent_keys`` every key
a switch replaced, numbered per wallet in the order of the switches (``seq``), so that "oldest first" does not
depend on the times callers pass in. The writes run inside the caller's ``BEGIN IMMEDIATE`` transaction (the write
lock is held, so what they check cannot change before they write); a refusal raises, and the caller's transaction
is rolled back with everything else of the call.
"""

from __future__ import annotations

import sqlite3

from parent_proxy.errors import NotFound
from parent_proxy.store import agent_keys
from parent_proxy.store.model import AgentKeyCandidate, RetiredAgentKey
from parent_proxy.store.state_changes import SwitchAgentKey

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS agent_key_candidates (
        wallet_id TEXT PRIMARY KEY REFERENCES wallets(wallet_id), agent_pubkey BLOB NOT NULL,
        candidate_pubkey BLOB NOT NULL, sealed_key BLOB NOT NULL, created_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS retired_agent_keys (
        wallet_id TEXT NOT NULL REFERENCES wallets(wallet_id), seq INTEGER NOT NULL, agent_pubkey BLOB NOT NULL,
        sealed_key BLOB NOT NULL, retired_at REAL NOT NULL, PRIMARY KEY (wallet_id, seq))""",
)


def _agent_key(conn: sqlite3.Connection, wallet_id: str) -> tuple[bytes, bytes]:
    """The wallet's agent key and sealed blob; `NotFound` if there is no such wallet."""
    row = conn.execute("SELECT agent_pubkey, sealed_key FROM wallets WHERE wallet_id = ?", (wallet_id,)).fetchone()
    if row is None:
        raise NotFound(f"wallet {wallet_id} not found")
    return bytes(row[0]), bytes(row[1])


def candidate(conn: sqlite3.Connection, wallet_id: str) -> AgentKeyCandidate | None:
    """The wallet's candidate, None if it has none; `NotFound` if there is no such wallet."""
    _agent_key(conn, wallet_id)
    row = conn.execute(
        "SELECT agent_pubkey, candidate_pubkey, sealed_key, created_at FROM agent_key_candidates WHERE wallet_id = ?",
        (wallet_id,),
    ).fetchone()
    return None if row is None else AgentKeyCandidate(wallet_id, row[0], row[1], row[2], row[3])


def retired(conn: sqlite3.Connection, wallet_id: str) -> list[RetiredAgentKey]:
    """The wallet's retired keys in the order of the switches; `NotFound` if there is no such wallet."""
    _agent_key(conn, wallet_id)
    rows = conn.execute(
        "SELECT agent_pubkey, sealed_key, retired_at FROM retired_agent_keys WHERE wallet_id = ? ORDER BY seq",
        (wallet_id,),
    ).fetchall()
    return [RetiredAgentKey(wallet_id, r[0], r[1], r[2]) for r in rows]


def set_candidate_in(conn: sqlite3.Connection, c: AgentKeyCandidate) -> None:
    """Keep ``c`` if the wallet's agent key is ``c.agent_pubkey`` and it has no candidate (`SetAgentKeyCandidate`)."""
    agent, _ = _agent_key(conn, c.wallet_id)
    if agent != c.agent_pubkey:
        raise agent_keys.not_the_agent_key(c.wallet_id)
    if conn.execute("SELECT 1 FROM agent_key_candidates WHERE wallet_id = ?", (c.wallet_id,)).fetchone():
        raise agent_keys.candidate_exists(c.wallet_id)
    conn.execute(
        "INSERT INTO agent_key_candidates VALUES (?, ?, ?, ?, ?)",
        (c.wallet_id, c.agent_pubkey, c.candidate_pubkey, c.sealed_key, c.created_at),
    )


def switch_in(conn: sqlite3.Connection, sw: SwitchAgentKey) -> None:
    """The candidate becomes the agent key, the old key is retired (`SwitchAgentKey`); nothing else of the wallet
    changes."""
    # 1. The wallet exists and its agent key is the one the switch names.
    agent, old_blob = _agent_key(conn, sw.wallet_id)
    if agent != sw.agent_pubkey:
        raise agent_keys.not_the_agent_key(sw.wallet_id)
    # 2. Its candidate is the one the switch names (a candidate's agent key is always the wallet's: only a switch
    #    changes that key, and it removes the candidate).
    row = conn.execute(
        "SELECT candidate_pubkey, sealed_key FROM agent_key_candidates WHERE wallet_id = ?", (sw.wallet_id,)
    ).fetchone()
    if row is None or row[0] != sw.candidate_pubkey:
        raise agent_keys.no_such_candidate(sw.wallet_id)
    # 3. Retire the old key, install the candidate, remove it.
    conn.execute(
        "INSERT INTO retired_agent_keys SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ? FROM retired_agent_keys"
        " WHERE wallet_id = ?",
        (sw.wallet_id, agent, old_blob, sw.now, sw.wallet_id),
    )
    conn.execute(
        "UPDATE wallets SET agent_pubkey = ?, sealed_key = ? WHERE wallet_id = ?",
        (sw.candidate_pubkey, row[1], sw.wallet_id),
    )
    conn.execute("DELETE FROM agent_key_candidates WHERE wallet_id = ?", (sw.wallet_id,))
